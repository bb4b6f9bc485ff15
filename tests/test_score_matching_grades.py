"""The grades of lesson 06 can fail at its sample size (2,000).

Section 5 grades DSM samples of the two moons with the multi-scale MMD against its noise floor: moons 2x too
wide, or one moon missing, must land far above twice the floor, fresh data below it. The grade is not sharp for
smaller errors at this n: moons 1.5x too wide gave 1.5-5.2x the floor over four seeds, fresh data -0.9 to 2.2x.

Section 6 grades mode weights on 0.2 N((-5,-5), I) + 0.8 N((5,5), I).

The grade (common.evaluation: points within 1 sd of their nearest centre, KL(truth || weights) against the
99.9 % chi-squared line) must pass samples with the true weights and reject the weights a sampler that keeps
its starts' split produces (0.5/0.5), and a milder error (0.3/0.7), at that sample size. These samples are
drawn directly, so the test checks the metric, not a sampler.
"""

import numpy as np
import pytest
import torch

from common.datasets import two_moons
from common.evaluation import (
    kl_weights,
    mmd_bandwidths,
    mmd_multiscale,
    mmd_noise_floor,
    mode_kl_threshold,
    mode_weights,
)

N, A = 2000, 5.0  # the lesson's --n-samples and --mode-distance
CENTRES = torch.tensor([[-A, -A], [A, A]])
TRUTH = np.array([0.2, 0.8])


def two_modes(small, seed):
    gen = torch.Generator().manual_seed(seed)
    which = (torch.rand(N, generator=gen) >= small).long()  # 0: the small mode at (-a, -a)
    return CENTRES[which] + torch.randn(N, 2, generator=gen)


def grade(samples):
    weights, inside = mode_weights(samples, CENTRES, radius=1.0)
    return kl_weights(TRUTH, weights), mode_kl_threshold(int(inside * len(samples)), 2)


@pytest.mark.parametrize("seed", range(5))
def test_true_weights_pass(seed):
    kl, line = grade(two_modes(0.2, seed))
    assert kl < line


@pytest.mark.parametrize("small", [0.5, 0.3])
def test_wrong_weights_fail(small):
    for seed in range(3):
        kl, line = grade(two_modes(small, seed))
        assert kl > 2 * line, f"small-mode weight {small}: KL {kl:.4f} only {kl / line:.1f}x the line"


@pytest.fixture(scope="module")
def moons():
    gen = torch.Generator().manual_seed(0)
    target = two_moons()
    reference = target.sample(N, gen)
    bandwidths = mmd_bandwidths(reference)
    floor = mmd_noise_floor(lambda n: target.sample(n, gen), N, repeats=5, bandwidth=bandwidths)
    return gen, target, reference, bandwidths, floor


def test_moons_mmd_passes_fresh_data(moons):
    gen, target, reference, bandwidths, floor = moons
    assert mmd_multiscale(target.sample(N, gen), reference, bandwidths) < 2 * floor


def test_moons_mmd_rejects_too_wide_and_missing_moon(moons):
    gen, _, reference, bandwidths, floor = moons
    wide = two_moons(noise=0.2).sample(N, gen)  # curve noise 0.4 instead of 0.2
    both = two_moons().sample(2 * N, gen)
    one_moon = both[both[:, 1] - 0.5 * both[:, 0] > -0.9][:N]  # keeps (mostly) the upper moon
    for name, wrong in (("2x too wide", wide), ("one moon", one_moon)):
        value = mmd_multiscale(wrong, reference, bandwidths)
        assert value > 5 * floor, f"{name}: MMD^2 {value:.2e} is only {value / floor:.1f}x the floor"
