"""common/rbm.py against independent answers, and the MNIST IDX loader (offline).

Every reference below is computed here from the definition E(v, h) = -b.v - c.h - v^T W h by
enumerating (v, h) pairs with itertools and NumPy, never with the functions under test. Monte
Carlo tests use fixed seeds and tolerances derived from the standard error in a comment.
"""

import itertools
import json
import math
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from common.datasets import load_images
from common.rbm import RBM, pseudo_log_likelihood, train_epoch

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------------------------
# Independent references by brute force (NumPy, float64)
# ---------------------------------------------------------------------------------------------


def random_rbm(n_v, n_h, scale, seed):
    rng = np.random.default_rng(seed)
    W, b, c = rng.normal(0, scale, (n_v, n_h)), rng.normal(0, 0.5, n_v), rng.normal(0, 0.5, n_h)
    return RBM.from_tensors(torch.tensor(W), torch.tensor(b), torch.tensor(c)), (W, b, c)


def states(n):
    return np.array(list(itertools.product((0.0, 1.0), repeat=n)))


def logsumexp(x, axis=None):
    top = np.max(x, axis=axis, keepdims=True)
    return np.squeeze(top, axis=axis) + np.log(np.sum(np.exp(x - top), axis=axis))


def neg_energy_table(W, b, c):
    """-E(v, h) for every visible state (rows) and hidden state (columns)."""
    V, H = states(len(b)), states(len(c))
    table = np.empty((len(V), len(H)))
    for i, v in enumerate(V):
        for j, h in enumerate(H):
            table[i, j] = b @ v + c @ h + v @ W @ h
    return V, H, table


def brute_log_z(W, b, c):
    return logsumexp(neg_energy_table(W, b, c)[2].ravel())


def brute_mean_loglik(params, data):
    """(1/N) sum_n log p(v_n), with log p(v) = logsumexp_h(-E(v, h)) - log Z, all by enumeration."""
    W, b, c = params
    V, _, table = neg_energy_table(W, b, c)
    log_pv = logsumexp(table, axis=1) - logsumexp(table.ravel())
    index = {tuple(v): i for i, v in enumerate(V)}
    return float(np.mean([log_pv[index[tuple(v)]] for v in data]))


# ---------------------------------------------------------------------------------------------
# Free energy, partition function, likelihood
# ---------------------------------------------------------------------------------------------


def test_free_energy_matches_sum_over_hidden_states():
    rbm, (W, b, c) = random_rbm(5, 4, 1.0, seed=0)
    V, _, table = neg_energy_table(W, b, c)
    expected = -logsumexp(table, axis=1)  # F(v) = -log sum_h exp(-E(v, h))
    got = rbm.free_energy(torch.tensor(V)).numpy()
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)


def test_conditionals_match_brute_force():
    rbm, (W, b, c) = random_rbm(4, 3, 1.0, seed=1)
    V, H, table = neg_energy_table(W, b, c)
    p_h_given_v = np.exp(table - logsumexp(table, axis=1)[:, None])  # rows sum to 1
    np.testing.assert_allclose(rbm.hidden_probs(torch.tensor(V)).numpy(), p_h_given_v @ H, atol=1e-12)
    p_v_given_h = np.exp(table - logsumexp(table, axis=0)[None, :])  # columns sum to 1
    np.testing.assert_allclose(rbm.visible_probs(torch.tensor(H)).numpy(), (V.T @ p_v_given_h).T, atol=1e-12)


def test_log_partition_matches_brute_force_over_v_and_h():
    rbm, params = random_rbm(5, 3, 1.5, seed=2)
    assert abs(rbm.log_partition() - brute_log_z(*params)) < 1e-10


@pytest.mark.parametrize("shape", [(7, 3), (3, 7)])
def test_log_partition_enumerating_either_layer(shape):
    """(7, 3) enumerates the hidden layer, (3, 7) the visible one; both must match brute force,
    and the transposed RBM (W^T, c, b) has the same Z, so the two paths must agree with each other."""
    rbm, (W, b, c) = random_rbm(*shape, 1.0, seed=3)
    transposed = RBM.from_tensors(torch.tensor(W.T.copy()), torch.tensor(c), torch.tensor(b))
    exact = brute_log_z(W, b, c)
    assert abs(rbm.log_partition() - exact) < 1e-10
    assert abs(transposed.log_partition() - exact) < 1e-10


