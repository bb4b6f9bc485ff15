"""Lesson 09's OOD grading: the exact kernel density and AUROC at the lesson's sample sizes."""

import math

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from common.evaluation import kde_log_density

N_IN, N_OUT = 185, 174  # lesson 09: test digits 0-4 against the held-out digits


def test_kde_integrates_to_one_in_2d():
    g = torch.Generator().manual_seed(0)
    reference = torch.randn(50, 2, generator=g, dtype=torch.float64)
    xs = torch.linspace(-7, 7, 401, dtype=torch.float64)
    grid = torch.cartesian_prod(xs, xs)
    total = np.exp(kde_log_density(grid, reference, 0.4)).sum() * float(xs[1] - xs[0]) ** 2
    assert abs(total - 1) < 1e-3


def test_kde_of_one_point_is_the_gaussian_density_in_64d():
    # one reference point: log N(x; x_0, b^2 I), computed by hand, also far out where tree bounds fail
    x0, x = torch.zeros(1, 64, dtype=torch.float64), torch.full((1, 64), 1.5, dtype=torch.float64)
    b = 0.3
    expected = -float((x - x0).pow(2).sum()) / (2 * b**2) - 32 * math.log(2 * math.pi * b**2)
    assert abs(float(kde_log_density(x, x0, b)[0]) - expected) < 1e-9


def test_auroc_of_a_detector_without_information_stays_near_chance():
    # at 185 vs 174 images, a score that ignores the input gives AUROC within 0.5 +- 0.1 on every draw (its SE
    # is ~0.03), so the lesson's OOD gaps of 0.02-0.3 between methods are not read off one noisy AUROC: a
    # useless detector is rejected by any claim that it beats another by the lesson's margins
    rng = np.random.default_rng(0)
    labels = np.r_[np.ones(N_IN), np.zeros(N_OUT)]
    aurocs = [roc_auc_score(labels, rng.standard_normal(N_IN + N_OUT)) for _ in range(200)]
    assert max(abs(a - 0.5) for a in aurocs) < 0.1
    assert 0.02 < np.std(aurocs) < 0.04
