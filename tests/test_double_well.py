"""The double-well family's log Z and expectations (lessons 06 and 10) against scipy's adaptive quadrature."""

import math

import numpy as np
import pytest
import torch
from scipy import integrate

from common.double_well import QuarticFamily, half_width_for, suff_stats


@pytest.mark.parametrize("theta", [(-4.0, 1.0), (1.0, 0.5), (-10.0, 0.05)])
def test_log_z_and_moments_match_adaptive_quadrature(theta):
    family = QuarticFamily(half_width_for(theta), 400)
    density = lambda x: math.exp(-(theta[0] * x**2 / 2 + theta[1] * x**4 / 4))  # noqa: E731
    z, _ = integrate.quad(density, -np.inf, np.inf, limit=200)
    assert family.log_partition(theta) == pytest.approx(math.log(z), abs=1e-9)
    second, _ = integrate.quad(lambda x: x**2 * density(x), -np.inf, np.inf, limit=200)
    assert family.expectation(theta, lambda x: x**2) == pytest.approx(second / z, rel=1e-8)
    torch_log_z = family.log_partition_torch(torch.tensor(theta, dtype=torch.float64))
    assert float(torch_log_z) == pytest.approx(family.log_partition(theta), abs=1e-12)


def test_half_width_leaves_200_nats_and_suff_stats_keep_the_type():
    theta = (-10.0, 0.05)
    L = half_width_for(theta)
    e = lambda x: theta[0] * x**2 / 2 + theta[1] * x**4 / 4  # noqa: E731
    e_min = -theta[0] ** 2 / (4 * theta[1])
    assert e(L) - e_min == pytest.approx(200.0) and half_width_for((1.0, 1.0)) == 8.0
    assert isinstance(suff_stats(torch.ones(3)), torch.Tensor) and suff_stats(np.ones(3)).shape == (3, 2)
