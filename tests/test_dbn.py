"""The deep-belief-network helpers of common/rbm.py against brute-force enumeration in NumPy.

Hinton, Osindero & Teh (2006), section 4: for the DBN p(v, h1) = p_top(h1) p(v | h1) and the
bottom RBM's factorial posterior Q(h1 | v),
    log p(v) >= B(v) = sum_h1 Q(h1 | v) [log p_top(h1) + log p(v | h1) - log Q(h1 | v)],
    log p(v) - B(v) = KL(Q(h1 | v) || p_DBN(h1 | v)),
and with the top RBM started at the transposed bottom weights the bound is tight: B(v) = log p1(v).
Every reference here enumerates states with itertools and NumPy, never the functions under test.
"""

import itertools

import numpy as np
import pytest
import torch

from common.rbm import RBM, dbn_sample, dbn_variational_bound, rbm_on_top


def states(n):
    return np.array(list(itertools.product((0.0, 1.0), repeat=n)))


def logsumexp(a, axis=None):
    m = np.max(a, axis=axis, keepdims=True)
    return np.squeeze(m + np.log(np.exp(a - m).sum(axis=axis, keepdims=True)), axis=axis)


def random_rbm(n_v, n_h, scale, seed):
    rng = np.random.default_rng(seed)
    W, b, c = rng.normal(0, scale, (n_v, n_h)), rng.normal(0, 0.5, n_v), rng.normal(0, 0.5, n_h)
    return RBM.from_tensors(torch.tensor(W), torch.tensor(b), torch.tensor(c)), (W, b, c)


def brute_rbm_log_joint(W, b, c):
    """log p(v, h) for every (v, h) pair, shape (2^n_v, 2^n_h), from E(v, h) = -b.v - c.h - v^T W h."""
    v, h = states(len(b)), states(len(c))
    neg_e = (v @ b)[:, None] + (h @ c)[None, :] + v @ W @ h.T
    return neg_e - logsumexp(neg_e)


def brute_dbn(bottom, top):
    """log p_DBN(v), log Q(h1 | v) and log p_DBN(v, h1), by enumerating v, h1 and h2."""
    (W1, b1, c1), (W2, b2, c2) = bottom, top
    v, h1 = states(len(b1)), states(len(c1))
    log_p_top = logsumexp(brute_rbm_log_joint(W2, b2, c2), axis=1)  # (2^n_h1,) marginal of the top RBM
    a = h1 @ W1.T + b1  # (2^n_h1, n_v)
    log_p_v_given_h = v @ a.T - np.logaddexp(0, a).sum(1)[None, :]  # (2^n_v, 2^n_h1)
    log_joint = log_p_top[None, :] + log_p_v_given_h
    mu = 1 / (1 + np.exp(-(v @ W1 + c1)))  # (2^n_v, n_h1)
    log_q = np.log(mu) @ h1.T + np.log1p(-mu) @ (1 - h1).T
    return logsumexp(log_joint, axis=1), log_q, log_joint


@pytest.mark.parametrize("n_v, n_h1", [(5, 4), (4, 5)])  # an even and an uneven split of h1 into halves
def test_bound_is_tight_at_transposed_weights(n_v, n_h1):
    bottom, (W, b, c) = random_rbm(n_v, n_h1, 1.0, seed=n_v)
    v = torch.tensor(states(n_v))
    log_p1 = logsumexp(brute_rbm_log_joint(W, b, c), axis=1)  # exact log p1(v) of the bottom RBM
    bound = dbn_variational_bound(bottom, rbm_on_top(bottom), v).numpy()
    np.testing.assert_allclose(bound, log_p1, atol=1e-10)


@pytest.mark.parametrize("n_v, n_h1, n_h2", [(5, 4, 3), (4, 5, 6)])
def test_bound_matches_enumeration_and_gap_is_the_posterior_kl(n_v, n_h1, n_h2):
    bottom, bottom_np = random_rbm(n_v, n_h1, 1.0, seed=1)
    top, top_np = random_rbm(n_h1, n_h2, 1.0, seed=2)
    log_p, log_q, log_joint = brute_dbn(bottom_np, top_np)
    q = np.exp(log_q)
    bound_ref = (q * (log_joint - log_q)).sum(1)
    kl = (q * (log_q - (log_joint - log_p[:, None]))).sum(1)  # KL(Q || p_DBN(h1 | v))
    bound = dbn_variational_bound(bottom, top, torch.tensor(states(n_v))).numpy()
    np.testing.assert_allclose(bound, bound_ref, atol=1e-10)
    np.testing.assert_allclose(log_p - bound, kl, atol=1e-10)
    assert (kl > 1e-3).all()  # a random top RBM: the bound is strictly below log p(v) here


def test_bound_refuses_a_first_layer_it_cannot_enumerate():
    bottom, _ = random_rbm(3, 21, 0.1, seed=0)
    with pytest.raises(ValueError, match="at most 20"):
        dbn_variational_bound(bottom, rbm_on_top(bottom), torch.zeros(1, 3, dtype=torch.float64))


def test_dbn_sample_draws_the_dbn_marginal():
    """Mean of p(v | h1) over independent chains -> P(v_i = 1) under the DBN, within 4 standard errors."""
    bottom, bottom_np = random_rbm(4, 3, 1.0, seed=3)
    top, top_np = random_rbm(3, 5, 1.0, seed=4)
    log_p, _, _ = brute_dbn(bottom_np, top_np)
    exact_marginal = np.exp(log_p) @ states(4)  # (n_v,)
    gen = torch.Generator().manual_seed(0)
    h1 = torch.bernoulli(torch.full((20000, 3), 0.5, dtype=torch.float64), generator=gen)
    probs = dbn_sample(bottom, top, h1, steps=50, generator=gen).numpy()
    # chains are independent, so SE = std / sqrt(n); 50 steps mix this 3-unit chain far below that SE
    se = probs.std(0) / np.sqrt(len(probs))
    assert np.all(np.abs(probs.mean(0) - exact_marginal) < 4 * se), (probs.mean(0), exact_marginal, se)
