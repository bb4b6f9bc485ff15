"""Tests for lesson 03's tools: the binary samplers against enumeration, closed forms for tiny
Boltzmann machines, simulated annealing against brute force, and common/boltzmann.py.

Every reference answer here is computed independently of the code under test: closed forms written
out by hand, itertools loops with explicit Python energies, and the Gibbs/Metropolis transition
matrices built state by state.
"""

import itertools
import math

import numpy as np
import pytest
import torch
from scipy.stats import binom

from common.boltzmann import (
    all_binary_states,
    all_energies,
    bars_and_stripes,
    boltzmann_energy,
    cooling_schedule,
    empirical_distribution,
    exact_distribution,
    exact_gradient,
    exact_log_partition,
    exhaustive_ground_state,
    gibbs_sweep,
    kl_data_model,
    metropolis_sweep,
    random_spin_glass,
    simulated_annealing,
    state_index,
    visible_log_probs,
)
from common.diagnostics import expected_tv_iid, total_variation

DT = torch.float64


def random_machine(n, seed, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    upper = scale * torch.randn(n, n, generator=g, dtype=DT).triu(1)
    return upper + upper.T, 0.5 * torch.randn(n, generator=g, dtype=DT)


def python_energy(W, b, s):
    """E(s) = -sum_{i<j} W_ij s_i s_j - sum_i b_i s_i, written as explicit loops."""
    n = len(s)
    pair = sum(float(W[i, j]) * s[i] * s[j] for i in range(n) for j in range(i + 1, n))
    return -pair - sum(float(b[i]) * s[i] for i in range(n))


# ---------------------------------------------------------------------------------------------
# Closed forms
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("temperature", [1.0, 0.6])
def test_two_spin_ising_closed_form(temperature):
    # E = -J s1 s2 - h1 s1 - h2 s2 on +-1 spins:
    # p(s) = exp((J s1 s2 + h1 s1 + h2 s2)/T) / Z,  Z = 2 e^{J/T} cosh((h1+h2)/T) + 2 e^{-J/T} cosh((h1-h2)/T)
    J, h1, h2 = 0.7, 0.3, -0.5
    W = torch.tensor([[0.0, J], [J, 0.0]], dtype=DT)
    b = torch.tensor([h1, h2], dtype=DT)
    T = temperature
    Z = 2 * math.exp(J / T) * math.cosh((h1 + h2) / T) + 2 * math.exp(-J / T) * math.cosh((h1 - h2) / T)
    by_hand = [math.exp((J * s1 * s2 + h1 * s1 + h2 * s2) / T) / Z for s1 in (-1, 1) for s2 in (-1, 1)]
    p = exact_distribution(lambda s: boltzmann_energy(W, b, s), 2, spins=True, temperature=T)
    assert np.allclose(p.numpy(), by_hand, rtol=1e-12, atol=0)
    assert exact_log_partition(lambda s: boltzmann_energy(W, b, s), 2, spins=True, temperature=T) == \
        pytest.approx(math.log(Z), abs=1e-12)


def test_log_partition_by_hand_three_units():
    # {0,1} units: the 8 terms of Z written out one by one
    w01, w02, w12, b0, b1, b2 = 0.5, -1.2, 0.8, 0.1, -0.4, 0.3
    W = torch.tensor([[0, w01, w02], [w01, 0, w12], [w02, w12, 0]], dtype=DT)
    b = torch.tensor([b0, b1, b2], dtype=DT)
    Z = (1 + math.exp(b0) + math.exp(b1) + math.exp(b2) + math.exp(b0 + b1 + w01) + math.exp(b0 + b2 + w02)
         + math.exp(b1 + b2 + w12) + math.exp(b0 + b1 + b2 + w01 + w02 + w12))
    assert exact_log_partition(lambda s: boltzmann_energy(W, b, s), 3) == pytest.approx(math.log(Z), abs=1e-12)
    # two units: Z = 1 + e^{b0} + e^{b1} + e^{b0 + b1 + w01}
    Z2 = 1 + math.exp(b0) + math.exp(b1) + math.exp(b0 + b1 + w01)
    assert exact_log_partition(lambda s: boltzmann_energy(W[:2, :2], b[:2], s), 2) == \
        pytest.approx(math.log(Z2), abs=1e-12)


# ---------------------------------------------------------------------------------------------
# Samplers against enumeration
# ---------------------------------------------------------------------------------------------


def transition_matrix(W, b, spins, kind):
    """The one-sweep kernel P (row s -> column s') built state by state, units visited 0..n-1."""
    n = len(b)
    states = list(itertools.product((-1, 1) if spins else (0, 1), repeat=n))
    index = {s: k for k, s in enumerate(states)}
    sweep = np.eye(len(states))
    for i in range(n):
        kernel = np.zeros((len(states), len(states)))
        for s in states:
            field = sum(float(W[i, j]) * s[j] for j in range(n) if j != i) + float(b[i])
            on, off = list(s), list(s)
            on[i], off[i] = 1, (-1 if spins else 0)
            if kind == "gibbs":  # p(on | rest) = sigmoid(field) for bits, sigmoid(2 field) for spins
                p_on = 1 / (1 + math.exp(-(2 if spins else 1) * field))
                kernel[index[s], index[tuple(on)]] += p_on
                kernel[index[s], index[tuple(off)]] += 1 - p_on
            else:  # Metropolis: propose the other value, accept with min(1, exp(-dE))
                other = off if s[i] == 1 else on
                accept = min(1.0, math.exp(python_energy(W, b, s) - python_energy(W, b, other)))
                kernel[index[s], index[tuple(other)]] += accept
                kernel[index[s], index[s]] += 1 - accept
        sweep = sweep @ kernel
    return sweep


@pytest.mark.parametrize("kind", ["gibbs", "metropolis"])
@pytest.mark.parametrize("spins", [False, True])
def test_sampler_matches_enumeration(kind, spins):
    n, n_chains, n_sweeps = 4, 20000, 30
    W, b = random_machine(n, seed=1, scale=0.6)
    p = exact_distribution(lambda s: boltzmann_energy(W, b, s), n, spins=spins)
    # The hand-built kernel leaves p invariant; after n_sweeps from the uniform start the chains'
    # law is q_K = u P^K, whose (tiny) distance to p enters the bound below.
    kernel = transition_matrix(W, b, spins, kind)
    assert np.allclose(p.numpy() @ kernel, p.numpy(), atol=1e-12)
    q_k = np.full(2**n, 2.0**-n) @ np.linalg.matrix_power(kernel, n_sweeps)
    mixing_gap = total_variation(q_k, p)
    assert mixing_gap < 1e-3

    g = torch.Generator().manual_seed(0)
    state = (torch.rand(n_chains, n, generator=g, dtype=DT) < 0.5).to(DT)
    state = 2 * state - 1 if spins else state
    for _ in range(n_sweeps):
        if kind == "gibbs":
            state = gibbs_sweep(W, b, state, spins=spins, generator=g)
        else:
            state, _ = metropolis_sweep(W, b, state, spins=spins, generator=g)
    # The final states of independent chains are N i.i.d. draws from q_K, and
    #   TV(p_hat, p) <= TV(p_hat, q_K) + TV(q_K, p).
    # E[TV(p_hat, q_K)] is the i.i.d. noise floor; changing one draw moves TV by at most 1/N, so
    # McDiarmid gives P(TV(p_hat, q_K) > E + t) <= exp(-2 N t^2), and t below makes that 1e-6.
    tv = total_variation(empirical_distribution(state), p)
    bound = expected_tv_iid(q_k, n_chains) + math.sqrt(math.log(1e6) / (2 * n_chains)) + mixing_gap
    assert tv < bound, (tv, bound)
    # Power: the same bound rejects the distribution at T = 2, what a factor-2 slip in the field gives.
    p_hot = exact_distribution(lambda s: boltzmann_energy(W, b, s), n, spins=spins, temperature=2.0)
    assert total_variation(p_hot, p) > 2 * bound


# ---------------------------------------------------------------------------------------------
# Exhaustive search and annealing
# ---------------------------------------------------------------------------------------------


def brute_force(W, b, spins):
    values = (-1, 1) if spins else (0, 1)
    energies = {s: python_energy(W, b, s) for s in itertools.product(values, repeat=len(b))}
    best = min(energies, key=energies.get)
    return best, energies[best], energies


def test_binary_states_match_itertools_order():
    for spins in (False, True):
        reference = torch.tensor(list(itertools.product((0, 1), repeat=5)), dtype=DT)
        reference = 2 * reference - 1 if spins else reference
        assert torch.equal(all_binary_states(5, spins=spins, dtype=DT), reference)
        assert torch.equal(all_binary_states(5, spins, DT, start=7, stop=19), reference[7:19])


def test_the_hopfield_energy_is_the_boltzmann_energy_by_hand():
    # E(x) = -1/2 x^T W x - b^T x; W = [[0, 1], [1, 0]], b = (0.5, 0): x = (1, -1) gives 1 - 0.5 = 0.5
    W = torch.tensor([[0.0, 1.0], [1.0, 0.0]], dtype=DT)
    x = torch.tensor([[1.0, -1.0], [1.0, 1.0]], dtype=DT)
    assert boltzmann_energy(W, torch.tensor([0.5, 0.0], dtype=DT), x).tolist() == [0.5, -1.5]
    assert boltzmann_energy(W, None, x).tolist() == [1.0, -1.0]


def test_all_energies_and_exhaustive_ground_state_match_python_loops():
    W, b = random_machine(6, seed=3)
    for spins in (False, True):
        best, best_energy, energies = brute_force(W, b, spins)
        assert np.allclose(all_energies(W, b, spins, chunk=7).numpy(), list(energies.values()), atol=1e-12)
        state, energy, _ = exhaustive_ground_state(W, b, spins)
        assert energy == pytest.approx(best_energy, abs=1e-12)
        assert tuple(int(v) for v in state) == best


@pytest.mark.parametrize("field_scale", [0.0, 0.3])
def test_annealing_finds_brute_force_ground_state(field_scale):
    g = torch.Generator().manual_seed(4)
    W, h = random_spin_glass(10, g, field_scale=field_scale)
    assert torch.allclose(W, W.T) and torch.all(W.diagonal() == 0)
    best, best_energy, _ = brute_force(W, h, spins=True)
    result = simulated_annealing(W, h, cooling_schedule("geometric", 3.0, 0.05, 200), n_chains=16, spins=True,
                                 generator=g)
    winner = result["state"][result["energy"].argmin()]
    assert float(result["energy"].min()) == pytest.approx(best_energy, abs=1e-9)
    flipped = tuple(-v for v in best)  # with zero field, -s has the same energy as s
    assert tuple(int(v) for v in winner) in ({best, flipped} if field_scale == 0 else {best})
    # bookkeeping: best energies are the energies of the best states, never above the final ones
    assert torch.allclose(result["energy"], boltzmann_energy(W, h, result["state"]))
    assert torch.all(result["energy"] <= result["trace"][-1] + 1e-12)
    assert result["trace"].shape == (200, 16)


def test_cooling_schedules():
    geometric = cooling_schedule("geometric", 4.0, 0.1, 11)
    assert geometric[0] == pytest.approx(4.0) and geometric[-1] == pytest.approx(0.1)
    assert torch.allclose(geometric[1:] / geometric[:-1], torch.full((10,), 0.025 ** 0.1, dtype=DT))
    linear = cooling_schedule("linear", 4.0, 0.1, 11)
    assert torch.allclose(linear.diff(), torch.full((10,), -0.39, dtype=DT))
    log_schedule = cooling_schedule("logarithmic", 4.0, 0.1, 50)
    assert log_schedule[0] == pytest.approx(4.0)  # T_0 log 2 / log 2
    assert log_schedule[9] == pytest.approx(4.0 * math.log(2) / math.log(11))
    assert torch.all(cooling_schedule("quench", 4.0, 0.1, 5) == 0.1)
    with pytest.raises(ValueError):
        cooling_schedule("exponential-ish", 1.0, 0.1, 5)


# ---------------------------------------------------------------------------------------------
# Data and learning
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [2, 3, 4])
def test_bars_and_stripes(size):
    images = bars_and_stripes(size).reshape(-1, size, size)
    assert len(images) == 2 ** (size + 1) - 2  # all-off and all-on are both bars and stripes
    assert len(torch.unique(images.reshape(len(images), -1), dim=0)) == len(images)
    rows_constant = (images == images[:, :, :1]).all(2).all(1)
    cols_constant = (images == images[:, :1, :]).all(1).all(1)
    assert torch.all(rows_constant | cols_constant)
    for parity, remainder in (("even", 0), ("odd", 1)):
        subset = bars_and_stripes(size, parity).reshape(-1, size, size)
        lines = torch.where((subset == subset[:, :, :1]).all(2).all(1), subset[:, :, 0].sum(1), subset[:, 0, :].sum(1))
        assert torch.all(lines % 2 == remainder)
    assert len(bars_and_stripes(3, "even")) == 7  # 4 even bar images + 4 even stripe images - the blank one