def test_log_partition_hidden_path_with_many_visible_units():
    """784 visible x 6 hidden: log Z = logsumexp_h [c.h + sum_i log(1 + exp(b_i + W_i.h))], summed here
    over the 64 hidden states with NumPy (the sum over v factorises over pixels exactly)."""
    rng = np.random.default_rng(4)
    W, b, c = rng.normal(0, 0.1, (784, 6)), rng.normal(-1, 1, 784), rng.normal(0, 1, 6)
    H = states(6)
    terms = H @ c + np.logaddexp(0, H @ W.T + b).sum(1)
    rbm = RBM.from_tensors(torch.tensor(W), torch.tensor(b), torch.tensor(c))
    assert abs(rbm.log_partition() - logsumexp(terms)) < 1e-9


def test_log_likelihood_is_normalised():
    rbm, params = random_rbm(6, 4, 1.0, seed=5)
    V = torch.tensor(states(6))
    assert abs(float(torch.logsumexp(rbm.log_likelihood(V), 0))) < 1e-10  # sum_v p(v) = 1
    assert abs(float(rbm.log_likelihood(V[:1])[0]) - brute_mean_loglik(params, V[:1].numpy())) < 1e-10


def test_ais_within_a_tenth_of_a_nat_of_exact_log_z():
    """AIS with 500 chains and 1,000 temperatures on a 12 x 6 RBM with strong weights.

    Tolerance: the target accuracy 0.1 nats. We also require the estimator's own +-3 SE half-width to
    be below 0.1, so the 0.1 is a bound the estimator claims for itself, not a tuned number.
    """
    rbm, params = random_rbm(12, 6, 1.0, seed=6)
    exact = brute_log_z(*params)
    base = torch.tensor(params[1]).sigmoid().clamp(0.05, 0.95)  # any fixed base works; a data-like one is typical
    generator = torch.Generator().manual_seed(0)
    estimate, half_width = rbm.ais_log_partition(500, 1000, torch.log(base / (1 - base)), generator=generator)
    assert half_width < 0.1
    assert abs(estimate - exact) < 0.1, (estimate, exact, half_width)


# ---------------------------------------------------------------------------------------------
# Gradients
# ---------------------------------------------------------------------------------------------


def small_data(n_v, n, seed):
    return np.random.default_rng(seed).integers(0, 2, (n, n_v)).astype(float)


def test_exact_gradient_matches_finite_differences():
    """Central differences of the brute-force mean log-likelihood: error O(eps^2) ~ 1e-10 (plus
    rounding ~1e-16 / eps ~ 1e-10), so 1e-6 is a loose, safe bound for O(1) gradients."""
    rbm, (W, b, c) = random_rbm(5, 3, 1.0, seed=7)
    data = small_data(5, 12, seed=8)
    grads = rbm.exact_gradient(torch.tensor(data))
    eps = 1e-5
    for name, array in (("W", W), ("b", b), ("c", c)):
        numeric = np.zeros_like(array)
        for index in np.ndindex(array.shape):
            saved = array[index]
            array[index] = saved + eps
            up = brute_mean_loglik((W, b, c), data)
            array[index] = saved - eps
            down = brute_mean_loglik((W, b, c), data)
            array[index] = saved
            numeric[index] = (up - down) / (2 * eps)
        np.testing.assert_allclose(grads[name].numpy(), numeric, rtol=0, atol=1e-6, err_msg=name)


