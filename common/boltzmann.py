"""Fully connected Boltzmann machines small enough to solve exactly (lesson 03).

E(s) = -1/2 s^T W s - b^T s  (W symmetric, zero diagonal), units in {0,1} or spins in {-1,+1}.
When the last ``n_hidden`` units are hidden, the visible marginal is p(v) = sum_h exp(-E(v, h)) / Z.

- data: bars-and-stripes images, optionally with a parity rule that pairwise statistics cannot see;
- machines: a random frustrated spin glass (Sherrington-Kirkpatrick couplings);
- exhaustive search: every state's energy in chunks (2^20 states in about a second), the ground state;
- simulated annealing with a cooling schedule (geometric, linear, logarithmic, quench);
- learning (Hinton & Sejnowski 1986): the exact gradient <s_i s_j>_data - <s_i s_j>_model, with or
  without hidden units, and KL(data || model), all by enumeration;
- the noise floor of a histogram: the exact expected total variation of n i.i.d. draws.

This module is the one home of the binary-unit ideas every discrete lesson shares:
- the energy ``boltzmann_energy`` (the Hopfield energy is the same function, used by ``common.hopfield``);
- the single-site samplers ``gibbs_sweep`` and ``metropolis_sweep``;
- the one bit enumerator ``all_binary_states`` (any slice, any dtype/device) and what is built on it:
  ``state_index``, ``exact_log_partition``, ``exact_distribution``, ``empirical_distribution``.
"""

from __future__ import annotations

import functools
import itertools
import math

import numpy as np
import torch

# ---------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------


def bars_and_stripes(size: int = 3, parity: str = "any") -> torch.Tensor:
    """Every ``size x size`` image whose rows are all constant (bars) or columns all constant (stripes).

    ``parity="even"`` keeps only images with an even number of lit lines (``"odd"``: odd). There are
    2^(size+1) - 2 images for ``"any"`` (all-off and all-on are both a bar and a stripe image).
    The parity rule is a third-order constraint: it changes no pixel mean and no pairwise correlation
    between different lines, so a machine with only pairwise weights between visible units cannot
    learn it. Returns ``(N, size*size)`` float32 rows in ``all_binary_states`` order.
    """
    if parity not in ("any", "even", "odd"):
        raise ValueError(f"parity must be any, even or odd (got {parity!r})")
    images = set()
    for lines in itertools.product((0, 1), repeat=size):
        if parity != "any" and sum(lines) % 2 != (0 if parity == "even" else 1):
            continue
        lines = np.array(lines)
        images.add(tuple(np.repeat(lines, size)))  # bars: row r is all lines[r]
        images.add(tuple(np.tile(lines, size)))  # stripes: column c is all lines[c]
    return torch.tensor(sorted(images), dtype=torch.float32)  # lexicographic = counting order


# ---------------------------------------------------------------------------------------------
# Enumeration: every state of a small binary model
# ---------------------------------------------------------------------------------------------


def all_binary_states(n: int, spins: bool = False, dtype=torch.float32, *, start: int = 0, stop: int | None = None,
                      device=None) -> torch.Tensor:
    """States ``start .. stop-1`` of all 2^n binary states, in counting order (unit 0 is the high bit).

    Row k holds the bits of k: row 5 of n = 3 is (1, 0, 1). By default all 2^n rows; a slice is made
    without building the others, so exhaustive search over 2^20-2^26 states runs in chunks.
    ``spins=True`` gives -1/+1 instead of 0/1. Returns ``(stop - start, n)``.
    """
    stop = 2**n if stop is None else stop
    if stop - start > 2**24:
        raise ValueError(f"{stop - start} states is too many to build at once (use start/stop chunks)")
    index = torch.arange(start, stop, dtype=torch.int64, device=device)
    shifts = torch.arange(n - 1, -1, -1, dtype=torch.int64, device=device)
    # bit j of the row number, read from the high bit down
    bits = ((index[:, None] >> shifts) & 1).to(dtype)  # (stop - start, n)
    return 2 * bits - 1 if spins else bits


def state_index(states: torch.Tensor) -> torch.Tensor:
    """The row of ``all_binary_states`` that each state ``(B, n)`` (0/1 or +-1) is."""
    bits = (states > 0).long()
    powers = 2 ** torch.arange(states.shape[1] - 1, -1, -1, device=states.device)
    return (bits * powers).sum(1)


