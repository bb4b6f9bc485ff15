"""Properties of CD-k and PCD (common/rbm.py) that lesson 05 relies on, checked against enumeration.

Every reference answer here is computed in this file by brute force over all visible (and
hidden) states of a tiny RBM, never by the function under test. Tolerances are z-scores built
from standard errors; each test says where its threshold comes from.
"""

import itertools
import math

import numpy as np
import torch

from common.datasets import load_images
from common.diagnostics import self_transition_rate
from common.rbm import RBM, data_visible_bias, train_epoch
from tests.test_rbm_metrics import tiny_rbm as random_rbm

N_V, N_H = 6, 4


def states(n: int) -> torch.Tensor:
    """All 2^n binary vectors in float64, built here independently of common/diagnostics."""
    return torch.tensor(list(itertools.product((0.0, 1.0), repeat=n)), dtype=torch.float64)


def tiny_rbm(seed: int, scale: float = 1.5) -> RBM:
    return random_rbm(seed, N_V, N_H, scale)  # the same draws as before, from tests/test_rbm_metrics.py


def brute_force(rbm: RBM):
    """p(v) and the Gibbs kernel T(v, v') = sum_h p(h | v) p(v' | h), from the joint over (v, h)."""
    V, H = states(N_V), states(N_H)
    # E(v, h) = -b.v - c.h - v^T W h on the full (2^n_v, 2^n_h) grid
    energy = -(V @ rbm.b)[:, None] - (H @ rbm.c)[None, :] - V @ rbm.W @ H.T
    joint = torch.softmax(-energy.flatten(), 0).reshape(energy.shape)  # p(v, h)
    p_v = joint.sum(1)
    p_h_given_v = joint / p_v[:, None]  # (v, h)
    p_v_given_h = joint / joint.sum(0, keepdim=True)  # (v', h), columns sum to 1
    return V, p_v, p_h_given_v @ p_v_given_h.T  # T[v, v']


def mean_hidden(rbm: RBM, v: torch.Tensor) -> torch.Tensor:
    """E[h | v] = sigmoid(c + v W), written out here."""
    return 1.0 / (1.0 + torch.exp(-(rbm.c + v @ rbm.W)))


def gradient_from(rbm: RBM, v_data: torch.Tensor, V: torch.Tensor, q_model: torch.Tensor) -> torch.Tensor:
    """<v h^T>_data - <v h^T>_q with the model term an exact sum over visible states weighted by q."""
    h_data, h_states = mean_hidden(rbm, v_data), mean_hidden(rbm, V)
    W = v_data.T @ h_data / len(v_data) - (V * q_model[:, None]).T @ h_states
    b = v_data.mean(0) - q_model @ V
    c = h_data.mean(0) - q_model @ h_states
    return torch.cat([W.flatten(), b, c])


def flat(grads: dict) -> torch.Tensor:
    return torch.cat([grads[name].flatten() for name in "Wbc"])


def cosine(a, b) -> float:
    return float(a @ b / (a.norm() * b.norm()))


def features(rbm: RBM, V: torch.Tensor) -> torch.Tensor:
    """What one chain ending in state v contributes to the model term: [vec(v E[h|v]^T), v, E[h|v]]."""
    h = mean_hidden(rbm, V)
    return torch.cat([(V[:, :, None] * h[:, None, :]).flatten(1), V, h], dim=1)  # (states, 34)


def test_cd_k_gradient_converges_to_exact_gradient_as_k_grows():
    rbm = tiny_rbm(0, scale=3.0)  # large weights: a slowly mixing chain, so CD-1 is visibly biased
    V, p_v, T = brute_force(rbm)
    data_idx = torch.tensor([3, 12, 33, 48, 63])  # five fixed training images
    v_data = V[data_idx]
    exact = gradient_from(rbm, v_data, V, p_v)
    assert torch.allclose(exact, flat(rbm.exact_gradient(v_data)), atol=1e-10)  # the library agrees
    f = features(rbm, V)

    g = torch.Generator().manual_seed(1)
    copies = 8000  # 40,000 chains, 8,000 from each training image
    exact_cos, mc_cos = [], []
    for k in (1, 3, 10, 50):
        Q = torch.linalg.matrix_power(T, k)[data_idx]  # (5, states): where a k-step chain from each image ends
        # the exact expectation of the CD-k estimator: the model term under p_data T^k
        expected = gradient_from(rbm, v_data, V, Q.mean(0))
        # its exact standard error: chains are independent, the data term is deterministic, so
        # Var(mean) = mean over starts of Var_{v ~ Q_s}[f(v)] / n_chains
        var = (Q @ f**2 - (Q @ f) ** 2).mean(0)
        se = torch.sqrt(var / (copies * len(data_idx)))
        estimate = flat(rbm.cd_gradient(v_data.repeat(copies, 1), k, generator=g)[0])
        # 34 components x 4 values of k, total false-alarm rate 1e-3: per-component two-sided level
        # 7e-6, normal quantile 4.5 (CLT over 40,000 chains). Components with zero variance must match.
        z = (estimate - expected).abs() / se.clamp_min(1e-12)
        assert float(z.max()) < 4.5, (k, float(z.max()))
        exact_cos.append(cosine(expected, exact))
        mc_cos.append(cosine(estimate, exact))
    # the exact CD-k direction approaches the true gradient monotonically on this model ...
    assert all(a < b for a, b in zip(exact_cos, exact_cos[1:])), exact_cos
    assert exact_cos[0] < 0.98 and exact_cos[-1] > 0.9999, exact_cos  # CD-1 biased, CD-50 unbiased
    # ... and so does the Monte-Carlo average. Its relative noise r = |SE| / |exact| is a few 1e-2
    # here, which costs 1 - cos ~ r^2 / 2 < 1e-3: far below CD-1's bias (1 - cos > 0.02), so the
    # ordering and the thresholds below cannot be produced by noise alone.
    assert mc_cos[0] < 0.98 < 0.995 < mc_cos[-1], mc_cos


