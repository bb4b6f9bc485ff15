"""The digits grading metrics of lesson 07 must be able to fail, at the lesson's sample size.

Lesson 07 grades its digits EBM with two numbers, both computed on N = 359 images (the size of the held-out
split, so the samples, the floor and the baselines share one N):

- the Fréchet distance (FD) in the features of a classifier trained on the digits (``FrechetScorer``), next to
  its floor (held-out digits) and a fitted-Gaussian baseline;
- the entropy of the classifier's labels of the samples, against the line ln 10 - chi2_9(0.999) / (2N): for
  labels drawn uniformly, 2N (ln 10 - H) is the G statistic of a uniformity test, chi-squared with 9 degrees
  of freedom, so correct samples fall below the line with probability 0.001.

Here sets that are wrong in known ways (noise, one digit only, one digit missing, digits blurred or speckled)
are scored the same way. Held-out digits pass; each wrong set fails at least one of the lines, and the test
records what each metric alone cannot see (the label entropy is nearly blind to noise; the Gaussian line
passes speckled digits), so the lesson claims only what the pair can check.
"""

import math

import pytest
import torch
import torch.nn.functional as F

from common.datasets import load_signed_images
from common.evaluation import FrechetScorer, gaussian_samples_like, mode_kl_threshold, train_feature_classifier


@pytest.fixture(scope="module")
def digits():
    images = load_signed_images("digits")
    gen = torch.Generator().manual_seed(0)
    classifier, accuracy = train_feature_classifier(images.x_train, images.y_train, images.x_test, images.y_test,
                                                    epochs=30, generator=gen)
    scorer = FrechetScorer(classifier, images.x_train, images.x_test)
    n = len(images.x_test)
    entropy_line = math.log(10) - mode_kl_threshold(n, 10)
    return images, scorer, gen, n, entropy_line, accuracy


def test_sample_size_and_classifier(digits):
    images, _, _, n, entropy_line, accuracy = digits
    assert n == 359 and accuracy > 0.95
    assert 2.25 < entropy_line < 2.28  # ln 10 - 27.88 / 718


def test_held_out_digits_pass_both_lines(digits):
    images, scorer, gen, n, entropy_line, _ = digits
    assert scorer.floor < scorer.gaussian_baseline(gen)
    assert scorer.label_entropy(images.x_test) > entropy_line


def test_noise_and_a_single_digit_fail(digits):
    images, scorer, gen, n, entropy_line, _ = digits
    gaussian = scorer.gaussian_baseline(gen)
    noise = 2 * torch.rand(n, 1, 8, 8, generator=gen) - 1
    assert scorer.score(noise) > 10 * gaussian
    ones = images.x_train[images.y_train == 1][:n]
    assert scorer.score(ones) > 5 * gaussian
    assert scorer.label_entropy(ones) < 0.5 * entropy_line


@pytest.mark.parametrize("missing", range(10))
def test_a_missing_digit_fails_the_entropy_line_and_raises_the_fd(digits, missing):
    """Held-out digits without one class (about 320 images): H <= ln 9 < the line, and FD >= 1.5x the floor."""
    images, scorer, _, _, entropy_line, _ = digits
    subset = images.x_test[images.y_test != missing]
    assert scorer.label_entropy(subset) < entropy_line
    assert scorer.score(subset) > 1.5 * scorer.floor


def test_blurred_digits_fail_the_gaussian_line(digits):
    images, scorer, gen, *_ = digits
    blurred = F.avg_pool2d(F.pad(images.x_test, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    assert scorer.score(blurred) > scorer.gaussian_baseline(gen)


def test_what_each_metric_alone_cannot_see(digits):
    """Documented blind spots: the lesson pairs the two numbers and prints the FD as a multiple of its floor."""
    images, scorer, gen, n, entropy_line, _ = digits
    # speckled digits (pixel noise 0.3) still score below the fitted-Gaussian line, but far above the floor
    speckled = (images.x_test + 0.3 * torch.randn(images.x_test.shape, generator=gen)).clamp(-1, 1)
    assert scorer.floor * 3 < scorer.score(speckled) < scorer.gaussian_baseline(gen)
    # the classifier spreads pixel-Gaussian samples over all labels: they pass the old target H >= 0.9 ln 10,
    # which is why the lesson uses the chi-squared line (and the FD) instead
    gaussian = gaussian_samples_like(images.x_train, n, gen).clamp(-1, 1)
    assert scorer.label_entropy(gaussian) > 0.9 * math.log(10)
