"""Per-epoch CPU time of CD-1 here (common.rbm.train_epoch) against scikit-learn's BernoulliRBM.

Both train on the same binary float32 images with the same hidden size, batch size and thread count
(torch.set_num_threads for us, threadpoolctl for NumPy's BLAS); we time the updates alone
(train_epoch(monitor=False)). Prints the ratio ours / sklearn's CPU seconds per epoch (<= 1.0: level or faster).
Not a test: timings depend on the machine and its load; take the median of --repeats epochs.

    python scripts/bench_rbm.py                                   # 28x28 if MNIST is found, else 8x8 digits
    python scripts/bench_rbm.py --dataset mnist --data-dir /work/data/fmnist --n-train 10000
"""

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.neural_network import BernoulliRBM  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

from common.datasets import load_images  # noqa: E402
from common.rbm import RBM, data_visible_bias, train_epoch  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="auto", choices=("auto", "digits", "mnist"))
    parser.add_argument("--data-dir", default=None, help="folder that holds MNIST/raw/")
    parser.add_argument("--n-train", type=int, default=10000, help="training images (the issue's scale: 10,000)")
    parser.add_argument("--hidden", type=int, default=500, help="hidden units")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3, help="epochs timed for each library (median reported)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = load_images(args.dataset, root=args.data_dir, binary=True, max_train=args.n_train)
    x = data.x_train.float().contiguous()
    x_np = x.numpy().astype(np.float32)
    print(f"{data.name}: {len(x)} images of {x.shape[1]} pixels, {args.hidden} hidden, batch {args.batch_size}, "
          f"{args.threads} thread(s), float32, CD-1 (ours) / PCD-1 (BernoulliRBM)")

    g = torch.Generator().manual_seed(0)
    rbm = RBM(x.shape[1], args.hidden, 0.01, data_visible_bias(x), generator=g)
    velocity, ours = None, []
    for _ in range(args.repeats):
        start = time.process_time()
        velocity, _, _ = train_epoch(rbm, x, lr=0.05, k=1, batch_size=args.batch_size, momentum=0.5,
                                     velocity=velocity, generator=g, monitor=False)
        ours.append(time.process_time() - start)

    theirs = []
    sk = BernoulliRBM(n_components=args.hidden, learning_rate=0.05, batch_size=args.batch_size, n_iter=1,
                      random_state=0)
    with warnings.catch_warnings(), threadpool_limits(args.threads):
        warnings.simplefilter("ignore", ConvergenceWarning)
        for _ in range(args.repeats):
            start = time.process_time()
            sk.fit(x_np)  # n_iter=1: one epoch (fit re-initialises, the cost per epoch is the same)
            theirs.append(time.process_time() - start)
    ours_s, theirs_s = statistics.median(ours), statistics.median(theirs)
    print(f"CPU seconds per epoch (median of {args.repeats}): ours {ours_s:.3f}  sklearn {theirs_s:.3f}")
    print(f"ratio ours / sklearn = {ours_s / theirs_s:.2f}   (target <= 1.0)")


if __name__ == "__main__":
    main()
