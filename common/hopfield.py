"""Hopfield networks: classical (binary, quadratic energy) and modern (dense, log-sum-exp energy).

Classical network on +-1 units x (Hopfield 1982)
    E(x) = -1/2 x^T W x - b^T x,        W symmetric, zero diagonal
    asynchronous update of one unit i:   x_i <- sign(h_i),  h_i = sum_j W_ij x_j + b_i
    (a unit whose field is 0 keeps its state, so every flip lowers E strictly; "0" means within
    round-off, see ``tie_tolerance``)
    Storage rules: Hebbian (outer products), Storkey (1997, local and incremental, higher
    capacity), pseudo-inverse (projection onto the span of the patterns; Personnaz et al. 1985).

Stochastic (Glauber) dynamics at temperature T
    p(x_i = +1 | rest) = sigmoid(2 h_i / T): a Gibbs sampler of p(x) proportional to exp(-E(x) / T),
    the same kernel as ``common.boltzmann.gibbs_sweep(spins=True)`` but in random order and with
    one temperature per chain.

Modern (dense) Hopfield network (Krotov & Hopfield 2016; Ramsauer et al. 2020)
    E(xi) = -1/beta log sum_mu exp(beta x_mu . xi) + 1/2 xi . xi + 1/beta log P + 1/2 M^2
    update: xi <- X^T softmax(beta X xi)   (X holds the P patterns as rows; this is attention
    with the state as the query and the patterns as keys and values)

Shapes: patterns are ``(P, N)``, states are ``(B, N)``, weights ``(N, N)``; energies are ``(B,)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from common.boltzmann import boltzmann_energy

# ---------------------------------------------------------------------------------------------
# Storage rules
# ---------------------------------------------------------------------------------------------


def hebbian_weights(patterns: torch.Tensor) -> torch.Tensor:
    """W = (1/N) sum_mu xi_mu xi_mu^T with a zero diagonal; ``patterns`` is ``(P, N)`` of +-1."""
    n_units = patterns.shape[1]
    # W_ij = (1/N) sum_mu xi_i^mu xi_j^mu
    weights = patterns.T @ patterns / n_units  # (N, N)
    weights.fill_diagonal_(0.0)
    return weights


def storkey_weights(patterns: torch.Tensor) -> torch.Tensor:
    """Storkey's (1997) incremental rule, one pattern at a time, zero diagonal throughout.

    W^nu = W^{nu-1} + (1/N) [xi_i xi_j - xi_i h_ji - h_ij xi_j],  h_ij = sum_{k != i, j} W_ik xi_k.
    With h = W xi (zero diagonal) one has h_ij = h_i - W_ij xi_j, so the update is
    (1/N) [xi xi^T - xi h^T - h xi^T + 2 W].
    """
    n_units = patterns.shape[1]
    weights = torch.zeros(n_units, n_units, dtype=patterns.dtype, device=patterns.device)
    for xi in patterns:
        h = weights @ xi  # (N,)
        weights = weights + (torch.outer(xi, xi) - torch.outer(xi, h) - torch.outer(h, xi) + 2 * weights) / n_units
        weights.fill_diagonal_(0.0)
    return weights


def pseudo_inverse_weights(patterns: torch.Tensor, zero_diagonal: bool = True) -> torch.Tensor:
    """W = X^+ X, the projection onto the span of the patterns (Personnaz, Guyon & Dreyfus 1985).

    Every linearly independent pattern satisfies W xi = xi, so it is a fixed point for any P < N
    (removing the diagonal scales the field of unit i by 1 - W_ii > 0 and keeps its sign).
    """
    weights = torch.linalg.pinv(patterns) @ patterns  # (N, P) @ (P, N) -> (N, N)
    weights = (weights + weights.T) / 2  # symmetric up to round-off; make it exactly so
    if zero_diagonal:
        weights.fill_diagonal_(0.0)
    return weights


STORAGE_RULES = {"hebbian": hebbian_weights, "storkey": storkey_weights, "pseudo_inverse": pseudo_inverse_weights}


# ---------------------------------------------------------------------------------------------
# Fields and overlaps (the energy is ``common.boltzmann.boltzmann_energy(W, b, x)``)
# ---------------------------------------------------------------------------------------------


def overlaps(states: torch.Tensor, patterns: torch.Tensor) -> torch.Tensor:
    """m_mu = (1/N) x . xi_mu, in [-1, 1]; returns ``(B, P)``."""
    return states @ patterns.T / patterns.shape[1]


def tie_tolerance(weights: torch.Tensor) -> float:
    """Fields with |h_i| at most this count as exactly zero (a tie: the unit keeps its state).

    h_i is a sum of N terms, so round-off (which depends on the order of summation, hence on the
    batch size) would otherwise decide ties; Hebbian fields are multiples of 1/N and hit 0 often.
    The tolerance is (1e-5 in float32, 1e-10 in float64) x max_i sum_j |W_ij|, far below 1/N.
    """
    scale = float(weights.abs().sum(-1).max()) if weights.numel() else 0.0
    return (1e-10 if weights.dtype == torch.float64 else 1e-5) * scale


def is_fixed_point(weights: torch.Tensor, states: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """True for each state ``(B, N)`` that no asynchronous update changes: x_i h_i >= 0 for all i.

    (A field within ``tie_tolerance`` of zero counts as zero, as in the dynamics.)
    """
    field = states @ weights  # (B, N); W symmetric
    if bias is not None:
        field = field + bias
    return (states * field >= -tie_tolerance(weights)).all(1)


def flip_bits(states: torch.Tensor, fraction: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Flip exactly round(fraction * N) randomly chosen units of every state (a noisy cue)."""
    n_batch, n_units = states.shape
    n_flip = int(round(fraction * n_units))
    order = torch.rand(n_batch, n_units, generator=generator).argsort(1)[:, :n_flip]  # (B, n_flip)
    sign = torch.ones(n_batch, n_units, dtype=states.dtype)
    sign.scatter_(1, order, -1.0)
    return states * sign.to(states.device)


