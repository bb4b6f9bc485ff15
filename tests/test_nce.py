"""NCE's optimum on a case with a known answer: a Gaussian model against Gaussian noise.

The population objective is approximated by deterministic quantile points of the two Gaussians
(midpoint rule in probability), so the maximiser must be the true mean, precision and log Z up
to the quadrature error, not up to sampling noise.
"""

import math

import torch
from scipy import optimize, stats

from common.nce import nce_loss

TRUE_MEAN, TRUE_STD = 1.0, 0.5
NOISE_MEAN, NOISE_STD = 0.0, 2.0


def quantile_points(mean, std, n):
    u = (torch.arange(n, dtype=torch.float64) + 0.5) / n
    return torch.tensor(stats.norm.ppf(u.numpy(), loc=mean, scale=std))


def gaussian_log_density(x, mean, std):
    return -0.5 * ((x - mean) / std) ** 2 - math.log(std) - 0.5 * math.log(2 * math.pi)


def fit_nce(nu, n=40000):
    x = quantile_points(TRUE_MEAN, TRUE_STD, n)
    y = quantile_points(NOISE_MEAN, NOISE_STD, int(nu * n))
    log_q_x, log_q_y = gaussian_log_density(x, NOISE_MEAN, NOISE_STD), gaussian_log_density(y, NOISE_MEAN, NOISE_STD)

    def objective(params):
        theta = torch.tensor(params, dtype=torch.float64, requires_grad=True)
        mean, log_precision, zeta = theta
        # E(u) = precision/2 (u - mean)^2, log p = -E - zeta
        def log_model(u):
            return -0.5 * torch.exp(log_precision) * (u - mean) ** 2 - zeta
        loss, _ = nce_loss(log_model(x), log_q_x, log_model(y), log_q_y, nu)
        (grad,) = torch.autograd.grad(loss, theta)
        return float(loss.detach()), grad.numpy()

    result = optimize.minimize(objective, [0.0, 0.0, 0.0], jac=True, method="BFGS", options={"gtol": 1e-10})
    return result.x


def test_nce_optimum_is_the_truth_with_exact_log_z():
    for nu in (1.0, 5.0):
        mean, log_precision, zeta = fit_nce(nu)
        precision = math.exp(log_precision)
        assert abs(mean - TRUE_MEAN) < 1e-3
        assert abs(precision - 1 / TRUE_STD**2) < 1e-2 * (1 / TRUE_STD**2)
        exact_log_z = 0.5 * math.log(2 * math.pi / precision)  # log int exp(-precision/2 (u-m)^2) du
        assert abs(zeta - exact_log_z) < 1e-3
        assert abs(zeta - 0.5 * math.log(2 * math.pi * TRUE_STD**2)) < 5e-3


def test_nce_loss_by_hand():
    # one data point with G = 0 and one noise point with G = 0: -J = -(log 1/2 + nu log 1/2)
    nu = 3.0
    g0 = torch.tensor([math.log(nu)])  # log p - log q = log nu  ->  G = 0
    loss, logs = nce_loss(g0, torch.zeros(1), g0, torch.zeros(1), nu)
    assert math.isclose(float(loss), (1 + nu) * math.log(2), rel_tol=1e-6)
    assert math.isclose(float(logs["r_data"]), 0.5)