def exact_log_partition(energy_fn, n: int, spins: bool = False, temperature: float = 1.0,
                        chunk: int = 65536) -> float:
    """log Z = log sum_s exp(-E(s)/T) over all 2^n states, by enumeration (in chunks)."""
    states = all_binary_states(n, spins, dtype=torch.float64)
    logs = [torch.logsumexp(-energy_fn(block) / temperature, dim=0) for block in states.split(chunk)]
    return float(torch.logsumexp(torch.stack(logs), dim=0))


def exact_distribution(energy_fn, n: int, spins: bool = False, temperature: float = 1.0) -> torch.Tensor:
    """p(s) = exp(-E(s)/T) / Z for every state, in ``all_binary_states`` order."""
    states = all_binary_states(n, spins, dtype=torch.float64)
    return torch.softmax(-energy_fn(states) / temperature, dim=0)


def empirical_distribution(states: torch.Tensor) -> torch.Tensor:
    """Frequencies of the visited states ``(B, n)``, in ``all_binary_states`` order."""
    counts = torch.bincount(state_index(states), minlength=2 ** states.shape[1])
    return counts.double() / counts.sum()


# ---------------------------------------------------------------------------------------------
# Energy and single-site samplers
# ---------------------------------------------------------------------------------------------


def boltzmann_energy(weights: torch.Tensor, bias: torch.Tensor | None, state: torch.Tensor) -> torch.Tensor:
    """E(s) = -1/2 s^T W s - b^T s for a batch of states ``(B, n)``; returns ``(B,)``.

    The same energy serves Boltzmann machines ({0,1} units) and Hopfield networks (+-1 units);
    ``bias=None`` means b = 0.
    """
    value = -0.5 * ((state @ weights) * state).sum(1)
    return value if bias is None else value - state @ bias


