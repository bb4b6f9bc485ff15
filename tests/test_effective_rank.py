"""Lesson 10's collapse grade, the effective rank of the embeddings, at the lesson's size (1,438 x 32).

It must tell an embedding that lost its directions from one that only shrank: isotropic features score near
D, features along one or three directions score near 1 or 3, and a copy scaled by 1e-3 scores as the original.
"""

import torch

from common.evaluation import effective_rank

N, D = 1438, 32


def test_isotropic_features_use_every_direction():
    z = torch.randn(N, D, generator=torch.Generator().manual_seed(0))
    assert effective_rank(z) > 0.9 * D


def test_collapsed_to_few_directions():
    gen = torch.Generator().manual_seed(1)
    for k in (1, 3):
        basis = torch.randn(k, D, generator=gen)
        z = torch.randn(N, k, generator=gen) @ basis + 1e-4 * torch.randn(N, D, generator=gen)
        assert effective_rank(z) < k + 0.5, k


def test_blind_to_scale():
    z = torch.randn(N, D, generator=torch.Generator().manual_seed(2)) * torch.linspace(0.1, 1, D)
    assert abs(effective_rank(1e-3 * z) - effective_rank(z)) < 1e-3
