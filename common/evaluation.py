"""Quality numbers for neural EBMs that cannot flatter, each next to the reference that gives it meaning.

- 2-D densities: the exact negative log-likelihood, by normalising the learned density on a grid, next to
  its floor, the true entropy of the data; a multi-bandwidth MMD next to its data-vs-fresh-data noise floor
  (one median-heuristic bandwidth is blind to a missing width or wrong mode weights on the 8 Gaussians);
  per-mode weights and the in-mode fraction for mixtures with known centres.
- Images: the Fréchet distance in the features of a small classifier trained inside the lesson, next to its
  floor (test against training images) and two baselines (a fitted Gaussian, noise); the entropy of the
  predicted labels of samples (mode coverage).
- Classifiers and detectors: expected calibration error, FPR at 95 % TPR, PSNR of restorations.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

from common.diagnostics import median_bandwidth, mmd_rbf
from common.nets import MLPClassifier

# ---------------------------------------------------------------------------------------------
# 2-D densities
# ---------------------------------------------------------------------------------------------


def _midpoint_grid(bounds, n: int) -> tuple[torch.Tensor, float]:
    x0, x1, y0, y1 = bounds
    dx, dy = (x1 - x0) / n, (y1 - y0) / n
    xs = x0 + dx * (torch.arange(n, dtype=torch.float64) + 0.5)
    ys = y0 + dy * (torch.arange(n, dtype=torch.float64) + 0.5)
    X, Y = torch.meshgrid(xs, ys, indexing="xy")
    return torch.stack([X.ravel(), Y.ravel()], dim=1), dx * dy


@torch.no_grad()
def grid_log_partition(energy_fn: Callable, bounds, n: int = 300, device=None, chunk: int = 65536) -> float:
    """log Z = log int exp(-E(x)) dx over the box ``bounds``, by the midpoint rule on an n x n grid.

    Mass outside the box is ignored, so choose a box the model's density has left (the toy bounds do).
    """
    points, cell = _midpoint_grid(bounds, n)
    log_terms = []
    for block in points.split(chunk):
        energy = energy_fn(block.float().to(device) if device is not None else block.float())
        log_terms.append(torch.logsumexp(-energy.double().cpu(), dim=0))
    return float(torch.logsumexp(torch.stack(log_terms), dim=0)) + math.log(cell)


@torch.no_grad()
def grid_nll(energy_fn: Callable, x: torch.Tensor, bounds, n: int = 300, device=None) -> float:
    """The exact NLL of the model exp(-E)/Z on points x, in nats per point: mean E(x) + log Z."""
    energy = energy_fn(x.to(device) if device is not None else x)
    return float(energy.double().mean()) + grid_log_partition(energy_fn, bounds, n, device)


@torch.no_grad()
def nll_floor(dataset, n: int = 20000, generator: torch.Generator | None = None) -> tuple[float, float]:
    """The floor no model can beat: the entropy H(p) = -E_p log p(x), with its Monte-Carlo standard error."""
    log_p = dataset.log_density(dataset.sample(n, generator)).double()
    return float(-log_p.mean()), float(log_p.std() / math.sqrt(n))


# Fractions of the median pairwise distance: the median alone (about 5.7 on the 8 Gaussians) is wider than the
# ring, so it cannot see modes; 1/16 of it (about 0.36) is near a mode's own width (std 0.5). The test file
# tests/test_metrics_can_fail.py shows the sum rejecting a missing mode, a ring, 2:1 weights and too-wide modes.
MMD_SCALES = (1 / 16, 1 / 4, 1.0)


def mmd_bandwidths(reference: torch.Tensor, scales=MMD_SCALES) -> tuple[float, ...]:
    """RBF bandwidths for ``mmd_multiscale``: the reference sample's median pairwise distance times ``scales``."""
    median = median_bandwidth(reference[:1000], reference[:1000])
    return tuple(median * s for s in scales)


def mmd_multiscale(x: torch.Tensor, y: torch.Tensor, bandwidths) -> float:
    """MMD^2 with the kernel sum_l exp(-|a - b|^2 / (2 l^2)) over several bandwidths l (unbiased estimate).

    A sum of characteristic kernels is characteristic; the small bandwidths see mode widths and weights, the
    large one the global layout. Pass the same ``bandwidths`` (``mmd_bandwidths(data)``) to the floor.
    """
    return float(sum(mmd_rbf(x, y, length) for length in bandwidths))