def mean_log_likelihood(W, b, data, n_hidden):
    """(1/N) sum_d log sum_h exp(-E(v_d, h)) - log Z, with explicit loops over states."""
    n = len(b)
    z = sum(math.exp(-python_energy(W, b, s)) for s in itertools.product((0, 1), repeat=n))
    total = 0.0
    for v in data.tolist():
        total += math.log(sum(math.exp(-python_energy(W, b, tuple(v) + h))
                              for h in itertools.product((0, 1), repeat=n_hidden)))
    return total / len(data) - math.log(z)


@pytest.mark.parametrize("n_hidden", [0, 2])
def test_exact_gradient_matches_finite_differences(n_hidden):
    n_visible = 3
    W, b = random_machine(n_visible + n_hidden, seed=5)
    data = torch.tensor([[1, 0, 1], [1, 1, 0], [0, 0, 0], [1, 0, 1]], dtype=DT)
    grad = exact_gradient(W, b, data, n_hidden)
    assert grad["log_likelihood"] == pytest.approx(mean_log_likelihood(W, b, data, n_hidden), abs=1e-12)
    eps = 1e-5  # central differences: error ~ eps^2 * third derivative ~ 1e-10
    for i, j in [(0, 1), (0, 2), (1, 2)] + ([(0, 3), (2, 4), (3, 4)] if n_hidden else []):
        plus, minus = W.clone(), W.clone()
        plus[i, j] += eps
        plus[j, i] += eps
        minus[i, j] -= eps
        minus[j, i] -= eps
        numeric = (mean_log_likelihood(plus, b, data, n_hidden)
                   - mean_log_likelihood(minus, b, data, n_hidden)) / (2 * eps)
        assert float(grad["W"][i, j]) == pytest.approx(numeric, abs=1e-7)
        assert grad["W"][i, j] == grad["W"][j, i]
    for i in range(len(b)):
        plus, minus = b.clone(), b.clone()
        plus[i] += eps
        minus[i] -= eps
        numeric = (mean_log_likelihood(W, plus, data, n_hidden)
                   - mean_log_likelihood(W, minus, data, n_hidden)) / (2 * eps)
        assert float(grad["b"][i]) == pytest.approx(numeric, abs=1e-7)
    assert torch.all(grad["W"].diagonal() == 0)


