"""Noise-contrastive estimation (Gutmann and Hyvarinen 2010): density estimation as classification.

The model log p(x) = -E(x) - zeta carries its log-normaliser zeta as a free parameter. A logistic
classifier with logit

    G(u) = log p(u) - log q(u) - log nu

tells data (label 1) from nu times as many samples of a known noise q (label 0). The objective,
per data point,

    J = E_data[log sigmoid(G(x))] + nu E_q[log sigmoid(-G(y))],

is maximised by log p = log p_data, so zeta -> log Z (docs/derivations/noise_contrastive_estimation.md).
``nce_loss`` returns -J; it is tested on a Gaussian model against Gaussian noise, whose optimum is
the true mean, precision and log Z. Importing this module has no side effects.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def nce_logits(log_model: torch.Tensor, log_noise: torch.Tensor, nu: float) -> torch.Tensor:
    """G(u) = log p_model(u) - log q(u) - log nu: the log-odds that u is data, ``(B,)``."""
    return log_model - log_noise - math.log(nu)


def nce_loss(log_model_data: torch.Tensor, log_noise_data: torch.Tensor, log_model_noise: torch.Tensor,
             log_noise_noise: torch.Tensor, nu: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``(-J, logs)`` for data points x and noise points y (any number of each; nu sets the prior odds).

    ``log_model_*`` is the *unnormalised-but-shifted* model -E(u) - zeta at the data / noise points,
    ``log_noise_*`` is log q there. logs: ``acc`` (classification accuracy at threshold G = 0),
    ``r_data`` (mean posterior probability of "data" on the data: 1 means the classes separate).
    """
    g_data = nce_logits(log_model_data, log_noise_data, nu)  # (N,)
    g_noise = nce_logits(log_model_noise, log_noise_noise, nu)  # (nu N,)
    # J = E_data log sigma(G) + nu E_q log sigma(-G)     (log sigma(-G) = log(1 - r); log sigma(g) = -softplus(-g))
    objective = -F.softplus(-g_data).mean() - nu * F.softplus(g_noise).mean()
    with torch.no_grad():
        accuracy = torch.cat([(g_data > 0).float(), (g_noise < 0).float()]).mean()
        logs = {"acc": accuracy, "r_data": torch.sigmoid(g_data).mean()}
    return -objective, logs
