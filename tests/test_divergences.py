"""common.divergences against closed forms and quadrature.

For P = N(m1, s1^2) and Q = N(m2, s2^2) in 1-D,
    KL(P || Q) = log(s2 / s1) + (s1^2 + (m1 - m2)^2) / (2 s2^2) - 1/2,
and the optimal Donsker-Varadhan critic is T*(x) = log p(x) - log q(x) (any constant added), for which
E_P[T*] - log E_Q[e^{T*}] = KL exactly. A critic c T* with c != 1 gives a strictly smaller value, which
we compute independently by quadrature.
"""

import math

import numpy as np
import pytest
import torch
from scipy import integrate, stats

from common.divergences import donsker_varadhan_bound, donsker_varadhan_se, kl_by_quadrature

M1, S1, M2, S2 = 0.5, 0.8, -0.3, 1.3


def gaussian_kl(m1, s1, m2, s2):
    return math.log(s2 / s1) + (s1**2 + (m1 - m2) ** 2) / (2 * s2**2) - 0.5


def optimal_critic(x):
    return stats.norm.logpdf(x, M1, S1) - stats.norm.logpdf(x, M2, S2)


@pytest.mark.parametrize("m1, s1, m2, s2", [(M1, S1, M2, S2), (0.0, 1.0, 3.0, 0.5), (2.0, 0.3, 2.0, 0.3)])
def test_kl_by_quadrature_matches_the_gaussian_closed_form(m1, s1, m2, s2):
    value = kl_by_quadrature(lambda x: stats.norm.logpdf(x, m1, s1), lambda x: stats.norm.logpdf(x, m2, s2),
                             -30, 30, points=(m1, m2))
    assert value == pytest.approx(gaussian_kl(m1, s1, m2, s2), abs=1e-8)


def test_dv_with_the_optimal_critic_estimates_the_closed_form_kl():
    rng = np.random.default_rng(0)
    n, repeats = 20000, 40
    estimates, ses = [], []
    for _ in range(repeats):
        t_p = torch.as_tensor(optimal_critic(rng.normal(M1, S1, n)))
        t_q = torch.as_tensor(optimal_critic(rng.normal(M2, S2, n)))
        estimates.append(float(donsker_varadhan_bound(t_p, t_q)))
        ses.append(donsker_varadhan_se(t_p, t_q))
    estimates = np.array(estimates)
    spread = estimates.std(ddof=1)
    # the mean of 40 independent estimates sits within 4 standard errors of the truth
    # (the O(1/n) bias of the log-mean-exp is ~1e-5 here, far below that)
    assert abs(estimates.mean() - gaussian_kl(M1, S1, M2, S2)) < 4 * spread / math.sqrt(repeats)
    # the delta-method s.e. matches the spread across repeats (the s.e. of a std from 40 draws is ~11 %)
    assert np.mean(ses) == pytest.approx(spread, rel=0.35)


@pytest.mark.parametrize("scale", [0.5, 1.5])
def test_dv_with_a_worse_critic_gives_its_quadrature_value_below_the_kl(scale):
    # population value of T = scale * T*: E_P[T] - log int q e^T dx, by quadrature
    e_p = integrate.quad(lambda x: stats.norm.pdf(x, M1, S1) * scale * optimal_critic(x), -30, 30)[0]
    z_q = integrate.quad(lambda x: stats.norm.pdf(x, M2, S2) * math.exp(scale * optimal_critic(x)), -30, 30)[0]
    population = e_p - math.log(z_q)
    assert population < gaussian_kl(M1, S1, M2, S2) - 1e-3  # strictly below: the bound is tight only at T*
    rng = np.random.default_rng(1)
    n = 400000
    t_p = torch.as_tensor(scale * optimal_critic(rng.normal(M1, S1, n)))
    t_q = torch.as_tensor(scale * optimal_critic(rng.normal(M2, S2, n)))
    estimate = float(donsker_varadhan_bound(t_p, t_q))
    assert abs(estimate - population) < 4 * donsker_varadhan_se(t_p, t_q)


def test_dv_bound_is_unchanged_by_a_constant_shift_of_the_critic():
    t_p, t_q = torch.randn(100, dtype=torch.float64), torch.randn(80, dtype=torch.float64)
    # E_P[T + c] - log E_Q[e^{T + c}] = E_P[T] - log E_Q[e^T]; large c also checks there is no overflow
    assert float(donsker_varadhan_bound(t_p + 800.0, t_q + 800.0)) == pytest.approx(
        float(donsker_varadhan_bound(t_p, t_q)), abs=1e-9)
