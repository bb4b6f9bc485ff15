"""common.sampler_theory against simulation and hand-computed closed forms.

- ULA on E = a x^2/2 reaches the variance 2T/(a(2 - a h)) and MALA keeps T/a, at several a h; the
  sample variance of n independent chains has standard error var * sqrt(2/(n-1)), and each check
  allows 4 of them (a false alarm about once in 16,000);
- the underdamped contraction factor equals the hand-solved eigenvalues of the 2x2 update,
  (tr +- sqrt(tr^2 - 4 det))/2 with tr = 2 - h^2 a - h gamma, det = 1 - h gamma, and matches
  the simulated decay of a noiseless chain;
- the exact IAT formulas match the IAT measured on simulated chains (tolerance from the standard
  error of Geyer's estimator, see below).
"""

import math

import numpy as np
import pytest
import torch

from common.sampler_theory import (
    ar1_iat,
    integrated_autocorrelation_time,
    ula_contraction,
    ula_effective_temperature,
    ula_stationary_variance,
    underdamped_autocorrelation,
    underdamped_contraction,
    underdamped_iat,
    underdamped_stationary_covariance,
)
from common.samplers import langevin, mala, underdamped_langevin

N_CHAINS = 20000


def quadratic(a):
    return lambda x: 0.5 * a * (x**2).sum(1)


def assert_variance(samples, expected):
    standard_error = expected * math.sqrt(2 / (samples.numel() - 1))
    measured = samples.double().var().item()
    assert abs(measured - expected) < 4 * standard_error, (measured, expected, standard_error)


@pytest.mark.parametrize("ah", [0.1, 0.5, 1.0, 1.5, 1.9])
def test_ula_variance_matches_the_closed_form(ah):
    a, temperature = 2.0, 0.7
    step_size = ah / a
    generator = torch.Generator().manual_seed(int(ah * 10))
    # |1 - a h| <= 0.9, so 300 steps shrink the start's influence by 0.9^600
    x, _ = langevin(quadratic(a), torch.zeros(N_CHAINS, 1), 300, step_size, temperature, generator=generator)
    assert_variance(x, 2 * temperature / (a * (2 - ah)))
    assert ula_stationary_variance(a, step_size, temperature) == pytest.approx(2 * temperature / (a * (2 - ah)))
    assert ula_effective_temperature(a, step_size, temperature) == pytest.approx(2 * temperature / (2 - ah))


@pytest.mark.parametrize("ah", [0.5, 1.5, 1.9])
def test_mala_variance_is_exactly_t_over_a(ah):
    a, temperature = 2.0, 0.7
    generator = torch.Generator().manual_seed(int(ah * 10) + 1)
    x, _, acceptance = mala(quadratic(a), torch.zeros(N_CHAINS, 1), 300, ah / a, temperature, generator=generator)
    assert_variance(x, temperature / a)
    assert 0.05 < acceptance < 1.0


def test_ula_explodes_beyond_ah_2_and_contracts_by_one_minus_ah():
    assert ula_stationary_variance(1.0, 2.0) == math.inf
    assert ula_contraction(1.0, 0.3) == pytest.approx(0.7)
    assert ula_contraction(1.0, 1.7) == pytest.approx(0.7)


@pytest.mark.parametrize("a, h, gamma", [(0.01, 0.5, 0.2), (1.0, 0.5, 0.2), (0.01, 0.5, 1.9), (4.0, 0.2, 1.0)])
def test_underdamped_contraction_equals_the_hand_solved_eigenvalues(a, h, gamma):
    trace, det = 2 - h * h * a - h * gamma, 1 - h * gamma
    disc = trace**2 - 4 * det
    if disc < 0:  # complex pair: |lambda|^2 = det
        expected = math.sqrt(det)
    else:
        expected = max(abs((trace + math.sqrt(disc)) / 2), abs((trace - math.sqrt(disc)) / 2))
    assert underdamped_contraction(a, h, gamma) == pytest.approx(expected, rel=1e-10)


