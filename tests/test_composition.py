"""Composed energies on a grid against closed forms: products, mixtures and ratios of Gaussians."""

import math

import torch
from scipy.stats import norm

from common.composition import (
    compose_and,
    compose_not,
    compose_or,
    grid_probabilities,
    histogram_tv,
    sample_histogram,
)
from common.diagnostics import total_variation

BOUNDS = (-5.0, 5.0, -5.0, 5.0)
N = 20


def gaussian_energy(mean, std):
    """Normalised -log N(x; mean, std^2 I) in 2-D."""
    mean = torch.tensor(mean)
    return lambda x: ((x - mean) ** 2).sum(-1) / (2 * std**2) + math.log(2 * math.pi * std**2)


def cell_masses(mean, std):
    """Exact P(cell) of an isotropic Gaussian on the N x N grid, from the normal CDF, renormalised to the box."""
    edges = torch.linspace(BOUNDS[0], BOUNDS[1], N + 1).double().numpy()
    px = torch.tensor(norm.cdf(edges[1:], mean[0], std) - norm.cdf(edges[:-1], mean[0], std))
    py = torch.tensor(norm.cdf(edges[1:], mean[1], std) - norm.cdf(edges[:-1], mean[1], std))
    return torch.outer(py, px)  # rows = y bins


def test_and_of_two_gaussians_is_their_product_gaussian():
    m1, s1, m2, s2 = (1.0, -0.5), 1.0, (-1.0, 1.0), 1.5
    # 1/s^2 = 1/s1^2 + 1/s2^2,  m = s^2 (m1/s1^2 + m2/s2^2)
    var = 1 / (1 / s1**2 + 1 / s2**2)
    mean = [var * (a / s1**2 + b / s2**2) for a, b in zip(m1, m2)]
    exact = cell_masses(mean, math.sqrt(var))
    got = grid_probabilities(compose_and(gaussian_energy(m1, s1), gaussian_energy(m2, s2)), BOUNDS, N, refine=16)
    assert total_variation(got, exact / exact.sum()) < 2e-3


def test_or_of_two_normalised_gaussians_is_the_equal_mixture():
    m1, s1, m2, s2 = (1.5, 0.0), 0.7, (-1.5, 1.0), 1.2
    exact = 0.5 * cell_masses(m1, s1) + 0.5 * cell_masses(m2, s2)
    got = grid_probabilities(compose_or(gaussian_energy(m1, s1), gaussian_energy(m2, s2)), BOUNDS, N, refine=16)
    assert total_variation(got, exact / exact.sum()) < 2e-3


def test_not_divides_by_a_power_of_the_second_gaussian():
    m1, s1, m2, s2, gamma = (0.5, 0.5), 1.0, (1.5, 0.0), 2.0, 0.8
    # precision 1/s1^2 - gamma/s2^2 (> 0 here), mean (m1/s1^2 - gamma m2/s2^2) / precision
    precision = 1 / s1**2 - gamma / s2**2
    mean = [(a / s1**2 - gamma * b / s2**2) / precision for a, b in zip(m1, m2)]
    exact = cell_masses(mean, 1 / math.sqrt(precision))
    got = grid_probabilities(compose_not(gaussian_energy(m1, s1), gaussian_energy(m2, s2), gamma), BOUNDS, N,
                             refine=16)
    assert total_variation(got, exact / exact.sum()) < 2e-3


def test_histogram_and_its_tv_by_hand():
    # 4 points on a 2 x 2 grid over [0, 2]^2: two in cell (x=0, y=0), one in (x=1, y=0), one outside the box
    pts = torch.tensor([[0.5, 0.5], [0.2, 0.9], [1.5, 0.1], [3.0, 3.0]])
    hist = sample_histogram(pts, (0.0, 2.0, 0.0, 2.0), n=2)
    assert torch.equal(hist, torch.tensor([[0.5, 0.25], [0.0, 0.0]], dtype=torch.float64))
    # against all mass in cell (x=0, y=0): |0.5 - 1| + 0.25 + 0.25 (the escaped point) = 1, halved
    target = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    assert abs(histogram_tv(pts, target, (0.0, 2.0, 0.0, 2.0)) - 0.5) < 1e-12