def test_cd_with_long_chains_approaches_exact_gradient():
    """CD-k with k = 50 from N = 20,000 independent chains: the data terms are identical, and the
    model term is a mean of N (nearly) independent draws of g(v) = v p(h | v)^T (and v, p(h | v)).

    The standard error of each component is sd_model(g) / sqrt(N), with sd_model computed exactly by
    enumeration; we allow 5 SE per component (two-sided p ~ 6e-7 each, ~2e-5 over the 32 components).
    The k-step bias is far below that: this RBM's weights are moderate, so the chain forgets its
    start within a few steps and 50 steps leave no measurable trace.
    """
    rbm, (W, b, c) = random_rbm(6, 4, 0.5, seed=9)
    n_chains = 20_000
    data = torch.tensor(small_data(6, n_chains, seed=10))
    cd, _ = rbm.cd_gradient(data, k=50, generator=torch.Generator().manual_seed(1))
    exact = rbm.exact_gradient(data)
    V, _, table = neg_energy_table(W, b, c)
    p_v = np.exp(logsumexp(table, axis=1) - logsumexp(table.ravel()))  # exact p(v)
    p_h = 1 / (1 + np.exp(-(V @ W + c)))  # p(h_j = 1 | v) for every visible state
    samples = {"W": np.einsum("si,sj->sij", V, p_h), "b": V, "c": p_h}
    for name, g in samples.items():
        mean = np.tensordot(p_v, g, axes=1)
        sd = np.sqrt(np.tensordot(p_v, g**2, axes=1) - mean**2)
        se = sd / math.sqrt(n_chains)
        error = np.abs(cd[name].numpy() - exact[name].numpy())
        assert np.all(error < 5 * se + 1e-12), (name, error.max(), se.max())


def test_pseudo_log_likelihood_expectation_matches_enumeration():
    """For a fixed v, PLL(v) = n_v log p(v_i | v_-i) with i uniform, so E_i[PLL(v)] = sum_i log p(v_i | v_-i),
    where p(v_i | v_-i) = p(v) / (p(v) + p(v with bit i flipped)) comes from the brute-force p(v).

    We average M = 20,000 copies of each v; the standard error is sd_i(n_v log p(v_i | v_-i)) / sqrt(M)
    (sd over the uniform choice of i, computed exactly); tolerance 5 SE.
    """
    rbm, (W, b, c) = random_rbm(6, 4, 1.0, seed=11)
    V, _, table = neg_energy_table(W, b, c)
    log_pv = logsumexp(table, axis=1)  # unnormalised log p(v); Z cancels in the conditional
    index = {tuple(v): i for i, v in enumerate(V)}
    generator = torch.Generator().manual_seed(2)
    copies = 20_000
    for v in V[[0, 13, 42, 63]]:
        terms = []
        for i in range(6):
            flipped = v.copy()
            flipped[i] = 1 - flipped[i]
            own, other = log_pv[index[tuple(v)]], log_pv[index[tuple(flipped)]]
            terms.append(6 * (own - np.logaddexp(own, other)))  # n_v log p(v_i | v_-i)
        terms = np.array(terms)
        estimate = float(pseudo_log_likelihood(rbm, torch.tensor(v).repeat(copies, 1), generator).mean())
        se = terms.std() / math.sqrt(copies)
        assert abs(estimate - terms.mean()) < 5 * se + 1e-12, (v, estimate, terms.mean(), se)


# ---------------------------------------------------------------------------------------------
# MNIST through torchvision, from IDX files written here (nothing is downloaded)
# ---------------------------------------------------------------------------------------------


def write_idx(path: Path, array: np.ndarray, magic: int) -> None:
    """IDX format: big-endian int32 magic (2051 images, 2049 labels), big-endian int32 dims, uint8 data."""
    with open(path, "wb") as handle:
        handle.write(struct.pack(">i", magic))
        handle.write(struct.pack(f">{array.ndim}i", *array.shape))
        handle.write(array.astype(np.uint8).tobytes())


def write_tiny_mnist(root: Path, n_train=60, n_test=20, seed=0):
    """Digit-like 28x28 images: a random template per class plus noise; labels cycle 0..9."""
    rng = np.random.default_rng(seed)
    templates = (rng.random((10, 28, 28)) < 0.2) * 255
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    arrays = {}
    for split, n in (("train", n_train), ("t10k", n_test)):
        labels = np.arange(n) % 10
        noise = rng.integers(0, 60, (n, 28, 28))
        images = np.clip(templates[labels] + noise * np.where(templates[labels] > 0, -1, 1), 0, 255)
        write_idx(raw / f"{split}-images-idx3-ubyte", images, 2051)
        write_idx(raw / f"{split}-labels-idx1-ubyte", labels, 2049)
        arrays[split] = (images.astype(np.uint8), labels)
    return arrays