def test_underdamped_contraction_matches_the_decay_of_a_noiseless_chain():
    # real eigenvalues (friction well above 2 sqrt(a)): x_k ~ c rho^k for large k
    a, h, gamma = 0.05, 0.5, 1.5
    rho = underdamped_contraction(a, h, gamma)
    _, path = underdamped_langevin(quadratic(a), torch.ones(1, 1, dtype=torch.float64), 400, h, gamma,
                                   temperature=0.0, keep_every=1)
    x = path[:, 0, 0].numpy()
    assert x[301] / x[300] == pytest.approx(rho, rel=1e-6)
    # complex pair (small friction): the envelope shrinks by rho^period; compare peaks 4 periods apart
    gamma = 0.05
    rho = underdamped_contraction(a, h, gamma)
    _, path = underdamped_langevin(quadratic(a), torch.ones(1, 1, dtype=torch.float64), 2000, h, gamma,
                                   temperature=0.0, keep_every=1)
    x = np.abs(path[:, 0, 0].numpy())
    period = 2 * math.pi / (h * math.sqrt(a))  # ~ 56 steps
    window = int(period)
    first, later = x[200:200 + window].max(), x[200 + 4 * window:200 + 5 * window].max()
    assert later / first == pytest.approx(rho ** (4 * window), rel=0.05)  # peaks fall between grid steps


def test_underdamped_stationary_covariance_solves_the_discrete_lyapunov_equation():
    """The closed form against scipy's solver of C = A C A^T + B B^T (the simulation is in test_samplers.py)."""
    from scipy.linalg import solve_discrete_lyapunov

    a, h, gamma, temperature = 1.0, 0.3, 0.8, 0.5
    A = np.array([[1 - h * h * a, h * (1 - h * gamma)], [-h * a, 1 - h * gamma]])  # acts on (x, v)
    noise = math.sqrt(2 * gamma * temperature * h)
    B = np.array([[h * noise], [noise]])
    expected = solve_discrete_lyapunov(A, B @ B.T)
    assert np.allclose(underdamped_stationary_covariance(a, h, gamma, temperature), expected, rtol=1e-10)


@pytest.mark.parametrize("sampler", ["ula", "underdamped tuned", "underdamped high friction"])
def test_exact_iat_matches_the_measured_iat(sampler):
    a, h = 0.1, 0.5
    n_chains, n_draws = 32, 12000
    generator = torch.Generator().manual_seed(7)
    x0 = torch.randn(n_chains, 1, generator=generator) / math.sqrt(a)
    if sampler == "ula":
        expected = ar1_iat(1 - a * h)  # 79
        _, path = langevin(quadratic(a), x0, n_draws, h, generator=generator, keep_every=1)
    else:
        gamma = 2 * math.sqrt(a) if sampler == "underdamped tuned" else 1 / h
        expected = underdamped_iat(a, h, gamma)
        _, path = underdamped_langevin(quadratic(a), x0, n_draws, h, gamma, generator=generator, keep_every=1)
    chains = path[500:, :, 0].T.numpy()  # drop 500 steps of burn-in (v starts at 0)
    measured = integrated_autocorrelation_time(chains)
    # Geyer's estimate sums ~3 tau lags; its relative s.e. is about sqrt(2 * 3 tau * 2 / N) (Sokal),
    # N = all draws: <= 0.05 here. Allow 4 s.e.
    rel_se = math.sqrt(12 * expected / chains.size)
    assert measured == pytest.approx(expected, rel=4 * rel_se), (measured, expected, rel_se)


def test_exact_autocorrelation_matches_the_simulated_one_and_gamma_1_over_h_is_ula_at_h_squared():
    a, h, gamma = 0.1, 0.5, 0.3
    generator = torch.Generator().manual_seed(8)
    x0 = torch.randn(64, 1, generator=generator) / math.sqrt(a)
    _, path = underdamped_langevin(quadratic(a), x0, 6000, h, gamma, generator=generator, keep_every=1)
    chains = path[500:, :, 0].T.numpy()
    centred = chains - chains.mean()
    lags = [1, 5, 20, 40]
    measured = np.array([(centred[:, t:] * centred[:, :-t]).mean() / (centred**2).mean() for t in lags])
    exact = underdamped_autocorrelation(a, h, gamma, 41)[lags]
    # Bartlett: s.e. of a sample autocorrelation ~ sqrt(tau / N) with tau ~ 1 + 2 sum rho_t^2 <= 40 here
    se = math.sqrt(40 / chains.size)
    assert np.allclose(measured, exact, atol=5 * se), (measured, exact)
    # h gamma = 1 wipes the velocity every step: x' = x - h^2 a x + sqrt(2 T h^2) xi, ULA with step h^2
    rho_ula = 1 - a * h * h
    assert underdamped_autocorrelation(a, h, 1 / h, 6) == pytest.approx(rho_ula ** np.arange(6))
    assert underdamped_iat(a, h, 1 / h) == pytest.approx(ar1_iat(rho_ula))
