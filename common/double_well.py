"""The 1-D double-well exponential family of lessons 06 and 10, with its exact log Z by quadrature.

E_theta(x) = theta_1 x^2/2 + theta_2 x^4/4 = theta . T(x), T(x) = (x^2/2, x^4/4): a double well when
theta_1 < 0, normalisable when theta_2 > 0. log Z(theta) is a 1-D integral, computed by Gauss-Legendre
quadrature on [-L, L] with L chosen so that exp(-E) has fallen by ``drop`` nats from its peak.
``log_partition`` and ``expectation`` work on NumPy arrays (lesson 06's closed forms); ``log_partition_torch``
is the same sum in PyTorch, differentiable and usable under ``torch.func.vmap`` (lesson 10's Newton fits).
"""

from __future__ import annotations

import math

import numpy as np
import torch


def half_width_for(theta, drop: float = 200.0, at_least: float = 8.0) -> float:
    """The smallest L with E(L) - min_x E >= ``drop`` nats (E rises for |x| beyond the wells), at least ``at_least``.

    Solve for u = L^2:  theta2 u^2/4 + theta1 u/2 = E_min + drop,  E_min = -theta1^2/(4 theta2) if theta1 < 0.
    """
    theta = np.asarray(theta, dtype=np.float64)
    e_min = -theta[0] ** 2 / (4 * theta[1]) if theta[0] < 0 else 0.0
    u = (-theta[0] / 2 + math.sqrt(theta[0] ** 2 / 4 + theta[1] * (e_min + drop))) / (theta[1] / 2)
    return max(at_least, math.sqrt(u))


def suff_stats(x):
    """T(x) = (x^2/2, x^4/4), so E_theta(x) = theta . T(x); NumPy in, NumPy out; a tensor in, a tensor out."""
    if isinstance(x, torch.Tensor):
        return torch.stack([x**2 / 2, x**4 / 4], dim=-1)  # (..., 2)
    x = np.asarray(x, dtype=np.float64)
    return np.stack([x**2 / 2, x**4 / 4], axis=-1)  # (..., 2)


class QuarticFamily:
    """Gauss-Legendre nodes on [-L, L] for the family's log Z and expectations (``nodes`` points)."""

    def __init__(self, half_width: float = 8.0, nodes: int = 400):
        self.half_width, self.nodes = half_width, nodes
        gl_nodes, gl_weights = np.polynomial.legendre.leggauss(nodes)
        self.x, self.w = half_width * gl_nodes, half_width * gl_weights  # (nodes,), (nodes,)
        self.x_torch, self.log_w_torch = torch.tensor(self.x), torch.tensor(self.w).log()

    def log_partition(self, theta) -> float:
        # log Z = log int exp(-theta . T(x)) dx, as a log-sum-exp over the nodes
        log_f = -suff_stats(self.x) @ np.asarray(theta, dtype=np.float64)
        top = log_f.max()
        return float(top + math.log(np.sum(self.w * np.exp(log_f - top))))

    def expectation(self, theta, fn):
        # E_{p_theta}[f] = int f exp(-E) dx / Z, for f mapping the nodes (n,) to (n, ...)
        log_f = -suff_stats(self.x) @ np.asarray(theta, dtype=np.float64)
        weights = self.w * np.exp(log_f - log_f.max())
        return np.tensordot(weights / weights.sum(), fn(self.x), axes=(0, 0))

    def log_partition_torch(self, theta: torch.Tensor) -> torch.Tensor:
        # the same sum, differentiable in theta (float64)
        return torch.logsumexp(-suff_stats(self.x_torch) @ theta + self.log_w_torch, dim=0)
