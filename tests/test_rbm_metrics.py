"""Lessons 04-05's exact RBM quantities against brute force, and the 'far' metric shown to fail on bad samples.

- ``exact_count_tail`` (lesson 05's exact mass on inverted images) against summing p(v) over every visible state;
- ``aggregated_posterior_kl`` (lesson 04's largest possible DBN gain) against q(h) and p(h) from the joint, and
  the inequality it stands for: no top RBM raises the mean exact DBN bound by more;
- ``far_fraction`` (lesson 05's spurious-mode metric) at the lesson's sample sizes: real held-out digits score
  about 1 - quantile, and 5 % noise images or 5 % inverted digits among them are flagged;
- ``train_epoch(monitor=False)``: the same update without the reconstruction monitor (lesson 04's timing).
"""

import itertools
import math

import torch

from common.datasets import load_images
from common.evaluation import far_fraction, nearest_hamming
from common.rbm import RBM, aggregated_posterior_kl, dbn_variational_bound, exact_count_tail, rbm_on_top, train_epoch


def states(n: int) -> torch.Tensor:
    return torch.tensor(list(itertools.product((0.0, 1.0), repeat=n)), dtype=torch.float64)


def tiny_rbm(seed: int, n_v: int = 6, n_h: int = 4, scale: float = 1.5) -> RBM:
    g = torch.Generator().manual_seed(seed)
    rbm = RBM(n_v, n_h, weight_scale=scale, generator=g, dtype=torch.float64)
    rbm.b = 0.5 * torch.randn(n_v, generator=g, dtype=torch.float64)
    rbm.c = 0.5 * torch.randn(n_h, generator=g, dtype=torch.float64)
    return rbm


def joint(rbm: RBM):
    """(V, H, p(v, h)) by enumerating every pair: E(v, h) = -b.v - c.h - v^T W h."""
    V, H = states(rbm.n_visible), states(rbm.n_hidden)
    neg_energy = (V @ rbm.b)[:, None] + (H @ rbm.c)[None, :] + V @ rbm.W @ H.T
    return V, H, torch.softmax(neg_energy.flatten(), 0).reshape(neg_energy.shape)


def test_exact_count_tail_matches_the_joint_enumeration():
    for seed, n_h in ((0, 4), (1, 5), (2, 3)):
        rbm = tiny_rbm(seed, n_h=n_h)
        V, _, p = joint(rbm)
        p_v = p.sum(1)
        for more_than in range(rbm.n_visible):
            brute = float(p_v[V.sum(1) > more_than].sum())
            assert abs(exact_count_tail(rbm, more_than, drop=0.0) - brute) < 1e-12, (seed, more_than)
            assert abs(exact_count_tail(rbm, more_than) - brute) <= 1e-12 + 1e-14  # the pruned version's bound


def test_aggregated_posterior_kl_matches_brute_force():
    for seed, n_h in ((0, 4), (3, 5)):
        rbm = tiny_rbm(seed, n_h=n_h)
        V, _, p = joint(rbm)
        p_h = p.sum(0)
        data = V[torch.tensor([1, 5, 9, 22, 40, 63])]
        rows = torch.stack([p[int(v @ (2 ** torch.arange(rbm.n_visible - 1, -1, -1.0, dtype=torch.float64)))]
                            for v in data])  # p(v_n, h) for each data row, counting order
        q = (rows / rows.sum(1, keepdim=True)).mean(0)  # q(h) = mean_n p(h | v_n)
        brute = float((q * (q.log() - p_h.log())).sum())
        assert abs(aggregated_posterior_kl(rbm, data) - brute) < 1e-12, (seed, brute)


def test_no_top_rbm_raises_the_mean_bound_by_more_than_the_kl():
    """The bound's only top-dependent term is E_q[log p_top]; the claim of lesson 04 section 6 in miniature."""
    bottom = tiny_rbm(4, n_v=6, n_h=4)
    V = states(6)
    data = V[torch.tensor([0, 3, 7, 12, 33, 48, 62])]
    kl = aggregated_posterior_kl(bottom, data)
    start = dbn_variational_bound(bottom, rbm_on_top(bottom), data).mean()
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        top = rbm_on_top(bottom)
        top = RBM.from_tensors(top.W + torch.randn(top.W.shape, generator=g, dtype=torch.float64),
                               top.b + torch.randn(top.b.shape, generator=g, dtype=torch.float64), top.c)
        gain = float(dbn_variational_bound(bottom, top, data).mean() - start)
        assert gain <= kl + 1e-12, (gain, kl)
    assert kl > 0.01  # the bound is not vacuous here: there is something to gain


def _digits_and_threshold(quantile: float = 0.99):
    data = load_images("digits", binary=True)
    far = float(torch.quantile(nearest_hamming(data.x_test, data.x_train), quantile))
    return data, far


def test_far_fraction_flags_noise_and_inverted_digits_at_the_lessons_sample_sizes():
    """Lesson 05 scores 4 copies x 359 test images (1,436) and 4,000 exact samples against the 99 % line."""
    data, far = _digits_and_threshold()
    g = torch.Generator().manual_seed(0)
    for n in (1436, 4000):
        good = data.x_test[torch.randint(len(data.x_test), (n,), generator=g)]
        clean = far_fraction(good, data.x_train, far)
        se = math.sqrt(0.01 * 0.99 / len(data.x_test))  # the 1 % line itself is estimated from 359 test images
        assert clean < 0.01 + 3 * se + 3 * math.sqrt(0.01 * 0.99 / n), (n, clean)
        n_bad = n // 20  # 5 % wrong samples
        for bad in (torch.bernoulli(torch.full((n_bad, good.shape[1]), 0.5), generator=g),  # noise images
                    1 - good[:n_bad]):  # inverted digits: a far mode
            mixed = torch.cat([good[n_bad:], bad])
            score = far_fraction(mixed, data.x_train, far)
            assert score > clean + 0.03, (n, clean, score)  # 5 % bad samples add ~0.05
        assert far_fraction(1 - good, data.x_train, far) == 1.0


def test_train_epoch_without_monitor_makes_the_same_update():
    """With one batch per epoch the monitor's random draws come after the update: parameters must agree exactly."""
    x = load_images("digits", binary=True).x_train[:64]
    results = []
    for monitor in (True, False):
        g = torch.Generator().manual_seed(3)
        rbm = RBM(64, 8, 0.01, generator=g)
        _, _, recon = train_epoch(rbm, x, lr=0.1, batch_size=64, momentum=0.5, weight_decay=1e-4, generator=g,
                                  monitor=monitor)
        results.append((rbm, recon))
    (with_monitor, recon), (without, nan) = results
    for a, b in zip(with_monitor.parameters(), without.parameters()):
        assert torch.equal(a, b)
    assert math.isfinite(recon) and math.isnan(nan)
