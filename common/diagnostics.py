"""Numbers that tell whether a sampler or a model can be trusted.

- chains: autocorrelation, effective sample size (ESS), split R-hat, self-transition rate;
- distributions: total variation, kernel MMD;
- detection: AUROC (scikit-learn's ``roc_auc_score``).

Exact answers for small binary models (every state enumerated, exact log Z) are in ``common.boltzmann``.

Chain arrays are ``(n_chains, n_draws)`` NumPy arrays or tensors (one scalar per draw).
"""

from __future__ import annotations

import math

import numpy as np
import torch


def _as_chains(chains) -> np.ndarray:
    if isinstance(chains, torch.Tensor):
        chains = chains.detach().cpu().numpy()
    chains = np.asarray(chains, dtype=np.float64)
    return chains[None, :] if chains.ndim == 1 else chains


# ---------------------------------------------------------------------------------------------
# Chains
# ---------------------------------------------------------------------------------------------


def autocorrelation(chain, max_lag: int | None = None) -> np.ndarray:
    """Normalised autocorrelation rho_t of one chain (``(n,)``) or each of several (``(m, n)``).

    rho_t = sum_i (x_i - mean)(x_{i+t} - mean) / sum_i (x_i - mean)^2, computed with the FFT.
    """
    x = _as_chains(chain)
    n = x.shape[1]
    centred = x - x.mean(axis=1, keepdims=True)
    size = 2 ** int(np.ceil(np.log2(2 * n)))  # zero-pad so the circular correlation is linear
    spectrum = np.fft.rfft(centred, n=size, axis=1)
    acov = np.fft.irfft(spectrum * np.conj(spectrum), n=size, axis=1)[:, :n]
    rho = acov / np.where(acov[:, :1] > 0, acov[:, :1], 1.0)
    rho = rho[:, : (max_lag or n)]
    return rho[0] if np.ndim(chain) == 1 else rho