# ---------------------------------------------------------------------------------------------
# Deterministic dynamics
# ---------------------------------------------------------------------------------------------


@dataclass
class Recall:
    """The outcome of running the dynamics on a batch of cues."""

    states: torch.Tensor  # (B, N) final states
    steps: torch.Tensor  # (B,) sweeps (async) or steps (sync) until the state stopped changing
    converged: torch.Tensor  # (B,) True if a fixed point (async) / fixed point or 2-cycle (sync) was reached
    energies: torch.Tensor | None = None  # (T + 1, B): E after every single-unit update (async) or step (sync)
    period: torch.Tensor | None = None  # (B,) sync only: 1 fixed point, 2 two-cycle, 0 neither yet


def _sign_keep_ties(field: torch.Tensor, current: torch.Tensor, tolerance: float) -> torch.Tensor:
    """sign(h), but a unit with |h| <= tolerance (a tie) keeps its current state."""
    return torch.where(field.abs() <= tolerance, current, field.sign())


def async_recall(weights, states, bias=None, generator=None, max_sweeps: int = 100, track_energy: bool = False):
    """Random-sequential asynchronous updates until a whole sweep changes nothing (or ``max_sweeps``).

    ``weights`` ``(N, N)`` with ``states`` ``(B, N)``, or a stack of K networks ``(K, N, N)`` with
    ``states`` ``(K, B, N)`` (K independent networks recalled in one pass: a capacity sweep runs
    all its trials at once). All chains visit the units in the same random order, a fresh order
    each sweep. Between sweeps the chains that have converged are dropped from the batch: a chain
    that went through a whole sweep unchanged is a fixed point and stays one, so this changes the
    cost, not the result. With ``track_energy`` (single network only) every chain's energy is
    recomputed from scratch after every single-unit update, O(B N^2) each, giving ``energies``
    of shape (N * sweeps + 1, B).
    """
    stacked = weights.dim() == 3
    if track_energy and stacked:
        raise ValueError("track_energy needs a single network")
    W = weights if stacked else weights.unsqueeze(0)  # (K, N, N)
    tol = tie_tolerance(weights)
    x = (states if stacked else states.unsqueeze(0)).transpose(1, 2).clone()  # (K, N, B), unit-major
    n_nets, n_units, n_batch = x.shape
    steps = torch.zeros(n_nets, n_batch, dtype=torch.long, device=x.device)
    converged = torch.zeros(n_nets, n_batch, dtype=torch.bool, device=x.device)
    trace = [boltzmann_energy(weights, bias, states)] if track_energy else None
    for _ in range(max_sweeps):
        n_active = (~converged).sum(1)  # (K,)
        if int(n_active.max()) == 0:
            break
        width = n_batch if track_energy else int(n_active.max())
        # the not-yet-converged chains of each network first (a permutation, so no index repeats);
        # the padding columns are converged chains, which no update changes
        index = torch.argsort(converged.to(torch.int8), dim=1, stable=True)[:, :width]  # (K, width)
        if track_energy:
            index = torch.arange(n_batch, device=x.device)[None]
        gather_index = index[:, None, :].expand(n_nets, n_units, width)
        xa = torch.gather(x, 2, gather_index)  # (K, N, width)
        before = xa.clone()
        rows = W.unbind(1)  # rows[i] is (K, N): unit i's incoming weights in every network
        for i in torch.randperm(n_units, generator=generator).tolist():
            # h_i = sum_j W_ij x_j + b_i  for every active chain of every network at once
            field = torch.bmm(rows[i].unsqueeze(1), xa).squeeze(1)  # (K, width)
            if bias is not None:
                field = field + bias[i]
            xa[:, i] = torch.where(field.abs() <= tol, xa[:, i], field.sign())  # a tie keeps x_i
            if track_energy:
                trace.append(boltzmann_energy(weights, bias, xa[0].T))
        x.scatter_(2, gather_index, xa)
        real = torch.arange(width, device=x.device)[None] < n_active[:, None]  # (K, width), not padding
        if track_energy:
            real = ~converged
        unchanged = ~(xa != before).any(1)  # (K, width)
        steps.scatter_add_(1, index.expand(n_nets, width), real.long())
        converged.scatter_(1, index.expand(n_nets, width), converged.gather(1, index.expand(n_nets, width))
                           | (real & unchanged))
    final = x.transpose(1, 2).contiguous()
    if not stacked:
        final, steps, converged = final[0], steps[0], converged[0]
    energies = torch.stack(trace) if track_energy else None
    return Recall(final, steps, converged, energies)


