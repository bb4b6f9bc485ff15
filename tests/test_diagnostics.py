"""Diagnostics against closed forms.

- AR(1) chains x_t = rho x_{t-1} + e_t have autocorrelation rho^t and integrated autocorrelation
  time tau = (1 + rho) / (1 - rho), so ESS = N (1 - rho) / (1 + rho);
- MMD^2 between two Gaussians N(mu1, s^2 I), N(mu2, s^2 I) with an RBF kernel of length l has
  the closed form 2 c (1 - exp(-|mu1 - mu2|^2 / (2 (l^2 + 2 s^2)))),  c = (l^2 / (l^2 + 2 s^2))^(d/2);
- independent {0,1} units with biases b have log Z = sum_i log(1 + e^{b_i}).
"""

import math

import numpy as np
import pytest
import torch

from common.diagnostics import (
    auroc,
    autocorrelation,
    effective_sample_size,
    mmd_rbf,
    self_transition_rate,
    split_rhat,
    total_variation,
)


def ar1_chains(rho, n_chains, n_draws, seed):
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal((n_chains, n_draws))
    x = np.empty_like(noise)
    x[:, 0] = noise[:, 0] / math.sqrt(1 - rho**2)  # start in the stationary distribution
    for t in range(1, n_draws):
        x[:, t] = rho * x[:, t - 1] + noise[:, t]
    return x


def test_autocorrelation_of_ar1_is_rho_to_the_lag():
    rho, n = 0.7, 200000
    acf = autocorrelation(ar1_chains(rho, 1, n, seed=0)[0], max_lag=6)
    # standard error of a sample autocorrelation ~ sqrt((1 + rho^2) / (1 - rho^2) / n) (Bartlett)
    se = math.sqrt((1 + rho**2) / (1 - rho**2) / n)
    assert np.allclose(acf, rho ** np.arange(6), atol=5 * se)


def test_ess_of_independent_draws_is_about_n():
    draws = np.random.default_rng(1).standard_normal((8, 5000))
    # tau = 1 + 2 sum of a few noise autocorrelations, each with s.e. 1/sqrt(N) ~ 0.005: 10% is > 5 s.e.
    assert effective_sample_size(draws) == pytest.approx(draws.size, rel=0.10)


def test_ess_of_ar1_matches_the_closed_form():
    rho = 0.9
    chains = ar1_chains(rho, 8, 20000, seed=2)
    expected = chains.size * (1 - rho) / (1 + rho)
    # the truncated sum over ~60 lags has relative s.e. ~ sqrt(2 * 60 * tau / N) ~ 0.04: allow 15%
    assert effective_sample_size(chains) == pytest.approx(expected, rel=0.15)


def test_split_rhat_is_one_for_mixed_chains_and_large_for_stuck_ones():
    rng = np.random.default_rng(3)
    mixed = rng.standard_normal((4, 2000))
    assert abs(split_rhat(mixed) - 1.0) < 0.01
    stuck = mixed + np.array([[0.0], [0.0], [2.0], [2.0]])  # two chains sit in another mode
    # 8 half-chains, four with mean 0 and four with mean 2: their variance (ddof=1) is 8/7, the
    # within variance is 1, so R-hat^2 ~ (n-1)/n + 8/7 -> R-hat ~ 1.464. The sample variances
    # (8000 draws) move this by ~1%; allow 0.03.
    assert split_rhat(stuck) == pytest.approx(math.sqrt(1 + 8 / 7), abs=0.03)


def test_self_transition_rate():
    frozen = torch.ones(50, 4, 3)
    assert self_transition_rate(frozen) == 1.0
    alternating = torch.stack([torch.full((4, 3), float(t % 2)) for t in range(51)])
    assert self_transition_rate(alternating) == 0.0


@pytest.mark.parametrize("shift", [0.0, 1.0, 2.0])
def test_mmd_matches_the_gaussian_closed_form(shift):
    # x ~ N(0, s^2 I), y ~ N(shift e_1, s^2 I), RBF length l: MMD^2 = 2 c (1 - exp(-shift^2 / (2 (l^2 + 2 s^2)))),
    # c = (l^2 / (l^2 + 2 s^2))^(d/2). Tolerance: 4 standard errors of the mean over R replicates.
    d, s, length, n, repeats = 2, 1.0, 1.5, 400, 24
    generator = torch.Generator().manual_seed(4)
    estimates = []
    for _ in range(repeats):
        x = torch.randn(n, d, generator=generator, dtype=torch.float64) * s
        y = torch.randn(n, d, generator=generator, dtype=torch.float64) * s + torch.tensor([shift, 0.0])
        estimates.append(mmd_rbf(x, y, bandwidth=length))
    c = (length**2 / (length**2 + 2 * s**2)) ** (d / 2)
    expected = 2 * c * (1 - math.exp(-(shift**2) / (2 * (length**2 + 2 * s**2))))
    mean, se = float(np.mean(estimates)), float(np.std(estimates, ddof=1) / math.sqrt(repeats))
    assert abs(mean - expected) < 4 * se
    # the biased (V-statistic) estimate sits ~ 2 (1 - c) / n above: the test must be able to tell them apart
    if shift == 0.0:
        assert 4 * se < 2 * (1 - c) / n


def test_mmd_median_bandwidth_separates_equal_from_shifted():
    generator = torch.Generator().manual_seed(5)
    x, y = torch.randn(1000, 2, generator=generator), torch.randn(1000, 2, generator=generator)
    assert abs(mmd_rbf(x, y)) < 0.01 < mmd_rbf(x, y + 1.0)


def test_total_variation_and_auroc_on_hand_examples():
    assert total_variation([0.5, 0.5, 0.0], [0.0, 0.5, 0.5]) == pytest.approx(0.5)
    assert auroc([3.0, 4.0], [1.0, 2.0]) == 1.0
    assert auroc([1.0, 2.0], [3.0, 4.0]) == 0.0
    # pairs (pos, neg): (1,2) lose, (3,2) win -> 1 of 2 -> 0.5
    assert auroc([1.0, 3.0], [2.0]) == 0.5
