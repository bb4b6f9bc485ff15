"""Samplers against exact answers.

For a quadratic energy every sampler here is a *linear* Gaussian recursion z' = A z + B xi, whose
stationary covariance solves the discrete Lyapunov equation S = A S A^T + B B^T exactly. That
gives an answer independent of the sampler code: the seed's effective-temperature result for
ULA, 2T / (a (2 - a h)), is its 1-D case.

Tolerances: the sample variance of n independent draws from N(0, s2) has standard error
s2 * sqrt(2 / (n - 1)); every check allows 4 standard errors (a false alarm about once in 16,000).
"""

import math

import numpy as np
import torch
from scipy.linalg import solve_discrete_lyapunov

from common.samplers import annealed_langevin, langevin, mala, underdamped_langevin

N_CHAINS = 20000


def quadratic(a):
    return lambda x: 0.5 * a * (x**2).sum(1)


def assert_variance(samples, expected):
    n = samples.numel()
    standard_error = expected * math.sqrt(2 / (n - 1))
    assert abs(samples.double().var().item() - expected) < 4 * standard_error, (samples.var().item(), expected)


def test_ula_bias_is_visible_and_mala_removes_it():
    a, temperature, step_size = 1.0, 1.0, 1.5  # ULA's variance would be 2 / 0.5 = 4, not 1
    generator = torch.Generator().manual_seed(2)
    x_ula, _ = langevin(quadratic(a), torch.zeros(N_CHAINS, 1), 200, step_size, temperature, generator=generator)
    assert_variance(x_ula, 4.0)
    x_mala, _, acceptance = mala(quadratic(a), torch.zeros(N_CHAINS, 1), 400, step_size, temperature,
                                 generator=generator)
    assert_variance(x_mala, temperature / a)
    assert 0.05 < acceptance < 0.95


def test_mala_in_two_dimensions_keeps_an_anisotropic_gaussian():
    precision = torch.tensor([1.0, 9.0])
    energy = lambda x: 0.5 * (precision * x**2).sum(1)  # noqa: E731
    generator = torch.Generator().manual_seed(3)
    # the slow coordinate contracts by about (1 - h) = 0.85 per step: 150 steps forget the start
    x, _, _ = mala(energy, torch.zeros(N_CHAINS, 2), 150, 0.15, 1.0, generator=generator)
    assert_variance(x[:, 0], 1.0)
    assert_variance(x[:, 1], 1 / 9)


def test_underdamped_langevin_matches_its_lyapunov_covariance():
    a, temperature, h, gamma = 1.0, 1.0, 0.2, 1.0
    # v' = (1 - h gamma) v - h a x + s xi;   x' = x + h v'   with s = sqrt(2 gamma T h)
    A = np.array([[1 - h * h * a, h * (1 - h * gamma)], [-h * a, 1 - h * gamma]])  # acts on (x, v)
    noise = math.sqrt(2 * gamma * temperature * h)
    B = np.array([[h * noise], [noise]])
    covariance = solve_discrete_lyapunov(A, B @ B.T)
    generator = torch.Generator().manual_seed(4)
    x, _ = underdamped_langevin(quadratic(a), torch.zeros(N_CHAINS, 1), 400, h, gamma, temperature,
                                generator=generator)
    assert_variance(x, covariance[0, 0])
    assert abs(covariance[0, 0] - temperature / a) < 0.15  # and it is close to the exact T/a


def test_annealed_langevin_ends_at_the_last_levels_ula_variance():
    data_variance, sigmas, step_lr = 2.0, [3.0, 1.0, 0.5], 0.05

    def score(x, sigma):  # exact score of N(0, data_variance) convolved with N(0, sigma^2)
        return -x / (data_variance + sigma**2)

    generator = torch.Generator().manual_seed(5)
    x = annealed_langevin(score, 5 * torch.randn(N_CHAINS, 1, generator=generator), sigmas, 300, step_lr,
                          generator=generator)
    a = 1 / (data_variance + sigmas[-1] ** 2)
    assert_variance(x, 2 / (a * (2 - a * step_lr)))


def test_trajectory_keeps_the_start_and_every_kth_state():
    x0 = torch.zeros(3, 2)
    _, path = langevin(quadratic(1.0), x0, 10, 0.1, keep_every=5, generator=torch.Generator().manual_seed(0))
    assert path.shape == (3, 3, 2) and torch.equal(path[0], x0)