def _rand(n: int, like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    return torch.rand(n, generator=generator, dtype=like.dtype, device=like.device)


def gibbs_sweep(
    weights: torch.Tensor,
    bias: torch.Tensor,
    state: torch.Tensor,
    temperature: float = 1.0,
    spins: bool = False,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """One systematic-scan single-site Gibbs sweep of a fully connected Boltzmann machine.

    E(s) = -1/2 s^T W s - b^T s  (W symmetric, zero diagonal); for each unit i in turn,
    {0,1} units:  p(s_i = 1 | rest) = sigmoid((W_i . s + b_i) / T)
    +-1 spins:    p(s_i = +1 | rest) = sigmoid(2 (W_i . s + b_i) / T)
    ``state`` is ``(B, n)``; a new tensor is returned.
    """
    state = state.clone()
    for i in range(state.shape[1]):
        field = state @ weights[i] + bias[i]  # (B,)
        p_on = torch.sigmoid((2.0 if spins else 1.0) * field / temperature)
        on = _rand(len(state), p_on, generator) < p_on
        off_value = -1.0 if spins else 0.0
        state[:, i] = torch.where(on, torch.ones_like(p_on), torch.full_like(p_on, off_value))
    return state


def metropolis_sweep(
    weights: torch.Tensor,
    bias: torch.Tensor,
    state: torch.Tensor,
    temperature: float = 1.0,
    spins: bool = False,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, float]:
    """One sweep of single-site Metropolis: propose flipping unit i, accept with min(1, e^{-dE/T}).

    Returns ``(state, acceptance_rate)``. Compare with Gibbs: same target, different kernel.
    """
    state = state.clone()
    accepted = 0.0
    for i in range(state.shape[1]):
        field = state @ weights[i] + bias[i]
        old = state[:, i]
        new = -old if spins else 1.0 - old
        # dE = -(new - old) * (W_i . s + b_i)   (W_ii = 0, so the field does not involve s_i)
        delta_energy = -(new - old) * field
        accept = _rand(len(state), field, generator) < torch.exp(-delta_energy / temperature).clamp(max=1.0)
        state[:, i] = torch.where(accept, new, old)
        accepted += float(accept.float().mean())
    return state, accepted / state.shape[1]


# ---------------------------------------------------------------------------------------------
# Machines and exhaustive search
# ---------------------------------------------------------------------------------------------


def random_spin_glass(n: int, generator: torch.Generator | None = None, field_scale: float = 0.0,
                      dtype=torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    """Sherrington-Kirkpatrick spin glass on +-1 spins: J_ij ~ N(0, 1/n), fields h_i ~ N(0, field_scale^2).

    E(s) = -sum_{i<j} J_ij s_i s_j - h.s = -1/2 s^T W s - h.s with W = J + J^T. Random signs make it
    frustrated: no state satisfies every bond, so the landscape has many local minima.
    Returns ``(W, h)``. With ``field_scale=0`` every state and its flip -s have the same energy.
    """
    upper = torch.randn(n, n, generator=generator, dtype=dtype).triu(1) / math.sqrt(n)
    field = field_scale * torch.randn(n, generator=generator, dtype=dtype)
    return upper + upper.T, field


@functools.lru_cache(maxsize=8)
def _cached_states(n: int, spins: bool) -> torch.Tensor:
    return all_binary_states(n, spins, dtype=torch.float64)


def all_energies(weights: torch.Tensor, bias: torch.Tensor, spins: bool = False, chunk: int = 2**16) -> torch.Tensor:
    """E(s) for all 2^n states in ``all_binary_states`` order, as float64 ``(2^n,)``, in chunks."""
    n = len(bias)
    if n > 26:
        raise ValueError(f"2^{n} states is too many for exhaustive search")
    weights, bias = weights.double().cpu(), bias.double().cpu()
    out = torch.empty(2**n, dtype=torch.float64)
    for start in range(0, 2**n, chunk):
        stop = min(start + chunk, 2**n)
        states = all_binary_states(n, spins, torch.float64, start=start, stop=stop)  # (stop - start, n)
        out[start:stop] = boltzmann_energy(weights, bias, states)
    return out


def exhaustive_ground_state(weights: torch.Tensor, bias: torch.Tensor, spins: bool = False
                            ) -> tuple[torch.Tensor, float, torch.Tensor]:
    """Brute force: ``(ground state (n,), its energy, all 2^n energies)``.

    With +-1 spins and zero bias the ground state comes in a pair (s, -s); the one returned is the
    first in counting order (unit 0 = -1).
    """
    energies = all_energies(weights, bias, spins)
    best = int(torch.argmin(energies))
    ground = all_binary_states(len(bias), spins, torch.float64, start=best, stop=best + 1)[0]
    return ground, float(energies[best]), energies


# ---------------------------------------------------------------------------------------------
# Simulated annealing
# ---------------------------------------------------------------------------------------------


def cooling_schedule(kind: str, t_start: float, t_end: float, n_steps: int) -> torch.Tensor:
    """Temperatures T_0 .. T_{K-1} of a cooling schedule, float64 ``(n_steps,)``.

    geometric:    T_k = T_0 (T_end / T_0)^(k / (K-1))      the usual practical choice
    linear:       T_k = T_0 + (T_end - T_0) k / (K-1)
    logarithmic:  T_k = max(T_end, T_0 log 2 / log(k + 2))  Geman & Geman's schedule, which provably
                  finds the ground state for a large enough T_0 but needs astronomically many steps:
                  it is still far above T_end after any affordable K
    quench:       T_k = T_end                              no annealing at all
    """
    if n_steps < 1 or t_start <= 0 or t_end <= 0:
        raise ValueError("need n_steps >= 1 and positive temperatures")
    k = torch.arange(n_steps, dtype=torch.float64)
    fraction = k / max(n_steps - 1, 1)
    if kind == "geometric":
        return t_start * (t_end / t_start) ** fraction
    if kind == "linear":
        return t_start + (t_end - t_start) * fraction
    if kind == "logarithmic":
        return (t_start * math.log(2) / torch.log(k + 2)).clamp(min=t_end)
    if kind == "quench":
        return torch.full((n_steps,), float(t_end), dtype=torch.float64)
    raise ValueError(f"unknown schedule {kind!r} (geometric, linear, logarithmic, quench)")


def simulated_annealing(weights: torch.Tensor, bias: torch.Tensor, temperatures, n_chains: int = 1,
                        spins: bool = False, generator: torch.Generator | None = None,
                        init: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Simulated annealing (Kirkpatrick et al. 1983): one Gibbs sweep at each temperature in turn.

    At high T the chains wander freely; as T falls they settle into ever deeper minima. Each of the
    ``n_chains`` independent runs starts from a uniformly random state (or ``init``) and remembers the
    lowest-energy state it visited. Returns a dict: ``state`` ``(n_chains, n)`` and ``energy``
    ``(n_chains,)`` of the best visited states, and ``trace`` ``(K, n_chains)``, the energy after each sweep.
    """
    n = len(bias)
    if init is None:
        init = (torch.rand(n_chains, n, generator=generator, dtype=weights.dtype) < 0.5).to(weights.dtype)
        init = 2 * init - 1 if spins else init
    state = init.clone()
    best_state, best_energy = state.clone(), boltzmann_energy(weights, bias, state)
    trace = []
    for temperature in temperatures:
        state = gibbs_sweep(weights, bias, state, float(temperature), spins=spins, generator=generator)
        energy = boltzmann_energy(weights, bias, state)  # (n_chains,)
        better = energy < best_energy
        best_state[better] = state[better]
        best_energy = torch.where(better, energy, best_energy)
        trace.append(energy)
    return {"state": best_state, "energy": best_energy, "trace": torch.stack(trace)}


# ---------------------------------------------------------------------------------------------
# Learning by enumeration (Hinton & Sejnowski 1986)
# ---------------------------------------------------------------------------------------------


def exact_gradient(weights: torch.Tensor, bias: torch.Tensor, data: torch.Tensor, n_hidden: int = 0
                   ) -> dict[str, torch.Tensor | float]:
    """Gradient of the mean log-likelihood (1/N) sum_d log p(v_d) of {0,1} data, by enumeration.

    dL/dW_ij = <s_i s_j>_data - <s_i s_j>_model,   dL/db_i = <s_i>_data - <s_i>_model
    The units are ordered visible first, then the ``n_hidden`` hidden ones. In the data ("clamped")
    phase the visible units are fixed to each data vector and the hidden ones follow p(h | v_d); in
    the model ("free") phase every unit follows p(s). Both are exact sums over all 2^n states, so
    keep n = n_visible + n_hidden below ~20. Returns a dict with ``W`` (zero diagonal), ``b``, and
    ``log_likelihood``, the mean log p(v_d) at the current parameters.
    """
    n, n_visible = len(bias), data.shape[1]
    if n_visible + n_hidden != n:
        raise ValueError(f"data has {n_visible} columns but the machine has {n} = n_visible + {n_hidden} units")
    states = _cached_states(n, False).to(weights.device)  # (2^n, n)
    energy = boltzmann_energy(weights.double(), bias.double(), states)
    log_p = -energy - torch.logsumexp(-energy, 0)  # (2^n,)
    log_p_vh = log_p.view(2**n_visible, 2**n_hidden)[state_index(data)]  # (N, 2^nh): log p(v_d, h)
    clamped = torch.softmax(log_p_vh, 1).reshape(-1) / len(data)  # (N 2^nh,): p(h | v_d) / N
    clamped_states = states.view(2**n_visible, 2**n_hidden, n)[state_index(data)].reshape(-1, n)
    free = log_p.exp()
    # <s s^T>_data - <s s^T>_model, each a weighted sum of outer products
    grad_w = clamped_states.T @ (clamped[:, None] * clamped_states) - states.T @ (free[:, None] * states)
    grad_w.fill_diagonal_(0.0)
    grad_b = clamped @ clamped_states - free @ states
    log_likelihood = float(torch.logsumexp(log_p_vh, 1).mean())
    return {"W": grad_w.to(weights.dtype), "b": grad_b.to(bias.dtype), "log_likelihood": log_likelihood}


def visible_log_probs(weights: torch.Tensor, bias: torch.Tensor, n_hidden: int = 0) -> torch.Tensor:
    """log p(v) for all 2^n_visible visible states (hidden units summed out), in counting order."""
    n = len(bias)
    log_p = -all_energies(weights, bias)
    log_p = log_p - torch.logsumexp(log_p, 0)
    return torch.logsumexp(log_p.view(2 ** (n - n_hidden), 2**n_hidden), 1)


def kl_data_model(weights: torch.Tensor, bias: torch.Tensor, data: torch.Tensor, n_hidden: int = 0) -> float:
    """KL(p_data || p_model) = sum_v p_data(v) log(p_data(v) / p_model(v)) in nats, p_data = data histogram.

    Zero only if the machine reproduces the data frequencies exactly; for N distinct data vectors,
    KL = -log N - mean_d log p_model(v_d).
    """
    log_p_model = visible_log_probs(weights, bias, n_hidden)
    counts = torch.bincount(state_index(data), minlength=len(log_p_model)).double()
    p_data = counts / counts.sum()
    seen = p_data > 0
    return float((p_data[seen] * (p_data[seen].log() - log_p_model[seen])).sum())
