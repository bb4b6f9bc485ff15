"""Small neural networks for the neural lessons (07-10): energies, scores and classifiers.

Sign convention, everywhere in the course: a network called an *energy* returns E(x), low where data is
likely, p(x) = exp(-E(x)) / Z. Much public code stores f(x) = -E(x) instead ("logits" or "scores" that are
high on data); reading such code, flip the sign of every energy term.

SiLU (Swish) is the default activation: it is smooth, so the input gradients that Langevin follows and the
second derivatives that score matching and gradient penalties need are smooth too (ReLU's are piecewise
constant).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def _linear(n_in: int, n_out: int, spectral_norm: bool) -> nn.Module:
    layer = nn.Linear(n_in, n_out)
    # spectral norm divides W by its largest singular value (power iteration): each layer is 1-Lipschitz
    return nn.utils.parametrizations.spectral_norm(layer) if spectral_norm else layer


def mlp(sizes: Sequence[int], act: type[nn.Module] = nn.SiLU, spectral_norm: bool = False) -> nn.Sequential:
    """A multilayer perceptron sizes[0] -> ... -> sizes[-1], ``act`` between layers, none after the last."""
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(_linear(sizes[i], sizes[i + 1], spectral_norm))
        if i < len(sizes) - 2:
            layers.append(act())
    return nn.Sequential(*layers)


class MLPEnergy(nn.Module):
    """E_theta(x) = MLP(flatten(x)): R^D -> R, returned with shape (B,)."""

    def __init__(self, in_dim: int, hidden: Sequence[int] = (128, 128), act: type[nn.Module] = nn.SiLU,
                 spectral_norm: bool = False):
        super().__init__()
        self.net = mlp((in_dim, *hidden, 1), act, spectral_norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.flatten(1)).squeeze(-1)  # (B,)


class CNNEnergy(nn.Module):
    """A small convolutional energy for (B, 1, H, W) images: stride-2 convolutions, then a linear read-out.

    About 9x the cost of an MLP energy per step on two CPU cores at 8x8; use it behind a flag.
    """

    def __init__(self, image_size: int = 8, channels: Sequence[int] = (16, 32, 64), act: type[nn.Module] = nn.SiLU,
                 spectral_norm: bool = False):
        super().__init__()
        layers: list[nn.Module] = []
        size, c_in = image_size, 1
        for c_out in channels:
            conv = nn.Conv2d(c_in, c_out, kernel_size=3, stride=2 if size > 4 else 1, padding=1)
            layers += [nn.utils.parametrizations.spectral_norm(conv) if spectral_norm else conv, act()]
            size = (size + 1) // 2 if size > 4 else size
            c_in = c_out
        self.features = nn.Sequential(*layers, nn.Flatten())
        self.head = _linear(c_in * size * size, 1, spectral_norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x)).squeeze(-1)  # (B,)


class NoiseConditionalScore(nn.Module):
    """s_theta(x, sigma) = MLP([x, log sigma]) / sigma: one network for every noise level (Song & Ermon 2019).

    The 1/sigma factor matches the scale of the true noised score, ~ -(x - x_clean)/sigma^2 = -eps/sigma, so the
    network's output has unit scale at every level.
    """

    def __init__(self, dim: int, hidden: Sequence[int] = (128, 128), act: type[nn.Module] = nn.SiLU):
        super().__init__()
        self.net = mlp((dim + 1, *hidden, dim), act)

    def forward(self, x: torch.Tensor, sigma) -> torch.Tensor:
        sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).expand(len(x))  # (B,)
        inputs = torch.cat([x, sigma.log()[:, None]], dim=1)  # (B, D + 1)
        return self.net(inputs) / sigma[:, None]  # (B, D)


class MLPClassifier(nn.Module):
    """Logits f(x) (B, C) of an MLP on flattened inputs; ``features(x)`` is its last hidden layer."""

    def __init__(self, in_dim: int, n_classes: int = 10, hidden: Sequence[int] = (128, 128),
                 act: type[nn.Module] = nn.SiLU, spectral_norm: bool = False):
        super().__init__()
        self.body = nn.Sequential(mlp((in_dim, *hidden), act, spectral_norm), act())
        self.head = _linear(hidden[-1], n_classes, spectral_norm)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x.flatten(1))  # (B, hidden[-1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))  # (B, C)


class ClassifierEnergy(nn.Module):
    """A classifier read as an energy model (Grathwohl et al. 2020, JEM).

    p(x, y) = exp(f(x)[y]) / Z  gives   E(x, y) = -f(x)[y],   E(x) = -log sum_y exp(f(x)[y]),
    and p(y | x) = softmax(f(x))[y], the ordinary classifier: Z cancels there.
    """

    def __init__(self, classifier: nn.Module):
        super().__init__()
        self.classifier = classifier

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(x)  # (B, C)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # E(x) = -logsumexp_y f(x)[y]
        return -torch.logsumexp(self.logits(x), dim=1)  # (B,)

    def joint_energy(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        # E(x, y) = -f(x)[y]
        return -self.logits(x).gather(1, y[:, None]).squeeze(1)  # (B,)

    def log_p_y_given_x(self, x: torch.Tensor) -> torch.Tensor:
        return torch.log_softmax(self.logits(x), dim=1)  # (B, C)
