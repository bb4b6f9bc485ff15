"""Adversarial attacks for evaluating a defence honestly: PGD, BPDA and EOT.

- PGD (Madry et al. 2018): projected gradient ASCENT on the loss inside the L-infinity ball
  ||x' - x||_inf <= eps, one signed step at a time.
- BPDA (Athalye et al. 2018): a purifier made of many sampler steps has a useless or unaffordable
  gradient; replace its Jacobian by the identity in the backward pass (the forward pass is unchanged).
- EOT (expectation over transformation): a random purifier gives a different output every call; attack
  the AVERAGE loss over several draws, so the step follows the expected gradient, not one draw's noise.

A defence evaluated only against an attack that ignores it ("naive") looks stronger than it is;
the adaptive attack (PGD through BPDA with EOT) is the number to report.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

LossFn = Callable[[torch.Tensor], torch.Tensor]  # (B, ...) -> (B,) per-example losses to be maximised


def pgd_linf(loss_fn: LossFn, x: torch.Tensor, eps: float, step_size: float, n_steps: int,
             clamp: tuple[float, float] | None = (-1.0, 1.0), random_start: bool = False,
             generator: torch.Generator | None = None) -> torch.Tensor:
    """Maximise ``loss_fn`` over the L-inf ball of radius ``eps`` around ``x`` (intersected with ``clamp``).

    x_{k+1} = Proj( x_k + alpha sign(grad_x loss(x_k)) ),   Proj = clip to [x - eps, x + eps] and to clamp
    """
    x0 = x.detach()
    x_adv = x0.clone()
    if random_start:
        noise = torch.rand(x0.shape, generator=generator, dtype=x0.dtype, device=x0.device)
        x_adv = x_adv + eps * (2 * noise - 1)
    for _ in range(n_steps):
        with torch.enable_grad():
            x_adv = x_adv.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(loss_fn(x_adv).sum(), x_adv)
        x_adv = x_adv.detach() + step_size * grad.sign()
        x_adv = torch.minimum(torch.maximum(x_adv, x0 - eps), x0 + eps)
        if clamp is not None:
            x_adv = x_adv.clamp(*clamp)
    return x_adv.detach()


def straight_through(purifier: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[torch.Tensor], torch.Tensor]:
    """BPDA with the identity: forward = purifier(x), backward = d/dx of x (the purifier's Jacobian ~ I).

    purify_bpda(x) = x + (purifier(x) - x).detach()
    """
    def purify_bpda(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            purified = purifier(x.detach())
        return x + (purified - x).detach()

    return purify_bpda


def eot_bpda_loss(loss_fn: LossFn, purifier: Callable[[torch.Tensor], torch.Tensor], n_eot: int) -> LossFn:
    """The adaptive attacker's loss: the mean over ``n_eot`` draws of the random purifier of
    loss_fn(purify(x)), differentiated through the purifier by BPDA (identity Jacobian)."""
    purify_bpda = straight_through(purifier)

    def loss(x: torch.Tensor) -> torch.Tensor:
        return torch.stack([loss_fn(purify_bpda(x)) for _ in range(n_eot)]).mean(0)

    return loss
