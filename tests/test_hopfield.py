"""common/hopfield.py against answers known independently: hand computations, the definitions in
the original papers written out as plain loops, exact enumeration of small networks, and exact
integer arithmetic."""

import math

import pytest
import torch
from scipy.stats import chisquare

from common.boltzmann import boltzmann_energy, exact_distribution, state_index
from common.hopfield import (
    async_recall,
    flip_bits,
    glauber_sweep,
    hebbian_weights,
    is_fixed_point,
    modern_energy,
    modern_update,
    overlaps,
    pseudo_inverse_weights,
    storkey_weights,
    sync_recall,
)

# Three orthogonal patterns (rows of a 4x4 Hadamard matrix) used by the hand computations.
HAND_PATTERNS = torch.tensor([[1, 1, 1, 1], [1, -1, 1, -1], [1, 1, -1, -1]], dtype=torch.float64)
# W_ij = (1/4) sum_mu xi_i^mu xi_j^mu, computed by hand: e.g. W_12 = (1 - 1 + 1)/4, W_14 = (1 - 1 - 1)/4
HAND_WEIGHTS = torch.tensor(
    [[0.0, 0.25, 0.25, -0.25], [0.25, 0.0, -0.25, 0.25], [0.25, -0.25, 0.0, 0.25], [-0.25, 0.25, 0.25, 0.0]],
    dtype=torch.float64,
)


def random_spins(shape, generator, dtype=torch.float64):
    return torch.randint(0, 2, shape, generator=generator).to(dtype) * 2 - 1


def test_hebbian_weights_match_hand_computed_outer_products():
    torch.testing.assert_close(hebbian_weights(HAND_PATTERNS), HAND_WEIGHTS, rtol=0, atol=1e-15)


def test_energy_of_known_states_by_hand():
    bias = torch.tensor([1.0, 0.0, 0.0, -2.0], dtype=torch.float64)
    states = torch.tensor([[1, 1, 1, 1], [1, -1, 1, 1]], dtype=torch.float64)
    # x = (1,1,1,1):  -1/2 sum_{i != j} W_ij = -1/2 * 2 * 0.5 = -0.5;  -b.x = -(1 - 2) = +1  ->  0.5
    # x = (1,-1,1,1): the six pair terms x_i x_j W_ij sum to 0;          -b.x = -(1 - 2) = +1  ->  1.0
    expected = torch.tensor([0.5, 1.0], dtype=torch.float64)
    torch.testing.assert_close(boltzmann_energy(HAND_WEIGHTS, bias, states), expected, rtol=0, atol=1e-15)


def test_async_updates_never_raise_energy_exact_integer_arithmetic():
    # Integer symmetric W and integer b: every energy is an integer, exact in float64, so the
    # check "E never increases" needs no tolerance at all.
    gen = torch.Generator().manual_seed(1)
    n = 12
    upper = torch.randint(-5, 6, (n, n), generator=gen).double().triu(1)
    W = upper + upper.T  # symmetric, zero diagonal
    bias = torch.randint(-3, 4, (n,), generator=gen).double()
    states = random_spins((64, n), gen)
    result = async_recall(W, states, bias=bias, generator=gen, max_sweeps=100, track_energy=True)
    steps = result.energies.diff(dim=0)
    assert torch.all(steps <= 0), f"energy rose by {steps.max()}"
    assert torch.equal(result.energies, result.energies.round())  # really exact integers
    assert result.converged.all()
    assert is_fixed_point(W, result.states, bias).all()


def test_single_pattern_and_its_negation_are_fixed_points_and_attract():
    gen = torch.Generator().manual_seed(2)
    xi = random_spins((1, 50), gen)
    W = hebbian_weights(xi)
    assert is_fixed_point(W, xi).all() and is_fixed_point(W, -xi).all()
    # h = W x = xi (xi.x - 1)/N ... any cue with overlap > 1/N is pulled to xi in one sweep
    cue = flip_bits(xi.repeat(10, 1), 0.3, gen)
    result = async_recall(W, cue, generator=gen)
    assert torch.equal(result.states, xi.repeat(10, 1))


def test_flip_bits_flips_exactly_the_requested_number():
    gen = torch.Generator().manual_seed(3)
    x = random_spins((20, 40), gen)
    y = flip_bits(x, 0.25, gen)
    assert torch.equal((x != y).sum(1), torch.full((20,), 10))


