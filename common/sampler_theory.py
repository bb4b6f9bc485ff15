"""Closed forms for the course's samplers on a quadratic energy E = a x^2 / 2 (one coordinate).

On a quadratic every sampler in ``common.samplers`` is a linear Gaussian recursion z' = M z + b xi,
so its stationary variance, its contraction per step and its integrated autocorrelation time (IAT)
are exact numbers. Lesson 07 measures the samplers against them; docs/derivations/langevin_discretisation.md
derives the ULA case.

- ULA  x' = (1 - a h) x + sqrt(2 T h) xi:  Var = 2T / (a (2 - a h)),  contraction |1 - a h|,
  IAT = (1 + rho) / (1 - rho) with rho = 1 - a h;
- underdamped Langevin (``common.samplers.underdamped_langevin``, unit mass, friction gamma):
  z = (x, v),  v' = (1 - h gamma) v - h a x + s xi,  x' = x + h v',  s = sqrt(2 gamma T h);
  contraction = spectral radius of the 2x2 update matrix M.
"""

from __future__ import annotations

import numpy as np
from scipy.linalg import solve_discrete_lyapunov

from common.diagnostics import effective_sample_size


def ula_stationary_variance(a: float, step_size: float, temperature: float = 1.0) -> float:
    """Var_inf = 2T / (a (2 - a h)) of ULA on E = a x^2/2; ``inf`` when a h >= 2 (the chain explodes)."""
    if a * step_size >= 2:
        return float("inf")
    return 2 * temperature / (a * (2 - a * step_size))


def ula_effective_temperature(a: float, step_size: float, temperature: float = 1.0) -> float:
    """T_eff = 2T / (2 - a h): the temperature whose exact Boltzmann variance T_eff / a ULA reaches."""
    return a * ula_stationary_variance(a, step_size, temperature)


def ula_contraction(a: float, step_size: float) -> float:
    """|rho| = |1 - a h|: how much ULA shrinks a deviation from the mean per step on E = a x^2/2."""
    return abs(1 - a * step_size)


def ar1_iat(rho: float) -> float:
    """tau = (1 + rho) / (1 - rho): integrated autocorrelation time of an AR(1) chain with coefficient rho."""
    return (1 + rho) / (1 - rho)


def underdamped_update(a: float, step_size: float, friction: float, temperature: float = 1.0):
    """``(M, b)`` of one underdamped step on E = a x^2/2, state z = (x, v):  z' = M z + b xi.

    v' = -h a x + (1 - h gamma) v + s xi
    x' = x + h v' = (1 - h^2 a) x + h (1 - h gamma) v + h s xi,    s = sqrt(2 gamma T h)
    """
    h, g = step_size, friction
    s = np.sqrt(2 * g * temperature * h)
    matrix = np.array([[1 - h * h * a, h * (1 - h * g)], [-h * a, 1 - h * g]])
    noise = np.array([h * s, s])
    return matrix, noise


def underdamped_contraction(a: float, step_size: float, friction: float) -> float:
    """Spectral radius of the underdamped update matrix M: the factor by which the slowest mode shrinks per step.

    det M = 1 - h gamma and tr M = 2 - h^2 a - h gamma; complex eigenvalues have |lambda| = sqrt(1 - h gamma).
    """
    matrix, _ = underdamped_update(a, step_size, friction)
    return float(np.abs(np.linalg.eigvals(matrix)).max())


def underdamped_stationary_covariance(a: float, step_size: float, friction: float, temperature: float = 1.0):
    """S = M S M^T + b b^T (discrete Lyapunov equation): the exact stationary covariance of (x, v)."""
    matrix, noise = underdamped_update(a, step_size, friction, temperature)
    return solve_discrete_lyapunov(matrix, np.outer(noise, noise))


def underdamped_iat(a: float, step_size: float, friction: float) -> float:
    """Exact IAT of the x coordinate of stationary underdamped Langevin on E = a x^2/2.

    Cov(z_{k+t}, z_k) = M^t S, so tau = 1 + 2 sum_{t>=1} (M^t S)_xx / S_xx = [(I + 2 M (I - M)^{-1}) S]_xx / S_xx.
    """
    matrix, _ = underdamped_update(a, step_size, friction)
    cov = underdamped_stationary_covariance(a, step_size, friction)
    eye = np.eye(2)
    tail = eye + 2 * matrix @ np.linalg.inv(eye - matrix)
    return float((tail @ cov)[0, 0] / cov[0, 0])


def underdamped_autocorrelation(a: float, step_size: float, friction: float, n_lags: int) -> np.ndarray:
    """Exact stationary autocorrelation rho_t = (M^t S)_xx / S_xx of x, t = 0 .. n_lags - 1.

    For a Gaussian chain, x^2 (the flat direction's energy) has autocorrelation rho_t^2.
    """
    matrix, _ = underdamped_update(a, step_size, friction)
    column = underdamped_stationary_covariance(a, step_size, friction)[:, 0]  # Cov(z_k, x_k) = S e_x
    variance = column[0]
    rho = np.empty(n_lags)
    for t in range(n_lags):  # Cov(z_{k+t}, x_k) = M^t S e_x
        rho[t] = column[0] / variance
        column = matrix @ column
    return rho


def integrated_autocorrelation_time(chains) -> float:
    """Measured IAT of ``(n_chains, n_draws)`` draws of a scalar: tau = (total draws) / ESS (Geyer, via
    ``common.diagnostics.effective_sample_size``)."""
    chains = np.asarray(chains, dtype=np.float64)
    chains = chains[None, :] if chains.ndim == 1 else chains
    return float(chains.size / effective_sample_size(chains))