def test_cd1_gradient_has_zero_mean_at_the_model_distribution():
    rbm = tiny_rbm(2)
    V, p_v, T = brute_force(rbm)
    g = torch.Generator().manual_seed(3)
    n = 200_000
    v_data = V[torch.multinomial(p_v, n, replacement=True, generator=g)]  # exact draws from the model
    estimate = flat(rbm.cd_gradient(v_data, 1, generator=g)[0])
    # one Gibbs step leaves p(v) invariant, so the data and model terms have the same expectation.
    # Exact variance of one chain's contribution f(v0) - f(v1), v0 ~ p, v1 ~ T(v0, .), mean 0:
    f = features(rbm, V)
    diff2 = (f[:, None, :] - f[None, :, :]) ** 2  # (v0, v1, 34)
    var = torch.einsum("a,ab,abp->p", p_v, T, diff2)
    z = estimate.abs() / torch.sqrt(var / n)
    # 34 components, total false-alarm rate 1e-3: per-component two-sided 3e-5, normal quantile 4.2
    assert float(z.max()) < 4.2, float(z.max())


def test_pcd_chains_reach_the_exact_marginal():
    rbm = tiny_rbm(4, scale=1.0)
    V, p_v, _ = brute_force(rbm)
    params_before = [t.clone() for t in rbm.parameters()]
    g = torch.Generator().manual_seed(5)
    n_chains = 4000
    chains = torch.bernoulli(torch.full((n_chains, N_V), 0.5, dtype=torch.float64), generator=g)
    x_train = V[torch.randint(len(V), (n_chains,), generator=g)]  # any data: lr = 0 freezes the model
    for _ in range(40):  # 4 batches per epoch, each chain advanced once per epoch: 40 Gibbs steps
        _, chains, _ = train_epoch(rbm, x_train, lr=0.0, k=1, batch_size=1000, chains=chains, generator=g)
    assert all(torch.equal(a, b) for a, b in zip(params_before, rbm.parameters()))
    index = (chains * 2 ** torch.arange(N_V - 1, -1, -1, dtype=torch.float64)).sum(1).long()
    empirical = torch.bincount(index, minlength=len(V)).double() / n_chains
    tv = 0.5 * float((empirical - p_v).abs().sum())
    # the null: TV of n_chains independent exact draws; 300 replicates give its mean and sd
    null = [0.5 * float((torch.bincount(torch.multinomial(p_v, n_chains, True, generator=g), minlength=len(V))
                         .double() / n_chains - p_v).abs().sum()) for _ in range(300)]
    assert tv < np.mean(null) + 5 * np.std(null), (tv, np.mean(null), np.std(null))
    assert 0.5 * float((1 / len(V) - p_v).abs().sum()) > np.mean(null) + 10 * np.std(null)  # the start was far


