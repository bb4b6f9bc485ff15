"""Lesson 10's mode-weight grade on the 0.8/0.2 mixture can fail at the lesson's sample size.

Section 1 grades a sampler by the small mode's weight among samples within 2 std of a mode centre
(``common.evaluation.mode_weights``), with a tolerance of three binomial standard errors (0.027 at n = 2000;
the swap runs use n = 1000, 0.038). Correct samples stay inside it; wrong weights (0.5/0.5 as plain Langevin
gives, 0.3, 0.1) fall outside, and samples strung along the line between the modes show in the in-mode fraction.
"""

import math

import pytest
import torch

from common.datasets import gaussian_mixture
from common.evaluation import mode_weights

A = 5.0
CENTRES = torch.tensor([[A, A], [-A, -A]])


def small_weight(x):
    return float(mode_weights(x, CENTRES, radius=2.0)[0][1])


def samples(weight, n, seed, std=1.0):
    mixture = gaussian_mixture([[A, A], [-A, -A]], std, [1 - weight, weight])
    return mixture.sample(n, torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("n", [2000, 1000])
def test_correct_samples_pass(n):
    tol = 3 * math.sqrt(0.2 * 0.8 / n)
    values = [small_weight(samples(0.2, n, seed)) for seed in range(5)]
    assert all(abs(v - 0.2) <= tol for v in values), values


@pytest.mark.parametrize("n", [2000, 1000])
@pytest.mark.parametrize("wrong", [0.5, 0.3, 0.1])
def test_wrong_weights_fail(n, wrong):
    tol = 3 * math.sqrt(0.2 * 0.8 / n)
    assert abs(small_weight(samples(wrong, n, 0)) - 0.2) > tol


def test_a_bridge_shows_in_the_in_mode_fraction():
    gen = torch.Generator().manual_seed(0)
    t = torch.rand(2000, 1, generator=gen) * 2 - 1  # uniform along the segment from (-a, -a) to (a, a)
    bridge = t * CENTRES[0] + torch.randn(2000, 2, generator=gen)
    _, inside_bridge = mode_weights(bridge, CENTRES, radius=2.0)
    _, inside_true = mode_weights(samples(0.2, 2000, 0), CENTRES, radius=2.0)
    assert inside_true > 0.84 and inside_bridge < 0.5, (inside_true, inside_bridge)