def mmd_noise_floor(draw_fn: Callable[[int], torch.Tensor], n: int, repeats: int = 10,
                    bandwidth=None) -> float:
    """RMS of MMD^2(data, fresh data) over ``repeats`` pairs of n draws: the value a perfect sampler gets.

    ``bandwidth`` is one length, a tuple of lengths (``mmd_multiscale``), or None (the median heuristic).
    """
    def mmd(a, b):
        return mmd_multiscale(a, b, bandwidth) if isinstance(bandwidth, (tuple, list)) else mmd_rbf(a, b, bandwidth)

    values = [mmd(draw_fn(n), draw_fn(n)) for _ in range(repeats)]
    return float(np.sqrt(np.mean(np.square(values))))


def mode_weights(samples: torch.Tensor, centres: torch.Tensor, radius: float) -> tuple[np.ndarray, float]:
    """Per-mode weights of samples by nearest-centre assignment, counting only points within ``radius``.

    Returns (weights over the modes, summing to 1, with half a count added to each so an empty mode gives a
    finite KL; the fraction of all samples that lie within ``radius`` of their nearest centre). With ``radius``
    one standard deviation of a mode, a uniform ring through the centres scores a low in-mode fraction and a
    missing or half-weight mode shows in the weights -- unlike "within 3 std", which a ring passes.
    """
    distances = torch.cdist(samples.double(), centres.double())  # (N, K)
    nearest, which = distances.min(dim=1)
    inside = nearest <= radius
    counts = np.bincount(which[inside].numpy(), minlength=len(centres)).astype(np.float64)
    weights = (counts + 0.5) / (counts.sum() + 0.5 * len(centres))
    return weights, float(inside.double().mean())


def mode_kl_threshold(n_inside: int, n_modes: int, level: float = 0.999) -> float:
    """The KL(true || estimated weights) that correct samples stay under with probability ``level``.

    For counts from the true weights, 2 n KL is the G statistic, chi-squared with K - 1 degrees of freedom
    for large n; so KL <= chi2_{K-1}(level) / (2 n). A claim "the mode weights are right" uses this line.
    """
    from scipy.stats import chi2

    return float(chi2.ppf(level, n_modes - 1) / (2 * max(n_inside, 1)))


def kl_weights(p: np.ndarray, q: np.ndarray) -> float:
    """KL(p || q) = sum p log(p / q) between two discrete weight vectors (nats); 0 iff they are equal."""
    p, q = np.asarray(p, dtype=np.float64), np.asarray(q, dtype=np.float64)
    used = p > 0
    return float((p[used] * np.log(p[used] / q[used])).sum())


def nearest_hamming(v: torch.Tensor, reference: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    """Hamming distance from each binary row of ``v`` to its nearest row of ``reference``, shape (B,)."""
    def part_min(part):  # |v - x|_1 = sum v + sum x - 2 v.x for 0/1 vectors: one matrix product
        return (part.sum(1, keepdim=True) + reference.sum(1) - 2 * part @ reference.T).min(1).values
    return torch.cat([part_min(part) for part in v.split(chunk)])


def far_fraction(v: torch.Tensor, reference: torch.Tensor, threshold: float) -> float:
    """Fraction of binary images farther than ``threshold`` pixels (Hamming) from every reference image.

    Lesson 05 sets ``threshold`` to a high quantile of the test images' own distances to the training set,
    so real held-out images score 1 - quantile; tests/test_rbm_metrics.py shows it flags 5 % of noise images.
    """
    return float((nearest_hamming(v, reference) > threshold).double().mean())


def effective_rank(features: torch.Tensor) -> float:
    """exp(entropy of the normalised singular values) of centred features (N, D) (Roy & Vetterli 2007).

    D when every direction carries the same spread, 1 when one does; blind to the overall scale, so an
    embedding that only shrank keeps its effective rank while one that lost directions does not.
    """
    s = torch.linalg.svdvals(features - features.mean(0))
    p = s / s.sum()
    return float(torch.exp(-(p * torch.log(p + 1e-12)).sum()))


# ---------------------------------------------------------------------------------------------
# Fréchet distance in the features of a classifier trained in the lesson
# ---------------------------------------------------------------------------------------------


def frechet_distance_from_moments(mu1, cov1, mu2, cov2) -> float:
    """d^2 = |mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^{1/2}): the 2-Wasserstein distance of two Gaussians."""
    from scipy import linalg

    mu1, mu2 = np.asarray(mu1, dtype=np.float64), np.asarray(mu2, dtype=np.float64)
    cov1, cov2 = np.atleast_2d(cov1).astype(np.float64), np.atleast_2d(cov2).astype(np.float64)
    root = linalg.sqrtm(cov1 @ cov2)
    root = root.real  # tiny imaginary parts come from round-off in sqrtm
    return float(((mu1 - mu2) ** 2).sum() + np.trace(cov1 + cov2 - 2 * root))


def frechet_distance(features_a, features_b) -> float:
    """The Fréchet distance between the Gaussians fitted to two feature sets ``(N, F)`` (FID's formula)."""
    a = np.asarray(torch.as_tensor(features_a).detach().cpu(), dtype=np.float64)
    b = np.asarray(torch.as_tensor(features_b).detach().cpu(), dtype=np.float64)
    return frechet_distance_from_moments(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))


