"""Normalising flows: RealNVP with affine couplings (Dinh et al. 2017), written in plain torch.

A flow is an invertible map f from data x to a latent z ~ N(0, I). Its density is exact by the
change of variables,

    log q(x) = log N(f(x); 0, I) + log |det df/dx|,

and an affine coupling keeps the determinant cheap: half the coordinates (mask m = 1) pass through
and parametrise a scale and shift of the other half,

    y = m * x + (1 - m) * (x * exp(s(m * x)) + t(m * x)),    log |det dy/dx| = sum_i (1 - m_i) s_i.

``RealNVP.log_prob`` is tested against ``torch.func.jacrev`` (the log-determinant) and against
grid quadrature (it integrates to 1). Importing this module has no side effects.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from common.nets import mlp

LOG_2PI = math.log(2 * math.pi)


class AffineCoupling(nn.Module):
    """One affine coupling layer with a fixed binary ``mask`` (1 = passed through unchanged)."""

    def __init__(self, mask: torch.Tensor, hidden=(64, 64), scale_bound: float = 3.0):
        super().__init__()
        dim = len(mask)
        self.register_buffer("mask", mask.float())
        self.net = mlp((dim, *hidden, 2 * dim))
        nn.init.zeros_(self.net[-1].weight)  # start at the identity map: a stable first step
        nn.init.zeros_(self.net[-1].bias)
        self.scale_bound = scale_bound  # s = bound * tanh(raw / bound): no exp overflow early in training

    def _scale_shift(self, x_masked: torch.Tensor):
        raw_scale, shift = self.net(x_masked).chunk(2, dim=-1)  # (B, D) each
        scale = self.scale_bound * torch.tanh(raw_scale / self.scale_bound)
        free = 1 - self.mask
        return scale * free, shift * free

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # y = m x + (1 - m)(x e^s + t);  log|det| = sum (1 - m) s
        scale, shift = self._scale_shift(x * self.mask)
        return x * torch.exp(scale) + shift, scale.sum(-1)

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        # the masked half of y equals that of x, so s and t are recomputed from it exactly
        scale, shift = self._scale_shift(y * self.mask)
        return (y - shift) * torch.exp(-scale)


class RealNVP(nn.Module):
    """A stack of affine couplings with alternating masks and a standard-normal base.

    ``forward(x) -> (z, log_det)`` maps data to latent; ``inverse(z)`` maps back; ``log_prob(x)``
    is the exact log-density ``(B,)``; ``sample(n, generator)`` draws x = f^{-1}(z).
    """

    def __init__(self, dim: int = 2, n_layers: int = 6, hidden=(64, 64), scale_bound: float = 3.0):
        super().__init__()
        self.dim = dim
        layers = []
        for k in range(n_layers):
            mask = (torch.arange(dim) % 2 == k % 2).float()  # alternate which half passes through
            layers.append(AffineCoupling(mask, hidden, scale_bound))
        self.layers = nn.ModuleList(layers)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        log_det = torch.zeros(len(x), dtype=x.dtype, device=x.device)
        for layer in self.layers:
            x, layer_log_det = layer(x)
            log_det = log_det + layer_log_det
        return x, log_det

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        for layer in reversed(self.layers):
            z = layer.inverse(z)
        return z

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        # log q(x) = log N(f(x); 0, I) + log |det df/dx|
        z, log_det = self(x)
        return -0.5 * (z**2).sum(-1) - 0.5 * self.dim * LOG_2PI + log_det

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        param = next(self.parameters())
        z = torch.randn(n, self.dim, generator=generator, dtype=param.dtype, device=param.device)
        return self.inverse(z)
