"""Lesson 08's grading metrics, at the sample sizes the lesson grades with, must reject known-bad samples.

- mode weights within 1 std and the in-mode fraction (EBGAN), at n = 2000 (the lesson's --n-eval);
- the exact grid NLL against the entropy floor (CoopNets vs EBM only), on 2000 held-out points;
- the ECE against what a calibrated model scores (JEM), at the digits' 359 test images;
- the Frechet distance in classifier features (digits), at the same 359 images as its floor.
Each wrong set is one an EBM really produces: a ring, a missing mode, 2:1 weights, too-wide modes,
over- or under-confident probabilities, digits missing half the classes.
"""

import math

import numpy as np
import pytest
import torch

from common.datasets import eight_gaussians, load_signed_images
from common.evaluation import (
    FrechetScorer,
    calibrated_ece_quantile,
    expected_calibration_error,
    grid_nll,
    mode_kl_threshold,
    nll_floor,
    train_feature_classifier,
)
from tests.test_metrics_can_fail import CENTRES, RADIUS, STD, grade, mixture, ring  # the same known-bad 8 Gaussians

N_EVAL, N_TEST = 2000, 359


def test_mode_grades_at_the_lessons_n():
    """The lesson's claims: weights right below the chi^2 line; a ring below 0.8 x data's in-mode fraction."""
    gen = torch.Generator().manual_seed(0)
    kl_data, inside_data = grade(mixture(N_EVAL, gen))
    line = mode_kl_threshold(round(inside_data * N_EVAL), 8)
    assert kl_data < line
    assert abs(inside_data - (1 - math.exp(-0.5))) < 3 * math.sqrt(0.39 * 0.61 / N_EVAL)
    for weights in ((0,) + (1,) * 7, (2, 1) * 4):  # a missing mode, 2:1 weights
        assert grade(mixture(N_EVAL, gen, weights=weights))[0] > 2 * line
    for wrong in (ring(N_EVAL, gen), mixture(N_EVAL, gen, std=1.5 * STD)):  # no modes; modes too wide
        assert grade(wrong)[1] < 0.8 * inside_data


def _log_density(weights=(1.0,) * 8, std=STD):
    log_w = torch.log(torch.tensor(weights, dtype=torch.float64) / sum(weights))

    def fn(x):
        d2 = ((x.double()[:, None, :] - CENTRES.double()[None]) ** 2).sum(-1)  # (N, 8)
        return torch.logsumexp(log_w - d2 / (2 * std**2), dim=1) - math.log(2 * math.pi * std**2)

    return fn


def _ring_log_density(x):
    r = x.double().norm(dim=1)  # radial N(R, s^2), uniform angle: p = N(r; R, s) / (2 pi r)
    return -0.5 * ((r - RADIUS) / STD) ** 2 - math.log(STD * math.sqrt(2 * math.pi)) - torch.log(2 * math.pi * r)


def test_grid_nll_against_the_floor_rejects_wrong_densities():
    """The exact NLL (grid normalised) of the true density sits at the entropy floor; wrong ones lie far above."""
    gen = torch.Generator().manual_seed(1)
    target = eight_gaussians(RADIUS, STD)
    x = target.sample(N_EVAL, gen)
    floor, floor_se = nll_floor(target, generator=gen)
    bounds = target.bounds
    true_nll = grid_nll(lambda z: -_log_density()(z), x, bounds, 300)
    assert abs(true_nll - floor) < 0.05  # sampling noise of 2000 points (s.e. ~0.03) plus the floor's
    for wrong in (lambda z: -_ring_log_density(z), lambda z: -_log_density(std=1.5 * STD)(z),
                  lambda z: -_log_density(weights=(2, 1) * 4)(z)):
        assert grid_nll(wrong, x, bounds, 300) > floor + 0.05
    # a missing mode: the data in it get almost no mass
    missing = (1e-6,) + (1.0,) * 7
    assert grid_nll(lambda z: -_log_density(weights=missing)(z), x, bounds, 300) > floor + 1.0


def _probs_like_a_digit_classifier(n, gen, sharpness):
    logits = sharpness * torch.randn(n, 10, generator=gen, dtype=torch.float64)
    return torch.softmax(logits, 1)


@pytest.mark.parametrize("distortion", [0.4, 2.5])  # the model's logits are this many times the truth's
def test_ece_line_passes_calibrated_and_rejects_miscalibrated_probs(distortion):
    gen = torch.Generator().manual_seed(2)
    passed, rejected = 0, 0
    for _ in range(20):
        true_logits = 4.0 * torch.randn(N_TEST, 10, generator=gen, dtype=torch.float64)
        truth = torch.softmax(true_logits, 1)
        labels = torch.multinomial(truth, 1, generator=gen)[:, 0]
        line = calibrated_ece_quantile(truth, 15, 100, 0.95, gen)
        passed += expected_calibration_error(truth, labels, 15) < line
        model = torch.softmax(distortion * true_logits, 1)  # under- (0.4) or over-confident (2.5)
        rejected += expected_calibration_error(model, labels, 15) > calibrated_ece_quantile(model, 15, 100, 0.95, gen)
    assert passed >= 16  # about 95 % by construction
    assert rejected == 20


@pytest.fixture(scope="module")
def scorer():
    data = load_signed_images("digits")
    torch.manual_seed(0)
    clf, _ = train_feature_classifier(data.x_train, data.y_train, data.x_test, data.y_test, epochs=15,
                                      generator=torch.Generator().manual_seed(0))
    return data, FrechetScorer(clf, data.x_train, data.x_test)


def test_frechet_distance_rejects_missing_classes_and_blur_at_359(scorer):
    data, sc = scorer
    assert len(data.x_test) == N_TEST
    gen = torch.Generator().manual_seed(3)
    half = data.x_train[data.y_train >= 5]  # digits from half of the classes only
    half = half[torch.randint(len(half), (N_TEST,), generator=gen)]
    assert sc.score(half) > 3 * sc.floor
    blurred = data.x_test.reshape(-1, 1, 8, 8)
    blurred = torch.nn.functional.avg_pool2d(torch.nn.functional.pad(blurred, (1, 1, 1, 1), mode="replicate"), 3, 1)
    assert sc.score(blurred) > 3 * sc.floor
    assert sc.score(data.x_train[torch.randint(len(data.x_train), (N_TEST,), generator=gen)]) < 2 * sc.floor


def test_chi_square_of_a_wider_gaussian_is_infinite_and_of_a_narrower_one_finite():
    """Lesson 08's DV table: chi^2(q || p) = int q^2/p - 1 is finite iff var_q < 2 var_p (for Gaussians)."""
    def chi2(sd_q, sd_p, width):
        x = np.linspace(-width, width, 200001)
        log_q = -0.5 * (x / sd_q) ** 2 - math.log(sd_q * math.sqrt(2 * math.pi))
        log_p = -0.5 * (x / sd_p) ** 2 - math.log(sd_p * math.sqrt(2 * math.pi))
        return np.trapezoid(np.exp(2 * log_q - log_p), x) - 1

    # closed form for sd_q^2 < 2 sd_p^2: chi^2 = sd_p^2 / (sd_q sqrt(2 sd_p^2 - sd_q^2)) - 1
    assert chi2(1.2, 1.0, 40) == pytest.approx(1.0 / (1.2 * math.sqrt(2 - 1.44)) - 1, rel=1e-6)
    assert chi2(1.5, 1.0, 20) > 1e3 and chi2(1.5, 1.0, 30) > 100 * chi2(1.5, 1.0, 20)  # grows with the range