def test_self_transition_rate_frozen_independent_and_gibbs():
    frozen = torch.ones(50, 8, N_V).bernoulli_(0.5, generator=torch.Generator().manual_seed(6))[:1].expand(50, -1, -1)
    assert self_transition_rate(frozen) == 1.0

    rbm = tiny_rbm(7)
    V, p_v, T = brute_force(rbm)
    g = torch.Generator().manual_seed(8)
    n_steps, n_chains = 4001, 50
    draws = V[torch.multinomial(p_v, n_steps * n_chains, True, generator=g)].reshape(n_steps, n_chains, N_V)
    q = float((p_v**2).sum())  # P(s_t = s_{t+1}) for independent draws
    # Var of one indicator q(1 - q); neighbours share a draw: Cov = sum p^3 - q^2; others independent
    var = q * (1 - q) + 2 * (float((p_v**3).sum()) - q**2)
    se = math.sqrt(var / ((n_steps - 1) * n_chains))
    assert abs(self_transition_rate(draws) - q) < 5 * se, (self_transition_rate(draws), q, se)

    # one Gibbs step from equilibrium stays put with probability sum_v p(v) T(v, v); with one step
    # per independent chain the indicators are independent Bernoullis: SE = sqrt(s (1 - s) / n).
    n = 20_000
    v0 = V[torch.multinomial(p_v, n, True, generator=g)]
    v1, _ = rbm.gibbs(v0, 1, g)
    stay = float(p_v @ torch.diagonal(T))
    rate = self_transition_rate(torch.stack([v0, v1]))
    assert abs(rate - stay) < 5 * math.sqrt(stay * (1 - stay) / n), (rate, stay)


def exact_inverted_mass(rbm: RBM) -> float:
    """p(more than half of the pixels on), exactly: sum_h p(h) P(sum_i v_i > n_v / 2 | h).

    Given h the pixels are independent Bernoullis, so the count of lit pixels is Poisson-binomial;
    its distribution is built by convolving the pixels one at a time (no sampling).
    """
    hidden = states(rbm.n_hidden)
    p_h = torch.softmax(-rbm.hidden_free_energy(hidden), 0)
    p_on = rbm.visible_probs(hidden)  # (2^n_h, n_v)
    counts = torch.zeros(len(hidden), rbm.n_visible + 1, dtype=torch.float64)
    counts[:, 0] = 1.0
    for i in range(rbm.n_visible):  # P(count = c) after pixel i: off keeps c, on moves c -> c + 1
        counts = torch.cat([counts[:, :1] * (1 - p_on[:, i:i + 1]),
                            counts[:, 1:] * (1 - p_on[:, i:i + 1]) + counts[:, :-1] * p_on[:, i:i + 1]], 1)
    return float(p_h @ counts[:, rbm.n_visible // 2 + 1:].sum(1))



def test_exact_inverted_mass_matches_the_joint_enumeration():
    """The Poisson-binomial mass of the test below, against summing p(v) over the visible states directly."""
    for seed in range(3):
        rbm = tiny_rbm(seed)
        V, p_v, _ = brute_force(rbm)
        assert abs(exact_inverted_mass(rbm) - float(p_v[V.sum(1) > N_V / 2].sum())) < 1e-12


def test_cd1_removes_a_far_mode_far_more_slowly_than_pcd():
    """Lesson 05's fig09: start from an RBM of digits + their negatives, then train on digits only.

    CD-1's negative phase stays one Gibbs step from a digit and never meets an inverted image, so after
    20 epochs the inverted mode still holds most of its mass; PCD's persistent chains visit it and push
    it up within an epoch or two. (Given hundreds of epochs CD-1 removes it too: the lesson measures how
    much more slowly.) This smaller run (8 hidden, 10 + 20 epochs) keeps 0.93, 1.00 and 0.95 on the three
    starts tested (0.78, 0.92 and 0.09 on starts 3-5: the mean over starts is the robust number) and PCD
    0.0000 on all six, so the thresholds sit far from both.
    """
    x = load_images("digits").x_train.double()
    both = torch.cat([x, 1 - x])
    kept, removed = [], []
    for seed in range(3):
        g = torch.Generator().manual_seed(seed)
        start = RBM(64, 8, 0.01, visible_bias=data_visible_bias(both), generator=g, dtype=torch.float64)
        velocity = None
        for _ in range(10):
            velocity, _, _ = train_epoch(start, both, lr=0.05, k=1, batch_size=20, momentum=0.5, weight_decay=1e-4,
                                         velocity=velocity, generator=g)
        assert exact_inverted_mass(start) > 0.9  # the start really holds the far mode
        for persistent, out in ((False, kept), (True, removed)):
            rbm = RBM.from_tensors(start.W, start.b, start.c)
            chains = torch.bernoulli(torch.full((20, 64), 0.5, dtype=torch.float64), generator=g) \
                if persistent else None
            velocity = None
            for epoch in range(20):
                lr = 0.1 * (1 - epoch / 20) if persistent else 0.1  # PCD decays its rate, CD-1 keeps it
                velocity, chains, _ = train_epoch(rbm, x, lr=lr, k=1, batch_size=20, momentum=0.5,
                                                  weight_decay=1e-4, velocity=velocity, chains=chains, generator=g)
            out.append(exact_inverted_mass(rbm))
    assert np.mean(kept) > 0.5, kept
    assert max(removed) < 0.02, removed
