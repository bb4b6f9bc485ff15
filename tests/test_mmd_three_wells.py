"""Lesson 01 grades Langevin samples on its 3-Gaussian landscape with a multi-bandwidth MMD^2 against its noise
floor, and with the wells' shares against the chi^2 line; both must be able to fail at the lesson's sample size.

The lesson draws n = 500 chains (--n-chains) and claims "mean MMD^2 over 5 seeds below 2 x the floor" and "mean
KL of the wells' shares below the 99.9 % line". Here fresh exact samples pass both, and sample sets that are
wrong in known ways fail by a wide margin: a missing well, the wrong weights (the two largest swapped; all equal),
wells 1.5x too wide, and chains left where they started (uniform on the box). A limit worth knowing: at n = 500
the MMD does not reliably see wells only 1.2x too wide (single draws measured -0.3 to 4.6 x the floor).
"""

import math

import numpy as np
import pytest
import torch

from common.datasets import gaussian_mixture
from common.evaluation import (
    kl_weights,
    mmd_bandwidths,
    mmd_multiscale,
    mmd_noise_floor,
    mode_kl_threshold,
    mode_weights,
)

# the landscape of lesson 01 (sections 1, 4 and 7)
MEANS, STDS, WEIGHTS = [[-1.5, -1.0], [1.5, 1.0], [1.5, -1.5]], [0.6, 0.8, 0.5], [0.5, 0.3, 0.2]
N, SEEDS = 500, 5


def landscape(means=MEANS, stds=STDS, weights=WEIGHTS):
    return gaussian_mixture(means, stds, weights, bounds=(-4, 4, -4, 4))


def uniform_start(n, gen):
    return 6 * torch.rand(n, 2, generator=gen) - 3


WRONG = {
    "missing well": lambda n, g: landscape(MEANS[:2], STDS[:2], WEIGHTS[:2]).sample(n, g),
    "two largest weights swapped": lambda n, g: landscape(weights=[0.3, 0.5, 0.2]).sample(n, g),
    "equal weights": lambda n, g: landscape(weights=[1, 1, 1]).sample(n, g),
    "wells 1.5x too wide": lambda n, g: landscape(stds=[1.5 * s for s in STDS]).sample(n, g),
    "chains left at their start": uniform_start,
}


@pytest.fixture(scope="module")
def setup():
    gen = torch.Generator().manual_seed(0)
    target = landscape()
    bandwidths = mmd_bandwidths(target.sample(N, gen).double())
    floor = mmd_noise_floor(lambda n: target.sample(n, gen).double(), N, repeats=10, bandwidth=bandwidths)
    return gen, target, bandwidths, floor


def test_fresh_exact_samples_pass_the_mean_over_seeds(setup):
    gen, target, bandwidths, floor = setup
    values = [mmd_multiscale(target.sample(N, gen).double(), target.sample(N, gen).double(), bandwidths)
              for _ in range(SEEDS)]
    assert np.mean(values) < 2 * floor


@pytest.mark.parametrize("name", list(WRONG))
def test_wrong_samples_fail_in_every_single_run(setup, name):
    gen, target, bandwidths, floor = setup
    for _ in range(SEEDS):
        value = mmd_multiscale(WRONG[name](N, gen).double(), target.sample(N, gen).double(), bandwidths)
        assert value > 5 * floor, f"{name}: MMD^2 only {value / floor:.1f} x the floor"


def test_well_shares_pass_fresh_samples_and_reject_wrong_weights(setup):
    gen, target, _, _ = setup
    centres = torch.tensor(MEANS, dtype=torch.float64)
    exact_shares, _ = mode_weights(target.sample(100 * N, gen).double(), centres, math.inf)
    line = mode_kl_threshold(N, len(MEANS))

    def mean_kl(draw):
        return np.mean([kl_weights(exact_shares, mode_weights(draw(N, gen).double(), centres, math.inf)[0])
                        for _ in range(SEEDS)])

    assert mean_kl(target.sample) < line
    for name in ("missing well", "two largest weights swapped", "equal weights"):
        assert mean_kl(WRONG[name]) > 3 * line, name