def sync_recall(weights, states, bias=None, max_steps: int = 100):
    """Synchronous updates x <- sign(W x + b) of all units at once, until a fixed point or a 2-cycle.

    With symmetric W these are the only possible limits (Goles 1985): the quantity
    L(t) = -x(t)^T W x(t-1) - b^T (x(t) + x(t-1)) never increases, but E itself may oscillate.
    """
    tol = tie_tolerance(weights)
    previous, current = None, states.clone()
    n_batch = states.shape[0]
    period = torch.zeros(n_batch, dtype=torch.long, device=states.device)
    steps = torch.zeros(n_batch, dtype=torch.long, device=states.device)
    trace = [boltzmann_energy(weights, bias, current)]
    for _ in range(max_steps):
        field = current @ weights + (0 if bias is None else bias)  # (B, N)
        new = _sign_keep_ties(field, current, tol)
        open_ = period == 0
        fixed = (new == current).all(1) & open_
        cycle = (new == previous).all(1) & open_ & ~fixed if previous is not None else torch.zeros_like(fixed)
        period[fixed], period[cycle] = 1, 2
        steps += open_.long()
        previous, current = current, new
        trace.append(boltzmann_energy(weights, bias, current))
        if bool((period > 0).all()):
            break
    return Recall(current, steps, period > 0, torch.stack(trace), period)


# ---------------------------------------------------------------------------------------------
# Stochastic dynamics
# ---------------------------------------------------------------------------------------------


def glauber_sweep(weights, states, temperature, bias=None, generator=None) -> torch.Tensor:
    """One random-order sweep of Glauber (heat-bath) updates at temperature T > 0.

    p(x_i = +1 | rest) = sigmoid(2 h_i / T); ``temperature`` is a float or a ``(B,)`` tensor (one per
    chain). Leaves p(x) proportional to exp(-E(x) / T) invariant; as T -> 0 it becomes x_i <- sign(h_i).
    """
    x = states.T.clone()  # (N, B)
    n_units, n_batch = x.shape
    b = torch.zeros(n_units, dtype=x.dtype, device=x.device) if bias is None else bias
    temperature = torch.as_tensor(temperature, dtype=x.dtype, device=x.device)
    uniforms = torch.rand(n_units, n_batch, generator=generator, dtype=x.dtype).to(x.device)
    for i in torch.randperm(n_units, generator=generator).tolist():
        field = weights[i] @ x + b[i]  # (B,)
        # p(x_i = +1) = sigmoid(2 h_i / T)
        p_up = torch.sigmoid(2 * field / temperature)
        x[i] = torch.where(uniforms[i] < p_up, 1.0, -1.0).to(x.dtype)
    return x.T.contiguous()


# ---------------------------------------------------------------------------------------------
# Modern (dense) Hopfield network
# ---------------------------------------------------------------------------------------------


def modern_energy(patterns: torch.Tensor, states: torch.Tensor, beta: float) -> torch.Tensor:
    """E(xi) = -1/beta lse(beta X xi) + 1/2 xi.xi + 1/beta log P + 1/2 M^2  (Ramsauer et al. 2020, eq. 2).

    M is the largest pattern norm; the two constants make E >= 0. Returns ``(B,)``.
    """
    n_patterns = patterns.shape[0]
    max_norm_sq = (patterns**2).sum(1).max()
    lse = torch.logsumexp(beta * states @ patterns.T, dim=1) / beta  # (B,)
    return -lse + 0.5 * (states**2).sum(1) + torch.log(torch.tensor(float(n_patterns))) / beta + 0.5 * max_norm_sq


def modern_update(patterns: torch.Tensor, states: torch.Tensor, beta: float) -> torch.Tensor:
    """xi <- X^T softmax(beta X xi) for a batch: softmax(beta S X^T) X, i.e. attention(Q=S, K=V=X)."""
    attention = torch.softmax(beta * states @ patterns.T, dim=1)  # (B, P)
    return attention @ patterns  # (B, N)