def test_kl_and_visible_marginal():
    # Zero weights: p_model is uniform over 2^n visible states, hidden units or not, so
    # KL = sum_v p_data(v) log(p_data(v) 2^n); with repeated rows p_data is not uniform.
    data = torch.tensor([[1, 0, 1], [1, 0, 1], [0, 1, 1]], dtype=DT)
    for n_hidden in (0, 2):
        n = 3 + n_hidden
        W, b = torch.zeros(n, n, dtype=DT), torch.zeros(n, dtype=DT)
        expected = (2 / 3) * math.log((2 / 3) * 8) + (1 / 3) * math.log((1 / 3) * 8)
        assert kl_data_model(W, b, data, n_hidden) == pytest.approx(expected, abs=1e-12)
    # The visible marginal of a random machine against explicit sums over the hidden states
    W, b = random_machine(5, seed=6)
    log_p = visible_log_probs(W, b, n_hidden=2)
    z = sum(math.exp(-python_energy(W, b, s)) for s in itertools.product((0, 1), repeat=5))
    for k, v in enumerate(itertools.product((0, 1), repeat=3)):
        p_v = sum(math.exp(-python_energy(W, b, v + h)) for h in itertools.product((0, 1), repeat=2)) / z
        assert float(log_p[k]) == pytest.approx(math.log(p_v), abs=1e-12)