def test_pseudo_inverse_stores_correlated_independent_patterns_exactly():
    gen = torch.Generator().manual_seed(4)
    n, p = 40, 30
    # strongly biased (correlated) patterns: 80% of the units +1; Hebbian storage fails on these
    patterns = torch.where(torch.rand(p, n, generator=gen) < 0.8, 1.0, -1.0).double()
    assert torch.linalg.matrix_rank(patterns) == p  # linearly independent
    full = pseudo_inverse_weights(patterns, zero_diagonal=False)
    torch.testing.assert_close(patterns @ full, patterns, rtol=0, atol=1e-9)  # W xi = xi (projection)
    torch.testing.assert_close(full @ full, full, rtol=0, atol=1e-9)  # idempotent
    assert is_fixed_point(pseudo_inverse_weights(patterns), patterns).all()
    assert not is_fixed_point(hebbian_weights(patterns), patterns).all()


def test_storkey_matches_the_papers_formula_written_as_loops():
    # Storkey (1997): w_ij^nu = w_ij^{nu-1} + (1/n) xi_i xi_j - (1/n) xi_i h_ji - (1/n) h_ij xi_j,
    # h_ij = sum_{k != i, j} w_ik^{nu-1} xi_k, for i != j (no self-connections).
    gen = torch.Generator().manual_seed(5)
    n, p = 7, 4
    patterns = random_spins((p, n), gen)
    w = [[0.0] * n for _ in range(n)]
    for xi in patterns.tolist():

        def h(i, j, w=w, xi=xi):
            return sum(w[i][k] * xi[k] for k in range(n) if k not in (i, j))

        new = [[0.0] * n for _ in range(n)]
        for i in range(n):
            for j in range(n):
                if i != j:
                    new[i][j] = w[i][j] + (xi[i] * xi[j] - xi[i] * h(j, i) - h(i, j) * xi[j]) / n
        w = new
    torch.testing.assert_close(storkey_weights(patterns), torch.tensor(w, dtype=torch.float64), rtol=0, atol=1e-12)


def test_sync_two_unit_example_is_a_two_cycle_async_is_not():
    W = torch.tensor([[0.0, 1.0], [1.0, 0.0]], dtype=torch.float64)
    start = torch.tensor([[1.0, -1.0]], dtype=torch.float64)
    sync = sync_recall(W, start, max_steps=10)
    assert int(sync.period[0]) == 2  # (+1,-1) -> (-1,+1) -> (+1,-1)
    torch.testing.assert_close(sync.energies[:, 0], torch.ones(len(sync.energies), dtype=torch.float64))
    result = async_recall(W, start, generator=torch.Generator().manual_seed(0))
    assert float(boltzmann_energy(W, None, result.states)[0]) == -1.0  # (+1,+1) or (-1,-1)
    assert abs(float(result.states.sum())) == 2.0


def test_async_batch_compaction_does_not_change_the_result():
    # track_energy=True keeps every chain in the batch; False drops converged ones between sweeps.
    gen = torch.Generator().manual_seed(6)
    patterns = random_spins((12, 60), gen)
    W = hebbian_weights(patterns)
    cues = flip_bits(patterns.repeat(3, 1), 0.3, gen)
    a = async_recall(W, cues, generator=torch.Generator().manual_seed(7), track_energy=True)
    b = async_recall(W, cues, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a.states, b.states) and torch.equal(a.steps, b.steps)


def test_stacked_networks_each_reach_their_own_fixed_points():
    gen = torch.Generator().manual_seed(8)
    patterns = random_spins((3, 15, 80), gen)  # 3 networks, 15 patterns each (alpha ~ 0.19)
    W = torch.stack([hebbian_weights(x) for x in patterns])
    result = async_recall(W, flip_bits(patterns.reshape(-1, 80), 0.1, gen).reshape(3, 15, 80), generator=gen)
    assert result.states.shape == (3, 15, 80) and result.converged.all()
    for k in range(3):
        assert is_fixed_point(W[k], result.states[k]).all()


def test_glauber_samples_the_boltzmann_distribution_exactly_enumerated():
    # 4 spins, two temperatures in one batch; compare visited-state counts with exp(-E/T)/Z
    # by enumeration of all 16 states. Chains are independent and run 40 sweeps from random
    # starts (the 4-spin chain forgets its start in a few sweeps), so the counts are multinomial:
    # a chi-square test with 15 degrees of freedom, p > 0.001 at this fixed seed.
    gen = torch.Generator().manual_seed(9)
    n, chains = 4, 4000
    upper = (torch.randn(n, n, generator=gen, dtype=torch.float64) * 0.7).triu(1)
    W, bias = upper + upper.T, torch.randn(n, generator=gen, dtype=torch.float64) * 0.3
    temps = torch.tensor([0.7, 2.0], dtype=torch.float64).repeat_interleave(chains)
    state = random_spins((2 * chains, n), gen)
    for _ in range(40):
        state = glauber_sweep(W, state, temps, bias=bias, generator=gen)
    for t, T in enumerate((0.7, 2.0)):
        p = exact_distribution(lambda s: boltzmann_energy(W, bias, s), n, spins=True, temperature=T)
        counts = torch.bincount(state_index(state[t * chains : (t + 1) * chains]), minlength=2**n).double()
        assert chisquare(counts.numpy(), (p * chains).numpy()).pvalue > 1e-3