def train_feature_classifier(x_train, y_train, x_test, y_test, *, hidden=(128, 64), epochs: int = 30,
                             lr: float = 2e-3, batch_size: int = 128, generator: torch.Generator | None = None
                             ) -> tuple[MLPClassifier, float]:
    """A small MLP classifier of the images (plain cross-entropy, Adam); returns it (in eval mode) and its test
    accuracy. Its last hidden layer is the feature space of the Fréchet distance."""
    n_classes = int(torch.as_tensor(y_train).max()) + 1
    model = MLPClassifier(x_train[0].numel(), n_classes, hidden)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(epochs):
        order = torch.randperm(len(x_train), generator=generator)
        for batch in order.split(batch_size):
            loss = torch.nn.functional.cross_entropy(model(x_train[batch]), y_train[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval()
    with torch.no_grad():
        accuracy = float((model(x_test).argmax(1) == y_test).float().mean())
    return model, accuracy


def gaussian_samples_like(x: torch.Tensor, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """n draws from the full-covariance Gaussian fitted to x (any shape (N, ...)): a baseline any model must beat."""
    flat = x.flatten(1).double()
    mean = flat.mean(0)
    cov = torch.cov(flat.T) + 1e-6 * torch.eye(flat.shape[1], dtype=torch.float64)  # jitter: constant pixels
    chol = torch.linalg.cholesky(cov)
    z = torch.randn(n, flat.shape[1], generator=generator, dtype=torch.float64)
    return (mean + z @ chol.T).float().reshape(n, *x.shape[1:])


class FrechetScorer:
    """The Fréchet distance of samples to the training images, in a classifier's features, with its references.

    ``floor``: test images against training images (what a perfect sampler would score, given the sample size);
    ``gaussian_baseline``: a full-covariance Gaussian fitted to the training images; ``noise_baseline``: uniform
    noise in [-1, 1] (where the chains of an image EBM start).
    """

    def __init__(self, classifier: MLPClassifier, x_train: torch.Tensor, x_test: torch.Tensor):
        self.classifier, self.x_train, self.x_test = classifier.eval(), x_train, x_test
        self.train_features = self.features(x_train)
        self.floor = self.score(x_test)

    @torch.no_grad()
    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier.features(x.float())

    def score(self, samples: torch.Tensor) -> float:
        return frechet_distance(self.features(samples), self.train_features)

    def gaussian_baseline(self, generator: torch.Generator | None = None) -> float:
        return self.score(gaussian_samples_like(self.x_train, len(self.x_test), generator).clamp(-1, 1))

    def noise_baseline(self, generator: torch.Generator | None = None) -> float:
        noise = 2 * torch.rand(self.x_test.shape, generator=generator) - 1
        return self.score(noise)

    @torch.no_grad()
    def label_entropy(self, samples: torch.Tensor) -> float:
        """Entropy (nats) of the samples' predicted-label histogram: ln(n_classes) when all classes are equal."""
        labels = self.classifier(samples.float()).argmax(1)
        freq = torch.bincount(labels, minlength=self.classifier.head.out_features).double() / len(labels)
        freq = freq[freq > 0]
        return float(-(freq * freq.log()).sum())


# ---------------------------------------------------------------------------------------------
# Classifiers and detectors
# ---------------------------------------------------------------------------------------------


def reliability_bins(probs, labels, n_bins: int = 15) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per confidence bin (equal width on [0, 1]): mean confidence, accuracy and count (empty bins: NaN, 0)."""
    probs = np.asarray(torch.as_tensor(probs).detach().cpu(), dtype=np.float64)
    labels = np.asarray(torch.as_tensor(labels).detach().cpu())
    confidence, predicted = probs.max(1), probs.argmax(1)
    correct = (predicted == labels).astype(np.float64)
    which = np.minimum((confidence * n_bins).astype(int), n_bins - 1)  # confidence 1.0 goes to the top bin
    count = np.bincount(which, minlength=n_bins).astype(np.float64)
    with np.errstate(invalid="ignore"):
        mean_conf = np.bincount(which, confidence, minlength=n_bins) / count
        accuracy = np.bincount(which, correct, minlength=n_bins) / count
    return mean_conf, accuracy, count


def expected_calibration_error(probs, labels, n_bins: int = 15) -> float:
    """ECE = sum_b (n_b / N) |accuracy_b - confidence_b| over equal-width confidence bins (Guo et al. 2017)."""
    mean_conf, accuracy, count = reliability_bins(probs, labels, n_bins)
    used = count > 0
    return float((count[used] / count.sum() * np.abs(accuracy[used] - mean_conf[used])).sum())


def calibrated_ece_quantile(probs, n_bins: int = 15, draws: int = 200, level: float = 0.95,
                            generator: torch.Generator | None = None) -> float:
    """The ECE a perfectly calibrated model with these confidences stays under with probability ``level``.

    ECE is biased upwards at finite n (each bin's accuracy is a noisy proportion), so 0 is not the line to
    compare with: draw the labels from ``probs`` itself (calibrated by construction) ``draws`` times and take
    the ``level`` quantile of the ECEs. An ECE above it is miscalibration, not sampling noise.
    """
    probs = torch.as_tensor(probs, dtype=torch.float64)
    eces = [expected_calibration_error(probs, torch.multinomial(probs, 1, generator=generator)[:, 0], n_bins)
            for _ in range(draws)]
    return float(np.quantile(eces, level))


def fpr_at_tpr(scores_in, scores_out, tpr: float = 0.95) -> float:
    """False-positive rate on out-of-distribution data at the threshold that keeps ``tpr`` of the in-distribution.

    In-distribution is the positive class, with higher scores; FPR95 is the usual OOD number (lower is better).
    """
    scores_in = np.asarray(torch.as_tensor(scores_in).detach().cpu(), dtype=np.float64).ravel()
    scores_out = np.asarray(torch.as_tensor(scores_out).detach().cpu(), dtype=np.float64).ravel()
    # the threshold: the (1 - tpr) quantile of the in-distribution scores, so that >= tpr of them lie at or above it
    threshold = np.sort(scores_in)[int(math.floor((1 - tpr) * len(scores_in)))]
    return float((scores_out >= threshold).mean())


def psnr(x, reference, data_range: float = 2.0) -> float:
    """Peak signal-to-noise ratio 10 log10(range^2 / MSE) in dB (images in [-1, 1] have range 2)."""
    x, reference = torch.as_tensor(x).double(), torch.as_tensor(reference).double()
    mse = float(((x - reference) ** 2).mean())
    return float("inf") if mse == 0 else 10 * math.log10(data_range**2 / mse)


def kde_log_density(x, reference, bandwidth: float) -> np.ndarray:
    """Exact log of an isotropic Gaussian kernel density on the rows of ``reference`` (N, D), at the rows of x.

    log p(x) = logsumexp_j -|x - x_j|^2 / (2 b^2) - log N - (D/2) log(2 pi b^2), in float64 over every reference
    point (scikit-learn's tree-based KernelDensity prunes with bounds that can be off by tens of nats far from the
    data in 64 dimensions; for a few thousand points the exact sum is cheap).
    """
    x = torch.as_tensor(x).detach().double().flatten(1).cpu()
    reference = torch.as_tensor(reference).detach().double().flatten(1).cpu()
    d2 = torch.cdist(x, reference) ** 2
    dim = reference.shape[1]
    log_norm = math.log(len(reference)) + 0.5 * dim * math.log(2 * math.pi * bandwidth**2)
    return (torch.logsumexp(-d2 / (2 * bandwidth**2), 1) - log_norm).numpy()
