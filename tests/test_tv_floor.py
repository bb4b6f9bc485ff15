"""Lesson 03 grades its samplers by "final TV below 1.1 x the i.i.d. floor": that line must be able to fail.

The lesson's machine has 12 units (weights ~ N(0, 1), biases shifted so "on" and "off" are balanced) and its
Gibbs and Metropolis histograms pool 256 chains x 1,950 kept sweeps = 499,200 draws. At that number of draws,
on two machines built the lesson's way, perfect i.i.d. draws must stay under the line and four samplers that
are wrong in known ways must land above it: one that never visits the most probable state, one that samples
5 % too hot (wrong weights everywhere), one that never leaves the half of the states its start is in (a
missed mode), and one whose draws come in identical pairs (a correct but correlated chain, tau = 2: TV grows
like sqrt(tau) times the floor).
"""

import pytest
import torch

from common.boltzmann import all_binary_states, boltzmann_energy, exact_distribution
from common.diagnostics import expected_tv_iid, total_variation

N_UNITS, N_DRAWS, LINE = 12, 256 * 1950, 1.1


def lesson_machine(seed):
    """W symmetric, W_ij ~ N(0, 1), zero diagonal; b_i ~ N(0, 0.5^2) - 1/2 sum_j W_ij (as lesson 03 builds it)."""
    gen = torch.Generator().manual_seed(seed)
    upper = torch.randn(N_UNITS, N_UNITS, generator=gen, dtype=torch.float64).triu(1)
    weights = upper + upper.T
    bias = 0.5 * torch.randn(N_UNITS, generator=gen, dtype=torch.float64) - 0.5 * weights.sum(1)
    return weights, bias


def tv_over_floor(q, p, gen, repeat=1):
    """TV(histogram of N_DRAWS draws from q, p) / E[TV] of N_DRAWS i.i.d. draws from p; each draw ``repeat`` times."""
    draws = torch.multinomial(q, N_DRAWS // repeat, replacement=True, generator=gen).repeat_interleave(repeat)
    counts = torch.bincount(draws, minlength=len(p)).double()
    return total_variation(counts / counts.sum(), p) / expected_tv_iid(p, N_DRAWS)


@pytest.fixture(scope="module", params=[0, 1], ids=["machine 0", "machine 1"])
def machine(request):
    weights, bias = lesson_machine(request.param)
    p = exact_distribution(lambda s: boltzmann_energy(weights, bias, s), N_UNITS)
    return weights, bias, p, torch.Generator().manual_seed(100 + request.param)


def test_perfect_draws_stay_under_the_line(machine):
    _, _, p, gen = machine
    ratios = [tv_over_floor(p, p, gen) for _ in range(5)]
    assert max(ratios) < LINE, ratios  # measured 1.03-1.04 at most over 10 repeats on three machines


def test_a_sampler_that_never_visits_the_most_probable_state_fails(machine):
    _, _, p, gen = machine
    q = p.clone()
    q[p.argmax()] = 0.0
    assert tv_over_floor(q / q.sum(), p, gen) > 1.5 * LINE


def test_a_sampler_five_percent_too_hot_fails(machine):
    weights, bias, p, gen = machine
    hot = exact_distribution(lambda s: boltzmann_energy(weights, bias, s), N_UNITS, temperature=1.05)
    assert tv_over_floor(hot, p, gen) > 1.5 * LINE


def test_a_chain_stuck_in_half_the_states_fails(machine):
    _, _, p, gen = machine
    states = all_binary_states(N_UNITS, dtype=torch.float64)
    half = p * (states[:, 0] == states[p.argmax(), 0])  # never flips unit 0 away from the top state's value
    assert tv_over_floor(half / half.sum(), p, gen) > 5 * LINE


def test_correlated_draws_sit_sqrt_tau_above_the_floor(machine):
    _, _, p, gen = machine
    ratio = tv_over_floor(p, p, gen, repeat=2)
    assert LINE < ratio < 1.6  # sqrt(2) = 1.41: a correct chain with tau = 2 fails the line too
