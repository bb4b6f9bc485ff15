"""Lesson 10's latent-prior grade, the Fréchet distance in classifier features, can fail at the lesson's size.

Lesson 10 (section 4) scores 135 decoded digits of four classes (0, 1, 4, 7: the test images of those classes)
against the training digits, in the features of a classifier trained on all ten digits. Here the same FD is given
sample sets that are wrong in the ways a latent-variable generator is wrong -- a class missing, blends of two
digits (what a prior that draws z between clusters decodes to), noisy digits, one class only -- and must put
each of them far above what held-out digits score (its floor), while a fresh draw of real digits stays near it.
"""

import pytest
import torch

from common.datasets import load_signed_images
from common.evaluation import FrechetScorer, train_feature_classifier

CLASSES = (0, 1, 4, 7)


@pytest.fixture(scope="module")
def setup():
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    images = load_signed_images("digits")
    classifier, _ = train_feature_classifier(images.x_train, images.y_train, images.x_test, images.y_test,
                                             generator=gen)
    classes = torch.tensor(CLASSES)
    in_train, in_test = torch.isin(images.y_train, classes), torch.isin(images.y_test, classes)
    scorer = FrechetScorer(classifier, images.x_train[in_train], images.x_test[in_test])
    return gen, scorer, images.x_train[in_train], images.y_train[in_train], int(in_test.sum())


def draw(x, n, gen):
    return x[torch.randint(len(x), (n,), generator=gen)]


def wrong_sets(x, y, n, gen):
    first_pick, second_pick = draw(x, n, gen), draw(x, n, gen)
    return {
        "class 7 missing": draw(x[y != 7], n, gen),
        "one class only": draw(x[y == 1], n, gen),
        "blends of two digits": (first_pick + second_pick) / 2,
        "noisy digits (std 0.5)": (draw(x, n, gen) + 0.5 * torch.randn(first_pick.shape, generator=gen)).clamp(-1, 1),
    }


def test_sample_size_matches_the_lesson(setup):
    assert setup[4] == 135


def test_real_digits_stay_near_the_floor(setup):
    gen, scorer, x, y, n = setup
    fresh = [scorer.score(draw(x, n, gen)) for _ in range(3)]
    assert max(fresh) < 1.5 * scorer.floor + 1.0, (fresh, scorer.floor)


@pytest.mark.parametrize("name", ["class 7 missing", "one class only", "blends of two digits",
                                  "noisy digits (std 0.5)"])
def test_wrong_sets_are_rejected(setup, name):
    gen, scorer, x, y, n = setup
    value = scorer.score(wrong_sets(x, y, n, gen)[name])
    assert value > 3 * scorer.floor, (name, value, scorer.floor)