def test_modern_update_with_large_beta_returns_the_nearest_pattern():
    gen = torch.Generator().manual_seed(10)
    patterns = random_spins((50, 32), gen)
    cues = flip_bits(patterns[torch.randint(0, 50, (40,), generator=gen)], 0.4, gen)  # far-off cues
    similarity = cues @ patterns.T  # dot products of +-1 vectors: even integers
    top2 = similarity.topk(2, dim=1).values
    clear = top2[:, 0] > top2[:, 1]  # a unique nearest pattern, so the gap is at least 2
    assert clear.sum() >= 20
    # beta * gap >= 10 * 2 = 20 against at most 49 competitors: their total weight < 49 e^-20
    out = modern_update(patterns, cues[clear], beta=10.0)
    torch.testing.assert_close(out, patterns[similarity[clear].argmax(1)], rtol=0, atol=1e-6)


def test_modern_energy_hand_value_and_update_is_a_unit_gradient_step():
    X = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    xi = torch.zeros(1, 2, dtype=torch.float64)
    # E = -lse(0, 0) + 0 + log 2 + 1/2 * 1 = 0.5
    torch.testing.assert_close(modern_energy(X, xi, beta=1.0), torch.tensor([0.5], dtype=torch.float64))
    gen = torch.Generator().manual_seed(11)
    X = random_spins((30, 16), gen)
    xi = torch.randn(5, 16, generator=gen, dtype=torch.float64, requires_grad=True)
    grad = torch.autograd.grad(modern_energy(X, xi, beta=0.3).sum(), xi)[0]
    torch.testing.assert_close(modern_update(X, xi.detach(), 0.3), (xi - grad).detach())


@pytest.mark.parametrize("beta", [0.05, 0.5, 5.0])
def test_modern_update_never_raises_energy(beta):
    # Ramsauer et al. (2020), Theorem 1: the update is a CCCP step, so E decreases monotonically.
    gen = torch.Generator().manual_seed(12)
    X = random_spins((40, 20), gen)
    xi = torch.randn(10, 20, generator=gen, dtype=torch.float64) * 3
    energies = [modern_energy(X, xi, beta)]
    for _ in range(5):
        xi = modern_update(X, xi, beta)
        energies.append(modern_energy(X, xi, beta))
    steps = torch.stack(energies).diff(dim=0)
    assert (steps <= 1e-12).all()
    assert (torch.stack(energies) >= -1e-12).all()  # the constants make E >= 0


def test_overlap_range_and_hebbian_crosstalk_variance():
    # For P random patterns the crosstalk of pattern 1 on unit i is a sum of (N-1)(P-1) independent
    # +-1/N terms: variance (N-1)(P-1)/N^2. With 40 x 30 x 200 = 240,000 samples of xi_i h_i the
    # sample variance has relative standard error sqrt(2/240000) ~ 0.3%; allow 5 SE = 1.5%.
    gen = torch.Generator().manual_seed(13)
    n, p, trials = 200, 30, 40
    values = []
    for _ in range(trials):
        X = random_spins((p, n), gen)
        values.append((X * (X @ hebbian_weights(X))).flatten())
        assert overlaps(X, X).diagonal().eq(1).all()
    v = torch.cat(values)
    expected_var = (n - 1) * (p - 1) / n**2
    assert abs(float(v.mean()) - (n - 1) / n) < 5 * math.sqrt(expected_var / v.numel())
    assert abs(float(v.var()) / expected_var - 1) < 5 * math.sqrt(2 / v.numel())


def test_async_stops_after_the_first_unchanged_sweep():
    # One stored pattern, cue with 30% flipped bits: the first sweep fixes every bit (the field on
    # each unit points to xi whatever the order), the second sweep changes nothing -> 2 sweeps.
    gen = torch.Generator().manual_seed(14)
    xi = random_spins((1, 40), gen)
    cue = flip_bits(xi.repeat(5, 1), 0.3, gen)
    for track in (False, True):
        result = async_recall(hebbian_weights(xi), cue, generator=gen, max_sweeps=50, track_energy=track)
        assert result.steps.eq(2).all()
        if track:
            assert len(result.energies) == 2 * 40 + 1
