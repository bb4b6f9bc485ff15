"""Composing energies (Du, Li & Mordatch 2020) and checking the result on a 2-D grid.

With E_i = -log p_i + const, the three logical operations are energies too:

    AND   E(x) = E_1(x) + E_2(x)                        p proportional to p_1 p_2       (product of experts)
    OR    E(x) = -log(exp(-E_1(x)) + exp(-E_2(x)))     p proportional to p_1 + p_2     (mixture; equal weights
                                                        when each E_i is a normalised -log p_i)
    NOT   E(x) = E_1(x) - gamma E_2(x)                 p proportional to p_1 / p_2^gamma  (normalisable only if
                                                        E_1 grows faster than gamma E_2 far away)

In 2-D every composed density can be normalised exactly on a grid, so a sampler's output can be
compared with the truth by the total variation (``common.diagnostics.total_variation``) between a histogram
and the grid probabilities.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from common.diagnostics import total_variation

EnergyFn = Callable[[torch.Tensor], torch.Tensor]


def compose_and(e1: EnergyFn, e2: EnergyFn) -> EnergyFn:
    """E_1 + E_2: the product p_1 p_2 (both must hold)."""
    return lambda x: e1(x) + e2(x)


def compose_or(e1: EnergyFn, e2: EnergyFn) -> EnergyFn:
    """-log(exp(-E_1) + exp(-E_2)): the mixture p_1 + p_2 (either may hold), computed stably."""
    return lambda x: -torch.logaddexp(-e1(x), -e2(x))


def compose_not(e1: EnergyFn, e2: EnergyFn, gamma: float) -> EnergyFn:
    """E_1 - gamma E_2: p_1 / p_2^gamma (the first, but not the second)."""
    return lambda x: e1(x) - gamma * e2(x)


def grid_cells(bounds: Sequence[float], n: int) -> tuple[torch.Tensor, float]:
    """Midpoints ``(n*n, 2)`` of an n x n grid of cells on (x0, x1, y0, y1), row-major in y, and one cell's area."""
    x0, x1, y0, y1 = bounds
    dx, dy = (x1 - x0) / n, (y1 - y0) / n
    xs = x0 + dx * (torch.arange(n, dtype=torch.float64) + 0.5)
    ys = y0 + dy * (torch.arange(n, dtype=torch.float64) + 0.5)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")  # (n, n): row = y index, column = x index
    return torch.stack([gx.ravel(), gy.ravel()], dim=1), dx * dy


def grid_probabilities(energy_fn: EnergyFn, bounds: Sequence[float], n: int = 40, refine: int = 8) -> torch.Tensor:
    """P(cell) for the density exp(-E)/Z restricted to the box, on an n x n grid of cells, shape (n, n).

    Each cell's mass is the midpoint rule on a ``refine`` x ``refine`` sub-grid (so the cells can be as
    coarse as a histogram needs while the integral stays accurate); Z is their sum, so the result
    sums to 1. Row index = y bin, column index = x bin (as ``torch.histogramdd`` on (x, y) transposed).
    """
    fine, _ = grid_cells(bounds, n * refine)
    with torch.no_grad():
        energy = energy_fn(fine.to(torch.float32)).double().reshape(n * refine, n * refine)
    log_w = -energy
    weights = torch.exp(log_w - log_w.max())  # (n*refine, n*refine); the cell area cancels in the ratio
    cells = weights.reshape(n, refine, n, refine).sum(dim=(1, 3))
    return cells / cells.sum()


def sample_histogram(samples: torch.Tensor, bounds: Sequence[float], n: int = 40) -> torch.Tensor:
    """Fraction of ``samples`` (B, 2) in each cell of the same grid, shape (n, n), rows = y bins. Points outside
    the box are not counted, so the result sums to the fraction inside (see ``histogram_tv``)."""
    x0, x1, y0, y1 = bounds
    pts = samples.detach().double().cpu()
    ix = torch.floor((pts[:, 0] - x0) / (x1 - x0) * n).long()
    iy = torch.floor((pts[:, 1] - y0) / (y1 - y0) * n).long()
    inside = (ix >= 0) & (ix < n) & (iy >= 0) & (iy < n)
    counts = torch.zeros(n * n, dtype=torch.float64)
    counts.index_add_(0, iy[inside] * n + ix[inside], torch.ones(int(inside.sum()), dtype=torch.float64))
    return counts.reshape(n, n) / len(pts)


def histogram_tv(samples: torch.Tensor, probabilities: torch.Tensor, bounds: Sequence[float]) -> float:
    """TV between the histogram of ``samples`` and grid ``probabilities`` (n, n) on the box ``bounds``.

    Samples outside the box form one extra cell, where the grid density (restricted to the box) has
    no mass, so chains that escape raise the TV instead of vanishing from it.
    """
    hist = sample_histogram(samples, bounds, probabilities.shape[0]).ravel()
    outside = (1 - hist.sum()).clamp(min=0)
    p = torch.cat([hist, outside[None]])
    q = torch.cat([probabilities.double().ravel(), torch.zeros(1, dtype=torch.float64)])
    return total_variation(p.numpy(), q.numpy())


def mixture_share(e1: EnergyFn, e2: EnergyFn, samples: torch.Tensor) -> tuple[float, float]:
    """The weight of the second component in samples of OR(E_1, E_2), with its standard error.

    r(x) = p_2(x) / (p_1(x) + p_2(x)) = sigmoid(E_1(x) - E_2(x)) is the probability that x came from the second
    component; under the composed density E[r] is that component's weight exactly (1/2 for two normalised
    energies), whatever their overlap. Returns (mean r, std r / sqrt(n)), the chains taken as independent.
    """
    with torch.no_grad():
        r = torch.sigmoid(e1(samples) - e2(samples)).double()
    return float(r.mean()), float(r.std() / len(r) ** 0.5)


def exact_mixture_share(e1: EnergyFn, e2: EnergyFn, composed: EnergyFn, bounds: Sequence[float],
                        n: int = 900) -> float:
    """E[r] under exp(-composed)/Z by the midpoint rule on an n x n grid of ``bounds`` (take a box wide enough
    to hold all the mass): the reference ``mixture_share`` is compared with."""
    points, _ = grid_cells(bounds, n)
    with torch.no_grad():
        points = points.float()
        log_w = -composed(points).double()
        r = torch.sigmoid(e1(points) - e2(points)).double()
    w = torch.exp(log_w - log_w.max())
    return float((r * w).sum() / w.sum())


def grid_samples(probabilities: torch.Tensor, bounds: Sequence[float], n_samples: int,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """``n_samples`` exact draws (n_samples, 2) from grid cell probabilities (rows = y bins), uniform inside a cell."""
    n = probabilities.shape[0]
    x0, x1, y0, y1 = bounds
    idx = torch.multinomial(probabilities.double().ravel(), n_samples, replacement=True, generator=generator)
    u = torch.rand(n_samples, 2, generator=generator, dtype=torch.float64)
    x = x0 + (x1 - x0) * ((idx % n).double() + u[:, 0]) / n
    y = y0 + (y1 - y0) * ((idx // n).double() + u[:, 1]) / n
    return torch.stack([x, y], 1).float()
