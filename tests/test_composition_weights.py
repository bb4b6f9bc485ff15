"""Lesson 09's check of an OR composition: the component weight, which rejects 0.40/0.60 at the lesson's
2000 chains, where the histogram TV against its exact-sample floor does not."""

import math

import torch

from common.composition import (
    compose_or,
    exact_mixture_share,
    grid_cells,
    grid_probabilities,
    grid_samples,
    histogram_tv,
    mixture_share,
)
from common.diagnostics import expected_tv_iid

BOX = (-4.5, 4.5, -4.5, 4.5)
N_CHAINS, BINS = 2000, 30  # the lesson's --compose-chains and --tv-bins


def normalised(energy_fn):
    points, area = grid_cells(BOX, 400)
    log_z = float(torch.logsumexp(-energy_fn(points.float()).double(), 0) + math.log(area))
    return lambda x: energy_fn(x) + log_z


RING = normalised(lambda x: (x.norm(dim=-1) - 2.5) ** 2 / (2 * 0.35**2))
BLOB = normalised(lambda x: ((x - torch.tensor([2.0, 1.0])) ** 2).sum(-1) / 2)
OR = compose_or(RING, BLOB)


def mixture_draws(blob_weight, seed):
    # exact samples of (1 - w) ring + w blob from fine grid cells (the TV grid is coarser)
    g = torch.Generator().manual_seed(seed)
    fine = 240
    probs = ((1 - blob_weight) * grid_probabilities(RING, BOX, fine, refine=2)
             + blob_weight * grid_probabilities(BLOB, BOX, fine, refine=2))
    return grid_samples(probs, BOX, N_CHAINS, generator=g)


def share_check(samples, reference):
    share, se = mixture_share(RING, BLOB, samples)
    return abs(share - reference) <= 2 * se


def test_exact_share_of_two_normalised_energies_is_one_half():
    assert abs(exact_mixture_share(RING, BLOB, OR, BOX, n=600) - 0.5) < 2e-3


def test_share_check_accepts_equal_weights_and_rejects_40_60():
    reference = exact_mixture_share(RING, BLOB, OR, BOX, n=600)
    accepted = sum(share_check(mixture_draws(0.5, seed), reference) for seed in range(10))
    assert accepted >= 8  # a 2-SE test accepts the truth ~95 % of the time
    for w in (0.4, 0.6):
        assert not any(share_check(mixture_draws(w, seed), reference) for seed in range(10))


def test_tv_against_its_floor_cannot_tell_40_60_from_50_50():
    # why the lesson does not grade OR by TV alone: at 2000 samples on a 30 x 30 grid the TV of a 0.40/0.60
    # mixture stays within 1.15x the exact-sample floor
    probs = grid_probabilities(OR, BOX, BINS)
    floor = expected_tv_iid(probs, N_CHAINS)
    assert histogram_tv(mixture_draws(0.4, 1), probs, BOX) < 1.15 * floor


def test_tv_against_its_floor_rejects_a_wrong_and():
    # the lesson's AND / NOT check: samples of the ring alone (the blob's veto ignored) are far above 1.15x the floor,
    # exact AND samples are not
    from common.composition import compose_and
    g = torch.Generator().manual_seed(3)
    probs = grid_probabilities(compose_and(RING, BLOB), BOX, BINS)
    floor = expected_tv_iid(probs, N_CHAINS)
    assert histogram_tv(mixture_draws(0.0, 2), probs, BOX) > 1.15 * floor
    exact = grid_samples(grid_probabilities(compose_and(RING, BLOB), BOX, 240, refine=2), BOX, N_CHAINS, generator=g)
    assert histogram_tv(exact, probs, BOX) < 1.15 * floor
