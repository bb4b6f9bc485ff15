"""RealNVP against independent answers: autograd's Jacobian, exact inversion, and grid quadrature."""

import math

import torch

from common.flows import RealNVP


def _random_flow(dim, seed=0, scale=0.5):
    torch.manual_seed(seed)
    flow = RealNVP(dim=dim, n_layers=4, hidden=(16, 16)).double()
    with torch.no_grad():  # the last layers start at zero (identity map); make the test non-trivial
        for p in flow.parameters():
            p.add_(scale * torch.randn_like(p))
    return flow


def test_log_det_matches_autograd_jacobian():
    for dim in (2, 3, 5):
        flow = _random_flow(dim)
        x = torch.randn(7, dim, dtype=torch.float64)
        _, log_det = flow(x)
        jac = torch.func.vmap(torch.func.jacrev(lambda v, f=flow: f(v[None])[0][0]))(x)  # (B, D, D)
        sign, expected = torch.linalg.slogdet(jac)
        assert torch.all(sign > 0)  # an affine coupling with exp(s) > 0 preserves orientation
        torch.testing.assert_close(log_det, expected, atol=1e-10, rtol=1e-10)


def test_inverse_undoes_forward():
    flow = _random_flow(3)
    x = torch.randn(50, 3, dtype=torch.float64)
    torch.testing.assert_close(flow.inverse(flow(x)[0]), x, atol=1e-10, rtol=1e-10)


def test_density_integrates_to_one_on_a_grid():
    flow = _random_flow(2, seed=1, scale=0.2)  # a milder map, so the grid holds its mass
    half, n = 14.0, 700
    xs = torch.linspace(-half, half, n + 1, dtype=torch.float64)
    mid = 0.5 * (xs[1:] + xs[:-1])
    grid = torch.cartesian_prod(mid, mid)
    with torch.no_grad():
        log_q = flow.log_prob(grid)
    mass = float(torch.exp(log_q).sum() * (2 * half / n) ** 2)
    assert math.isclose(mass, 1.0, abs_tol=2e-3), mass


def test_identity_at_initialisation_gives_standard_normal():
    flow = RealNVP(dim=2).double()
    x = torch.randn(10, 2, dtype=torch.float64)
    expected = -0.5 * (x**2).sum(-1) - math.log(2 * math.pi)
    torch.testing.assert_close(flow.log_prob(x), expected)
