"""The probability-flow ODE against Gaussian closed forms, and the epsilon/score identity."""

import math

import torch

from common.diffusion import (
    eps_from_score,
    geometric_sigmas,
    moment_matched_prior,
    ode_log_likelihood,
    probability_flow_sample,
)

MEAN = torch.tensor([1.0, -2.0], dtype=torch.float64)
DATA_STD = 0.7


def noised_gaussian_score(x, sigma):
    # p_sigma = N(MEAN, (s0^2 + sigma^2) I)
    return -(x - MEAN) / (DATA_STD**2 + sigma**2)


def noised_gaussian_log_density(x, sigma):
    var = DATA_STD**2 + sigma**2
    return -0.5 * ((x - MEAN) ** 2).sum(-1) / var - math.log(2 * math.pi * var)


def test_ode_log_likelihood_of_a_gaussian():
    x = MEAN + torch.randn(20, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 1.5
    sigma_min, sigma_max = 0.01, 20.0
    exact_prior = lambda z: noised_gaussian_log_density(z, sigma_max)  # noqa: E731
    log_p = ode_log_likelihood(noised_gaussian_score, x, sigma_min, sigma_max, n_steps=200,
                               prior_log_density=exact_prior)
    # RK4's error is O(h^4): 1e-4 nats at 60 steps, ~1e-6 at 200
    torch.testing.assert_close(log_p, noised_gaussian_log_density(x, sigma_min), atol=1e-5, rtol=0)
    # with the default prior N(0, sigma_max^2 I) the error is exactly log N(x_T; 0, sigma_max^2) - log p_max(x_T),
    # x_T = MEAN + (x - MEAN) sqrt(var_max / var_min) being where the (linear) ODE takes x
    approx = ode_log_likelihood(noised_gaussian_score, x, sigma_min, sigma_max, n_steps=200)
    x_top = MEAN + (x - MEAN) * math.sqrt((DATA_STD**2 + sigma_max**2) / (DATA_STD**2 + sigma_min**2))
    prior_error = (-0.5 * (x_top**2).sum(-1) / sigma_max**2 - math.log(2 * math.pi * sigma_max**2)
                   - noised_gaussian_log_density(x_top, sigma_max))
    torch.testing.assert_close(approx - log_p, prior_error, atol=1e-5, rtol=0)


def test_probability_flow_sampler_maps_the_prior_to_the_data_gaussian():
    sigma_min, sigma_max = 0.01, 20.0
    gen = torch.Generator().manual_seed(1)
    var_max = DATA_STD**2 + sigma_max**2
    x_start = MEAN + math.sqrt(var_max) * torch.randn(20000, 2, dtype=torch.float64, generator=gen)
    x = probability_flow_sample(noised_gaussian_score, x_start, sigma_max, sigma_min, n_steps=200)
    # the ODE is the linear map x -> MEAN + (x - MEAN) sqrt(var_min / var_max): check it pointwise
    expected = MEAN + (x_start - MEAN) * math.sqrt((DATA_STD**2 + sigma_min**2) / var_max)
    torch.testing.assert_close(x, expected, atol=1e-5, rtol=0)


def test_geometric_ladder_and_eps_identity():
    sigmas = geometric_sigmas(20.0, 1.0, 10)
    assert math.isclose(float(sigmas[0]), 20.0, rel_tol=1e-6) and math.isclose(float(sigmas[-1]), 1.0, rel_tol=1e-6)
    ratios = sigmas[1:] / sigmas[:-1]
    torch.testing.assert_close(ratios, torch.full_like(ratios, 20.0 ** (-1 / 9)))
    # Gaussian data: E[eps | x_sigma] = sigma (x_sigma - MEAN) / (s0^2 + sigma^2) by Gaussian conditioning
    sigma = 0.8
    x_sigma = torch.randn(5, 2, dtype=torch.float64)
    expected = sigma * (x_sigma - MEAN) / (DATA_STD**2 + sigma**2)
    torch.testing.assert_close(eps_from_score(noised_gaussian_score(x_sigma, sigma), sigma), expected)


def test_moment_matched_prior_is_exact_for_gaussian_data():
    # for Gaussian data p_sigma_max is itself Gaussian, so the matched prior is exact: ODE NLL = closed form
    gen = torch.Generator().manual_seed(2)
    data = MEAN + DATA_STD * torch.randn(200000, 2, dtype=torch.float64, generator=gen)
    prior = moment_matched_prior(data, 20.0)
    x = MEAN + torch.randn(10, 2, dtype=torch.float64, generator=gen)
    log_p = ode_log_likelihood(noised_gaussian_score, x, 0.01, 20.0, n_steps=200, prior_log_density=prior.log_prob)
    # the moments come from 2e5 samples: error ~ |x_T| * (mean error) / sigma_max^2 ~ 1e-3
    torch.testing.assert_close(log_p, noised_gaussian_log_density(x, 0.01), atol=5e-3, rtol=0)
