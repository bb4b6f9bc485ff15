"""PGD, BPDA and EOT against closed forms: linear models have a known worst case in the L-inf ball."""

import math

import torch

from common.adversarial import eot_bpda_loss, pgd_linf, straight_through


def linear_margin_loss(w, b, y):
    """-y (w . x + b): the attacker maximises it to push the decision of a linear classifier past 0."""
    return lambda x: -y * (x @ w + b)


def test_pgd_on_a_linear_model_reaches_the_closed_form_worst_case():
    gen = torch.Generator().manual_seed(0)
    w, b = torch.randn(16, generator=gen, dtype=torch.float64), 0.3
    x = 0.5 * torch.randn(8, 16, generator=gen, dtype=torch.float64)
    y = torch.tensor([1.0, -1.0] * 4, dtype=torch.float64)
    eps = 0.1
    x_adv = pgd_linf(linear_margin_loss(w, b, y), x, eps=eps, step_size=0.04, n_steps=5, clamp=None)
    # worst case of a linear loss in the L-inf ball: x - y eps sign(w); the loss rises by eps ||w||_1
    worst = x - eps * y[:, None] * w.sign()
    assert torch.allclose(x_adv, worst)
    gain = linear_margin_loss(w, b, y)(x_adv) - linear_margin_loss(w, b, y)(x)
    assert torch.allclose(gain, torch.full_like(gain, eps * float(w.abs().sum())))


def test_pgd_respects_the_box_as_well_as_the_ball():
    w = torch.tensor([1.0, -1.0, 2.0], dtype=torch.float64)
    x = torch.tensor([[0.95, -0.95, 0.0]], dtype=torch.float64)
    x_adv = pgd_linf(linear_margin_loss(w, 0.0, torch.tensor([-1.0], dtype=torch.float64)), x, eps=0.2,
                     step_size=0.05, n_steps=10, random_start=True, generator=torch.Generator().manual_seed(1))
    # per coordinate, the worst case is clip(x + eps sign(w), -1, 1): (1, -1, 0.2)
    assert torch.allclose(x_adv, torch.tensor([[1.0, -1.0, 0.2]], dtype=torch.float64))


def test_straight_through_keeps_the_forward_pass_and_uses_the_identity_jacobian():
    w = torch.tensor([1.0, -2.0, 3.0])
    x = torch.tensor([[0.1, 0.2, 0.3]], requires_grad=True)

    def halve(z):  # a purifier with known Jacobian 0.5 I
        return 0.5 * z

    out = straight_through(halve)(x)
    assert torch.allclose(out, 0.5 * x.detach())
    (grad,) = torch.autograd.grad((out @ w).sum(), x)
    assert torch.allclose(grad, w[None])  # BPDA: identity, not the true 0.5 w


def test_eot_averages_the_gradient_over_the_purifier_noise():
    # purifier z = x + sigma xi; loss |z|^2 has gradient 2 z (BPDA), whose expectation is 2 x
    gen = torch.Generator().manual_seed(0)
    sigma, n_eot = 0.5, 2000
    x = torch.tensor([[0.3, -0.7]], requires_grad=True)

    def noisy(z):
        return z + sigma * torch.randn(z.shape, generator=gen)

    loss = eot_bpda_loss(lambda z: (z**2).sum(-1), noisy, n_eot)
    (grad,) = torch.autograd.grad(loss(x).sum(), x)
    se = 2 * sigma / math.sqrt(n_eot)  # standard error of the mean of 2 sigma xi
    assert torch.all((grad - 2 * x.detach()).abs() < 4 * se)