def effective_sample_size(chains) -> float:
    """ESS of ``(n_chains, n_draws)`` draws of a scalar (Geyer's initial monotone sequence).

    Follows the multi-chain estimator of Vehtari et al. (2021) without rank normalisation:
    rho_t = 1 - (W - mean_chains(acov_t)) / var_plus,  ESS = m n / (-1 + 2 sum_t P_t),
    where P_t = rho_{2t} + rho_{2t+1} is truncated at its first negative value and made monotone.
    """
    x = _as_chains(chains)
    m, n = x.shape
    if n < 4:
        return float(m * n)
    acov = autocorrelation(x) * x.var(axis=1, keepdims=True)  # (m, n): autocovariances
    within = acov[:, 0].mean() * n / (n - 1)
    var_plus = within * (n - 1) / n + (x.mean(axis=1).var(ddof=1) if m > 1 else 0.0)
    if var_plus <= 0:
        return float(m * n)  # a constant chain: nothing to correlate
    rho = 1.0 - (within - acov.mean(axis=0)) / var_plus
    rho[0] = 1.0
    pair_sums = rho[: 2 * (n // 2)].reshape(-1, 2).sum(axis=1)
    first_negative = np.flatnonzero(pair_sums < 0)
    pair_sums = pair_sums[: first_negative[0] if len(first_negative) else len(pair_sums)]
    pair_sums = np.minimum.accumulate(pair_sums)
    tau = -1.0 + 2.0 * pair_sums.sum()
    return float(m * n / max(tau, 1.0 / np.log10(m * n + 10)))


def split_rhat(chains) -> float:
    """Split R-hat (Gelman et al.): split every chain in two halves, compare within and between.

    R-hat = sqrt(var_plus / W),  var_plus = (n-1)/n W + B/n.  Values above ~1.01-1.05 mean the
    chains have not mixed (they disagree about the distribution).
    """
    x = _as_chains(chains)
    half = x.shape[1] // 2
    if half < 2:
        raise ValueError("split R-hat needs at least 4 draws per chain")
    halves = np.concatenate([x[:, :half], x[:, -half:]], axis=0)  # (2m, half)
    within = halves.var(axis=1, ddof=1).mean()
    between = half * halves.mean(axis=1).var(ddof=1)
    if within == 0:
        return 1.0 if between == 0 else math.inf
    var_plus = (half - 1) / half * within + between / half
    return float(np.sqrt(var_plus / within))


def self_transition_rate(states) -> float:
    """Fraction of steps at which a chain did not move (rejections, or frozen binary units).

    ``states`` is ``(n_steps, B, ...)``; a step counts when the whole state is unchanged.
    A rate near 1 is the red flag of a stagnating chain.
    """
    states = torch.as_tensor(states)
    same = (states[1:] == states[:-1]).flatten(2).all(dim=2)
    return float(same.double().mean())


# ---------------------------------------------------------------------------------------------
# Distances between distributions
# ---------------------------------------------------------------------------------------------


def total_variation(p, q) -> float:
    """TV(p, q) = 1/2 sum |p - q| for two probability vectors over the same states."""
    p, q = np.asarray(p, dtype=np.float64), np.asarray(q, dtype=np.float64)
    return float(0.5 * np.abs(p - q).sum())


def expected_tv_iid(p, n_draws: int) -> float:
    """E[TV(p_hat, p)] for the histogram p_hat of ``n_draws`` i.i.d. draws from p, exactly.

    TV = 1/(2N) sum_s |X_s - N p_s| with X_s ~ Binomial(N, p_s), and de Moivre's mean absolute
    deviation E|X - N p| = 2 nu (1 - p) Binom(nu; N, p), nu = floor(N p) + 1. For large N this is
    about sum_s sqrt(p_s (1 - p_s) / (2 pi N)) <= sqrt((K - 1) / (2 pi N)) for K states: even perfect
    samples sit this far from the truth, so a sampler cannot be judged below it.
    """
    p = torch.as_tensor(np.asarray(p, dtype=np.float64) if not torch.is_tensor(p) else p).double().cpu().ravel()
    p = p[(p > 0) & (p < 1)]  # a state with p = 0 or 1 has no counting noise
    nu = torch.floor(n_draws * p) + 1
    # log Binom(nu; N, p) = log N! - log nu! - log (N - nu)! + nu log p + (N - nu) log(1 - p)
    log_pmf = (math.lgamma(n_draws + 1) - torch.lgamma(nu + 1) - torch.lgamma(n_draws - nu + 1)
               + nu * torch.log(p) + (n_draws - nu) * torch.log1p(-p))
    mean_abs_dev = 2 * nu * (1 - p) * torch.exp(log_pmf)  # E|X_s - N p_s|
    return float(mean_abs_dev.sum() / (2 * n_draws))


def median_bandwidth(x: torch.Tensor, y: torch.Tensor) -> float:
    """The median pairwise distance in the pooled sample: a standard RBF bandwidth."""
    pooled = torch.cat([x, y]).double()
    distances = torch.cdist(pooled, pooled)
    return float(distances[distances > 0].median())


def mmd_rbf(x: torch.Tensor, y: torch.Tensor, bandwidth: float | None = None) -> float:
    """Unbiased estimate of MMD^2 with k(a, b) = exp(-|a - b|^2 / (2 l^2)).

    MMD^2 = E k(x, x') + E k(y, y') - 2 E k(x, y); zero iff the distributions match (the RBF
    kernel is characteristic). The unbiased estimate can be slightly negative when they do.
    """
    x, y = x.double().flatten(1), y.double().flatten(1)
    length = bandwidth or median_bandwidth(x, y)

    def kernel(a, b):
        return torch.exp(-torch.cdist(a, b) ** 2 / (2 * length**2))

    n, m = len(x), len(y)
    k_xx, k_yy, k_xy = kernel(x, x), kernel(y, y), kernel(x, y)
    term_xx = (k_xx.sum() - k_xx.diagonal().sum()) / (n * (n - 1))
    term_yy = (k_yy.sum() - k_yy.diagonal().sum()) / (m * (m - 1))
    return float(term_xx + term_yy - 2 * k_xy.mean())


# ---------------------------------------------------------------------------------------------
# Detection
# ---------------------------------------------------------------------------------------------


def auroc(scores_positive, scores_negative) -> float:
    """Area under the ROC curve for telling positives (label 1) from negatives by score.

    0.5 is chance, 1.0 perfect. scikit-learn's ``roc_auc_score`` does the work.
    """
    from sklearn.metrics import roc_auc_score

    pos = np.asarray(torch.as_tensor(scores_positive).detach().cpu(), dtype=np.float64).ravel()
    neg = np.asarray(torch.as_tensor(scores_negative).detach().cpu(), dtype=np.float64).ravel()
    labels = np.concatenate([np.ones_like(pos), np.zeros_like(neg)])
    return float(roc_auc_score(labels, np.concatenate([pos, neg])))