def test_load_images_reads_mnist_idx_files(tmp_path):
    arrays = write_tiny_mnist(tmp_path)
    data = load_images("mnist", root=tmp_path, binary=False)
    assert data.name == "mnist" and data.shape == (28, 28)
    assert data.x_train.shape == (60, 784) and data.x_test.shape == (20, 784)
    np.testing.assert_allclose(data.x_train.numpy(), arrays["train"][0].reshape(60, 784) / 255.0, atol=1e-7)
    np.testing.assert_array_equal(data.y_test.numpy(), arrays["t10k"][1])
    binary = load_images("mnist", root=tmp_path, binary=True)
    np.testing.assert_array_equal(binary.x_test.numpy(), (arrays["t10k"][0].reshape(20, 784) > 127.5).astype(float))


def test_load_images_mnist_missing_raises(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_images("mnist", root=tmp_path / "empty")


@pytest.mark.lesson
def test_lesson_runs_on_tiny_mnist_and_saves_a_rescorable_model(tmp_path):
    """The lesson's --dataset mnist path end to end on the IDX files above (--quick, --data-dir)."""
    write_tiny_mnist(tmp_path / "data")
    outdir = tmp_path / "out"
    env = dict(os.environ, MPLBACKEND="Agg")
    result = subprocess.run(
        [sys.executable, str(ROOT / "04_restricted_boltzmann_machines.py"), "--quick", "--dataset", "mnist",
         "--data-dir", str(tmp_path / "data"), "--outdir", str(outdir)],
        capture_output=True, text=True, timeout=300, cwd=ROOT, env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((outdir / "metrics.json").read_text())
    assert metrics["dataset"] == "mnist" and metrics["n_visible"] == 784
    saved = torch.load(outdir / "rbm_small.pt")
    assert saved["x_test"].shape == (20, 784)
    rbm = RBM.from_tensors(saved["W"], saved["b"], saved["c"])
    rescored = float(rbm.log_likelihood(saved["x_test"]).mean())
    assert abs(rescored - metrics["test_loglik_exact"]) < 1e-4


def test_train_epoch_momentum_and_weight_decay_match_a_hand_computation():
    # velocity <- momentum * velocity + lr * (grad - weight_decay * W)   (decay on W only);  theta <- theta + velocity
    torch.manual_seed(0)
    x = (torch.rand(6, 5, dtype=torch.float64) < 0.5).double()
    rbm = RBM(5, 3, weight_scale=0.3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    rbm.b, rbm.c = 0.2 * torch.randn(5, dtype=torch.float64), 0.2 * torch.randn(3, dtype=torch.float64)
    start = {name: t.clone() for name, t in zip("Wbc", rbm.parameters())}
    old_velocity = {name: 0.1 * torch.randn_like(t) for name, t in start.items()}
    lr, momentum, decay = 0.05, 0.7, 0.01
    # the same random numbers by hand: the epoch's permutation, then CD-1 on the one batch
    hand = RBM.from_tensors(start["W"], start["b"], start["c"])
    replay = torch.Generator().manual_seed(7)
    order = torch.randperm(len(x), generator=replay)
    grads, _ = hand.cd_gradient(x[order], 1, None, replay)
    expected = {}
    for name in "Wbc":
        decay_term = decay * start["W"] if name == "W" else 0.0
        expected[name] = momentum * old_velocity[name] + lr * (grads[name] - decay_term)
    velocity, _, _ = train_epoch(rbm, x, lr=lr, k=1, batch_size=len(x), momentum=momentum, weight_decay=decay,
                                 velocity={k: v.clone() for k, v in old_velocity.items()},
                                 generator=torch.Generator().manual_seed(7))
    for name, param in zip("Wbc", rbm.parameters()):
        torch.testing.assert_close(velocity[name], expected[name], rtol=0, atol=1e-14)
        torch.testing.assert_close(param, start[name] + expected[name], rtol=0, atol=1e-14)
