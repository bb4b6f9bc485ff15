"""Lesson 07's toy grades must fail on known-bad samples at the N the lesson uses (1,000 points).

tests/test_metrics_can_fail.py shows the multi-bandwidth MMD and the per-mode weights rejecting a missing
mode, a ring, 2:1 weights and too-wide modes on the 8 Gaussians at N = 2,000 (MMD) and 1,000 (weights).
Lesson 07 grades at N = 1,000 against the line "MMD^2 below twice its noise floor", and also on the two
moons; here the same wrong sets, and wrong two-moons sets (one moon only, moons twice as wide, a Gaussian
with the data's mean and covariance), are put past that line at N = 1,000, while fresh data stays under it.
"""

import math

import pytest
import torch

from common.datasets import toy_dataset, two_moons
from common.evaluation import mmd_bandwidths, mmd_multiscale, mmd_noise_floor
from tests.test_metrics_can_fail import WRONG

N = 1000


def _floor_and_reference(dataset, gen):
    reference = dataset.sample(N, gen)
    bandwidths = mmd_bandwidths(reference)
    floor = mmd_noise_floor(lambda n: dataset.sample(n, gen), N, repeats=5, bandwidth=bandwidths)
    return reference, bandwidths, floor


@pytest.fixture(scope="module")
def eight():
    gen = torch.Generator().manual_seed(10)
    dataset = toy_dataset("8gaussians")
    return (gen, dataset, *_floor_and_reference(dataset, gen))


@pytest.fixture(scope="module")
def moons():
    gen = torch.Generator().manual_seed(11)
    dataset = toy_dataset("two_moons")
    return (gen, dataset, *_floor_and_reference(dataset, gen))


@pytest.mark.parametrize("fixture", ["eight", "moons"])
def test_fresh_data_passes_the_lesson_line(fixture, request):
    gen, dataset, reference, bandwidths, floor = request.getfixturevalue(fixture)
    for _ in range(3):
        assert mmd_multiscale(dataset.sample(N, gen), reference, bandwidths) < 2 * floor


@pytest.mark.parametrize("name", list(WRONG))
def test_eight_gaussians_failures_fail_at_n_1000(eight, name):
    gen, _, reference, bandwidths, floor = eight
    value = mmd_multiscale(WRONG[name](N, gen), reference, bandwidths)
    assert value > 3 * floor, f"{name}: MMD^2 is only {value / floor:.1f}x the floor"


def _one_moon(n, gen):
    """The upper moon only: the arc of radius 2 around (-1, -0.5); the lower one is centred at (1, 0.5)."""
    x = toy_dataset("two_moons").sample(3 * n, gen)
    off_upper = ((x - torch.tensor([-1.0, -0.5])).norm(dim=1) - 2).abs()
    off_lower = ((x - torch.tensor([1.0, 0.5])).norm(dim=1) - 2).abs()
    return x[off_upper < off_lower][:n]


def _gaussian_like(n, gen):
    x = toy_dataset("two_moons").sample(20000, gen)
    chol = torch.linalg.cholesky(torch.cov(x.T))
    return x.mean(0) + torch.randn(n, 2, generator=gen) @ chol.T


MOONS_WRONG = {
    "one moon": _one_moon,
    "twice as wide": lambda n, g: two_moons(noise=0.2).sample(n, g),
    "a Gaussian with the data's covariance": _gaussian_like,
}


@pytest.mark.parametrize("name", list(MOONS_WRONG))
def test_two_moons_failures_fail_at_n_1000(moons, name):
    gen, _, reference, bandwidths, floor = moons
    value = mmd_multiscale(MOONS_WRONG[name](N, gen), reference, bandwidths)
    assert value > 3 * floor, f"{name}: MMD^2 is only {value / floor:.1f}x the floor"


def test_one_moon_helper_keeps_half_the_data():
    gen = torch.Generator().manual_seed(12)
    assert len(_one_moon(N, gen)) == N
    x = toy_dataset("two_moons").sample(4000, gen)
    off_upper = ((x - torch.tensor([-1.0, -0.5])).norm(dim=1) - 2).abs()
    off_lower = ((x - torch.tensor([1.0, 0.5])).norm(dim=1) - 2).abs()
    assert math.isclose(float((off_upper < off_lower).double().mean()), 0.5, abs_tol=0.04)
