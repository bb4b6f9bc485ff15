"""Inference as energy minimisation over an output with interdependent parts: a chain of binary labels.

    E(y; x) = sum_i u_i(y_i) - J sum_i y_i y_{i+1},   y_i in {-1, +1}

``u`` holds the unary energies (B, L, 2) of y_i = -1 (column 0) and y_i = +1 (column 1); the coupling J > 0
rewards equal neighbours. On a chain the minimum is exact by dynamic programming (min-sum, "Viterbi"), in
O(L) instead of the 2^L of enumeration; iterated conditional modes (ICM, Besag 1986) descends one label at a
time and can stop in a local minimum.
"""

from __future__ import annotations

import itertools

import torch

LABELS = (-1.0, 1.0)


def chain_energy(u: torch.Tensor, coupling: float, y: torch.Tensor) -> torch.Tensor:
    """E(y; x) for labels ``y`` (B, L) in {-1, +1}; ``u`` (B, L, 2)."""
    unary = torch.where(y > 0, u[..., 1], u[..., 0]).sum(-1)
    return unary - coupling * (y[:, 1:] * y[:, :-1]).sum(-1)


def chain_argmin(u: torch.Tensor, coupling: float) -> torch.Tensor:
    """The exact argmin_y E(y; x) by min-sum dynamic programming over the chain, (B, L) in {-1, +1}."""
    b, length, _ = u.shape
    labels = torch.tensor(LABELS, dtype=u.dtype)
    pair = -coupling * labels[:, None] * labels[None, :]  # (2, 2): pair[a, c] = -J a c
    cost, back = u[:, 0], []  # cost[:, c] = min energy of y_1..y_i with y_i = c
    for i in range(1, length):
        total = cost[:, :, None] + pair  # (B, previous label, this label)
        cost, arg = total.min(1)
        cost, back = cost + u[:, i], [*back, arg]
    best = cost.argmin(1)
    path = [best]
    for arg in reversed(back):
        best = arg.gather(1, best[:, None])[:, 0]
        path.append(best)
    return labels[torch.stack(path[::-1], 1)]


def chain_enumerate(u: torch.Tensor, coupling: float) -> torch.Tensor:
    """The same argmin by trying all 2^L outputs (the check; only for short chains)."""
    all_y = torch.tensor(list(itertools.product(LABELS, repeat=u.shape[1])), dtype=u.dtype)  # (2^L, L)
    energies = torch.stack([chain_energy(u, coupling, y.expand(len(u), -1)) for y in all_y], 1)  # (B, 2^L)
    return all_y[energies.argmin(1)]


def chain_icm(u: torch.Tensor, coupling: float, y0: torch.Tensor, max_sweeps: int = 50) -> torch.Tensor:
    """Iterated conditional modes: set each y_i to its best value given its neighbours, sweep until nothing moves."""
    y = y0.clone()
    for _ in range(max_sweeps):
        old = y.clone()
        for i in range(y.shape[1]):
            field = (y[:, i - 1] if i > 0 else 0) + (y[:, i + 1] if i + 1 < y.shape[1] else 0)
            # E(y_i = +1) - E(y_i = -1) = u_i(+1) - u_i(-1) - 2 J field
            y[:, i] = torch.where(u[:, i, 1] - u[:, i, 0] - 2 * coupling * field < 0, 1.0, -1.0)
        if torch.equal(y, old):
            break
    return y
