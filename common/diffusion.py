"""From noise-conditional scores to diffusion: the noise ladder, epsilon-prediction and the probability-flow ODE.

A noise-conditional score s(x, sigma) ~ grad_x log p_sigma(x), with p_sigma = p_data * N(0, sigma^2 I),
defines three things used in lesson 10:

- DDPM's epsilon-prediction is the same object rescaled: the best guess of the noise in
  x_sigma = x + sigma eps is E[eps | x_sigma] = -sigma grad log p_sigma(x_sigma) (``eps_from_score``).
- The variance-exploding SDE dx = sqrt(d sigma^2 / dt) dW has a deterministic twin with the same
  marginals, the probability-flow ODE  dx / d sigma = -sigma s(x, sigma)  (Song et al. 2021).
  Integrated from sigma_max down to sigma_min it is a sampler (``probability_flow_sample``).
- Along that ODE the log-density changes by the divergence (instantaneous change of variables),
  d log p / d log sigma = sigma^2 tr grad_x s, so integrating up from a data point gives its exact
  log-likelihood under the model, given the prior at sigma_max (``ode_log_likelihood``; the trace is
  computed exactly, fine in 2-D).

Both integrators use classical Runge-Kutta 4 on a uniform grid in u = log sigma. ``ode_log_likelihood``
is tested on a Gaussian, where every p_sigma is Gaussian in closed form. No side effects on import.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from common.score_matching import jacobian_trace

NoiseScoreFn = Callable[[torch.Tensor, float], torch.Tensor]


def geometric_sigmas(sigma_max: float, sigma_min: float, n_levels: int) -> torch.Tensor:
    """sigma_1 = sigma_max > ... > sigma_L = sigma_min, equally spaced in log sigma (Song & Ermon 2019)."""
    return torch.logspace(math.log10(sigma_max), math.log10(sigma_min), n_levels)


def eps_from_score(score: torch.Tensor, sigma) -> torch.Tensor:
    """E[eps | x_sigma] = -sigma grad log p_sigma(x_sigma): DDPM's epsilon-prediction from a score."""
    return -sigma * score


def _velocity(score_fn: NoiseScoreFn, x: torch.Tensor, log_sigma: float) -> torch.Tensor:
    # dx / d log sigma = sigma dx / d sigma = -sigma^2 s(x, sigma)
    sigma = math.exp(log_sigma)
    return -(sigma**2) * score_fn(x, sigma)


def _velocity_and_divergence(score_fn: NoiseScoreFn, x: torch.Tensor, log_sigma: float):
    # v = -sigma^2 s,   -div v = sigma^2 tr grad_x s   (exact trace by torch.func, D reverse passes)
    sigma = math.exp(log_sigma)
    trace = jacobian_trace(lambda z: score_fn(z, sigma), x)  # (B,)
    return -(sigma**2) * score_fn(x, sigma), sigma**2 * trace


def probability_flow_sample(score_fn: NoiseScoreFn, x_start: torch.Tensor, sigma_max: float, sigma_min: float,
                            n_steps: int = 100) -> torch.Tensor:
    """Integrate dx/d sigma = -sigma s(x, sigma) from sigma_max down to sigma_min (RK4 in log sigma).

    ``x_start`` should be a draw from p_{sigma_max}, e.g. sigma_max * N(0, I). Deterministic given x_start.
    """
    h = (math.log(sigma_min) - math.log(sigma_max)) / n_steps  # negative: we go down in noise
    x, u = x_start.detach().clone(), math.log(sigma_max)
    with torch.no_grad():
        for _ in range(n_steps):
            k1 = _velocity(score_fn, x, u)
            k2 = _velocity(score_fn, x + 0.5 * h * k1, u + 0.5 * h)
            k3 = _velocity(score_fn, x + 0.5 * h * k2, u + 0.5 * h)
            k4 = _velocity(score_fn, x + h * k3, u + h)
            x, u = x + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4), u + h
    return x


def gaussian_prior_log_density(sigma_max: float) -> Callable[[torch.Tensor], torch.Tensor]:
    """log N(x; 0, sigma_max^2 I): the usual stand-in for p_{sigma_max} when sigma_max >> the data's scale."""

    def log_density(x: torch.Tensor) -> torch.Tensor:
        dim = x.shape[-1]
        return -0.5 * (x**2).sum(-1) / sigma_max**2 - 0.5 * dim * math.log(2 * math.pi * sigma_max**2)

    return log_density


def moment_matched_prior(x_data: torch.Tensor, sigma_max: float) -> torch.distributions.MultivariateNormal:
    """N(mean, Cov + sigma_max^2 I) of the data x_data ``(N, D)``: the exact first two moments of p_{sigma_max}.

    Better than N(0, sigma_max^2 I) when the data are not centred: the ODE is a transport map, so a prior
    shifted by |mean| / sigma_max of a standard deviation sends that much mass to the wrong modes.
    """
    mean, cov = x_data.mean(0), torch.cov(x_data.T).reshape(x_data.shape[1], x_data.shape[1])
    return torch.distributions.MultivariateNormal(mean, cov + sigma_max**2 * torch.eye(len(mean), dtype=cov.dtype))


def ode_log_likelihood(score_fn: NoiseScoreFn, x: torch.Tensor, sigma_min: float, sigma_max: float,
                       n_steps: int = 50, prior_log_density: Callable | None = None) -> torch.Tensor:
    """log p_{sigma_min}(x) of the model defined by the probability-flow ODE, ``(B,)``.

    log p_{sigma_min}(x_0) = log p_{sigma_max}(x_T) - int sigma^2 tr grad s(x(u), sigma) du   (u = log sigma,
    from log sigma_min to log sigma_max),
    with x(u) the ODE path from x_0 = x upwards (RK4, the trace exact). The prior defaults to
    N(0, sigma_max^2 I); on average over the data that stand-in costs KL(p_{sigma_max} || prior) nats (the ODE
    is a bijection, so the KL is the same at both ends); ``moment_matched_prior(...).log_prob`` costs less.
    """
    prior_log_density = prior_log_density or gaussian_prior_log_density(sigma_max)
    h = (math.log(sigma_max) - math.log(sigma_min)) / n_steps
    x, u = x.detach().clone(), math.log(sigma_min)
    delta = torch.zeros(len(x), dtype=x.dtype, device=x.device)  # int sigma^2 tr grad s du so far
    with torch.no_grad():
        for _ in range(n_steps):
            k1, d1 = _velocity_and_divergence(score_fn, x, u)
            k2, d2 = _velocity_and_divergence(score_fn, x + 0.5 * h * k1, u + 0.5 * h)
            k3, d3 = _velocity_and_divergence(score_fn, x + 0.5 * h * k2, u + 0.5 * h)
            k4, d4 = _velocity_and_divergence(score_fn, x + h * k3, u + h)
            x = x + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
            delta = delta + h / 6 * (d1 + 2 * d2 + 2 * d3 + d4)
            u = u + h
    return prior_log_density(x) - delta
