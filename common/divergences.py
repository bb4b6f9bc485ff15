"""Divergences between distributions: exact by quadrature, and from samples by the Donsker-Varadhan bound.

- ``kl_by_quadrature(log_p, log_q, low, high)``: KL(P || Q) = int p (log p - log q) dx for 1-D densities,
  by scipy's adaptive quadrature (the exact answer a sample-based estimate is compared with).
- ``donsker_varadhan_bound(t_p, t_q)``: the DV lower bound E_P[T] - log E_Q[e^T] <= KL(P || Q) from the
  values of a critic T on samples of P and of Q; equality when T = log p/q + const (derivation:
  docs/derivations/donsker_varadhan.md).
- ``donsker_varadhan_se(t_p, t_q)``: its delta-method standard error (the sampling noise of the estimate).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
from scipy import integrate


def kl_by_quadrature(log_p: Callable[[float], float], log_q: Callable[[float], float], low: float, high: float,
                     points: Sequence[float] | None = None) -> float:
    """KL(P || Q) = int_low^high p(x) (log p(x) - log q(x)) dx for 1-D log-densities (scalar in, scalar out).

    ``points`` are break points for scipy's ``quad`` (the modes of p, say) so narrow peaks are not missed.
    Where p underflows to 0 the integrand is 0 (the limit of p log p), so wide limits are safe.
    """

    def integrand(x: float) -> float:
        lp = log_p(x)
        return 0.0 if lp < -700 else math.exp(lp) * (lp - log_q(x))

    inner = sorted(float(p) for p in (() if points is None else points) if low < p < high)
    value, _ = integrate.quad(integrand, low, high, points=inner or None, limit=500, epsabs=1e-11, epsrel=1e-10)
    return float(value)


def donsker_varadhan_bound(t_p: torch.Tensor, t_q: torch.Tensor) -> torch.Tensor:
    """DV bound from critic values: t_p = T(x) on x ~ P (N,), t_q = T(x) on x ~ Q (M,); a 0-d tensor.

    KL(P || Q) = sup_T  E_P[T] - log E_Q[e^T];  log E_Q[e^T] by log-mean-exp (no overflow).
    Differentiable, so a critic network is trained by maximising it.
    """
    # log (1/M sum_j e^{T(x_j)}) = logsumexp_j T(x_j) - log M
    log_mean_exp = torch.logsumexp(t_q, dim=0) - math.log(t_q.shape[0])
    return t_p.mean() - log_mean_exp


def donsker_varadhan_se(t_p: torch.Tensor, t_q: torch.Tensor) -> float:
    """Delta-method standard error of ``donsker_varadhan_bound`` (P and Q samples independent).

    Var[mean T_p] = Var_P[T] / N;  Var[log mean e^T] ~ Var_Q[e^T] / (M (E_Q e^T)^2)  (first order).
    For the optimal critic e^T is proportional to p/q, so the second term is chi^2(p || q) / M, with
    chi^2(p || q) = E_Q[(p/q)^2] - 1 (infinite when q's tails are lighter than p's): the DV estimate needs
    many Q samples where p/q is large, and has no finite variance at all when chi^2 is infinite.
    """
    t_p, t_q = t_p.detach().double(), t_q.detach().double()
    weights = torch.exp(t_q - t_q.max())  # e^T scaled by a constant that cancels in the ratio below
    var_log_mean = float(weights.var() / weights.mean() ** 2) / t_q.shape[0]
    return float(np.sqrt(float(t_p.var()) / t_p.shape[0] + var_log_mean))
