"""Lesson 03's claim: no fully visible (pairwise) Boltzmann machine gets KL(data || model) below 0.6485
nats on the 3x3 "even" bars-and-stripes images, and the infimum needs unbounded weights.

Independent of common/: the exponential family p(s) ~ exp(sum_{i<j} W_ij s_i s_j + b.s) over all
2^9 states in NumPy, fitted by L-BFGS on the exact KL (a convex function of (W, b)).
"""

import itertools

import numpy as np
from scipy.optimize import minimize

from common.boltzmann import bars_and_stripes


def test_pairwise_kl_infimum_on_even_bars_and_stripes():
    data = bars_and_stripes(3, parity="even").numpy()
    states = np.array(list(itertools.product([0.0, 1.0], repeat=9)))
    if data.min() < 0:  # the same family in +-1 spins
        states = 2 * states - 1
    iu = np.triu_indices(9, 1)

    def features(x):  # (s_i s_j for i < j, s_i)
        return np.concatenate([(x[:, :, None] * x[:, None, :])[:, iu[0], iu[1]], x], 1)

    f_states, f_data = features(states), features(data).mean(0)
    _, counts = np.unique(data, axis=0, return_counts=True)
    q = counts / counts.sum()
    entropy = -(q * np.log(q)).sum()

    def kl_and_grad(theta):  # KL = -mean log p(data) - H(data); its gradient is E_model[f] - E_data[f]
        a = f_states @ theta
        log_z = a.max() + np.log(np.exp(a - a.max()).sum())
        p = np.exp(a - log_z)
        return -(f_data @ theta - log_z) - entropy, p @ f_states - f_data

    result = minimize(kl_and_grad, np.zeros(f_states.shape[1]), jac=True, method="L-BFGS-B",
                      options={"maxiter": 20000, "gtol": 1e-12, "ftol": 1e-16})
    assert abs(result.fun - 0.6485) < 5e-4
    assert np.abs(result.x).max() > 10  # the infimum sits at infinity: the weights run away
