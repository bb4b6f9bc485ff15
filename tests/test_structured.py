"""The chain argmin against exhaustive enumeration, and the checks lesson 09 grades structured outputs with."""

import torch

from common.structured import chain_argmin, chain_energy, chain_enumerate, chain_icm


def random_chain(n, length, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, length, 2, generator=g, dtype=torch.float64) * 2


def test_dynamic_programming_equals_enumeration():
    for coupling in (0.3, 1.0, 2.5):
        u = random_chain(300, 10, seed=int(10 * coupling))
        dp, brute = chain_argmin(u, coupling), chain_enumerate(u, coupling)
        assert torch.equal(dp, brute)  # ties have probability 0 for continuous u


def test_energy_of_a_hand_computed_case():
    u = torch.tensor([[[0.0, 1.0], [2.0, 0.0], [0.5, 0.0]]], dtype=torch.float64)
    y = torch.tensor([[1.0, -1.0, 1.0]], dtype=torch.float64)
    # unary 1 + 2 + 0 = 3; pairs: -J (1*-1 + -1*1) = 2 J
    assert float(chain_energy(u, 0.7, y)) == 3 + 2 * 0.7


def test_optimality_check_rejects_a_non_minimal_output():
    # the lesson grades a minimiser by its energy excess over the exact minimum: ICM from the independent
    # labels must show a positive excess on a strongly coupled chain (a known local minimum), and the
    # exact answer none, at the lesson's 300 sequences
    u = random_chain(300, 12, seed=5)
    coupling = 2.0
    best = chain_energy(u, coupling, chain_argmin(u, coupling))
    independent = torch.where(u[..., 1] < u[..., 0], 1.0, -1.0).double()
    icm = chain_icm(u, coupling, independent)
    excess = chain_energy(u, coupling, icm) - best
    assert (excess >= -1e-12).all()
    assert float((excess > 1e-9).double().mean()) > 0.05
    assert float((chain_energy(u, coupling, chain_enumerate(u, coupling)) - best).abs().max()) < 1e-12
