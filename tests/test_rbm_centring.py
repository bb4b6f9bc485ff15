"""Centred RBM training (Melchior, Fischer & Wiskott 2016) in ``common.rbm.train_epoch(offsets=...)``.

Checked against a hand computation in the centred parameters (W, b', c'), converted back to the stored
uncentred ones (b = b' - W lam, c = c' - W^T mu), and against plain training when the offsets are zero.
"""

import torch

from common.rbm import RBM, centring_offsets, train_epoch


def _start():
    torch.manual_seed(0)
    x = (torch.rand(8, 5, dtype=torch.float64) < 0.4).double()
    rbm = RBM(5, 3, weight_scale=0.3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    rbm.b, rbm.c = 0.2 * torch.randn(5, dtype=torch.float64), 0.2 * torch.randn(3, dtype=torch.float64)
    return x, rbm


def test_centred_step_matches_a_hand_computation_in_centred_parameters():
    x, rbm = _start()
    mu, lam = torch.full((5,), 0.3, dtype=torch.float64), torch.full((3,), 0.6, dtype=torch.float64)
    lr, decay = 0.1, 0.01
    replay = torch.Generator().manual_seed(7)
    order = torch.randperm(len(x), generator=replay)
    h_data, v_model, h_model, _ = rbm.phases(x[order], 1, None, replay)
    v_d, v_m = x[order] - mu, v_model - mu
    grad_w = v_d.T @ (h_data - lam) / len(x) - v_m.T @ (h_model - lam) / len(x) - decay * rbm.W
    b_centred, c_centred = rbm.b + rbm.W @ lam, rbm.c + rbm.W.T @ mu  # E in (W, b', c') equals E in (W, b, c)
    new_w = rbm.W + lr * grad_w
    new_b = b_centred + lr * (x.mean(0) - v_model.mean(0)) - new_w @ lam
    new_c = c_centred + lr * (h_data.mean(0) - h_model.mean(0)) - new_w.T @ mu
    offsets = {"v": mu.clone(), "h": lam.clone()}
    train_epoch(rbm, x, lr=lr, k=1, batch_size=len(x), weight_decay=decay, offsets=offsets,
                generator=torch.Generator().manual_seed(7), monitor=False)
    for got, want in zip(rbm.parameters(), (new_w, new_b, new_c)):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-13)
    # the offsets slid 1 % of the way to the batch means
    torch.testing.assert_close(offsets["v"], 0.99 * mu + 0.01 * x.mean(0))
    torch.testing.assert_close(offsets["h"], 0.99 * lam + 0.01 * h_data.mean(0))


def test_zero_offsets_that_stay_zero_give_plain_training():
    x, plain = _start()
    centred = RBM.from_tensors(*plain.parameters())
    zeros = {"v": torch.zeros(5, dtype=torch.float64), "h": torch.zeros(3, dtype=torch.float64)}
    for rbm, offsets in ((plain, None), (centred, zeros)):
        train_epoch(rbm, x, lr=0.1, k=1, batch_size=4, momentum=0.5, weight_decay=1e-3, offsets=offsets,
                    offset_rate=0.0, generator=torch.Generator().manual_seed(3))
    for a, b in zip(plain.parameters(), centred.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-14)


def test_centring_offsets_are_the_data_means():
    x, rbm = _start()
    offsets = centring_offsets(rbm, x)
    torch.testing.assert_close(offsets["v"], x.mean(0))
    torch.testing.assert_close(offsets["h"], rbm.hidden_probs(x).mean(0))