# ---------------------------------------------------------------------------------------------
# Noise floor
# ---------------------------------------------------------------------------------------------


def test_expected_tv_iid_matches_binomial_sums():
    # E[TV] = 1/(2N) sum_s sum_k |k - N p_s| Binom(k; N, p_s), summed term by term
    p = np.array([0.5, 0.2, 0.15, 0.1, 0.05, 0.0])
    for n_draws in (1, 7, 60, 500):
        k = np.arange(n_draws + 1)
        brute = sum((np.abs(k - n_draws * ps) * binom.pmf(k, n_draws, ps)).sum() for ps in p) / (2 * n_draws)
        assert expected_tv_iid(p, n_draws) == pytest.approx(brute, rel=1e-10)
    # large N: close to the normal approximation sum_s sqrt(p_s (1 - p_s) / (2 pi N))
    n_draws = 10**6
    normal = np.sqrt(p * (1 - p) / (2 * math.pi * n_draws)).sum()
    assert expected_tv_iid(p, n_draws) == pytest.approx(normal, rel=1e-3)


def test_exact_log_partition_of_independent_units():
    bias = torch.tensor([0.3, -1.2, 2.0, 0.0, -0.5], dtype=torch.float64)
    expected = float(torch.log1p(torch.exp(bias)).sum())
    assert exact_log_partition(lambda s: -(s @ bias), 5) == pytest.approx(expected, abs=1e-12)
    # +-1 spins: Z = prod_i (e^{b_i} + e^{-b_i})
    expected_spins = float(torch.log(2 * torch.cosh(bias)).sum())
    assert exact_log_partition(lambda s: -(s @ bias), 5, spins=True) == pytest.approx(expected_spins, abs=1e-12)


def test_exact_distribution_of_two_coupled_spins():
    # E = -J s1 s2: aligned states have weight e^{J}, anti-aligned e^{-J}
    J = 0.8
    p = exact_distribution(lambda s: -J * s[:, 0] * s[:, 1], 2, spins=True)
    aligned = math.exp(J) / (2 * math.exp(J) + 2 * math.exp(-J))
    assert torch.allclose(p, torch.tensor([aligned, 0.5 - aligned, 0.5 - aligned, aligned], dtype=p.dtype))


def test_state_index_inverts_the_enumeration_order():
    states = all_binary_states(6)
    assert torch.equal(state_index(states), torch.arange(64))
    assert torch.equal(state_index(2 * states - 1), torch.arange(64))
    histogram = empirical_distribution(torch.tensor([[0.0, 1.0], [0.0, 1.0], [1.0, 1.0], [0.0, 0.0]]))
    assert torch.allclose(histogram, torch.tensor([0.25, 0.5, 0.0, 0.25], dtype=histogram.dtype))
