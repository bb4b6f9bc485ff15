"""MCMC samplers shared by the lessons.

Continuous samplers take an ``energy_fn`` mapping a batch ``(B, D)`` to energies ``(B,)`` and
target p(x) = exp(-E(x)/T)/Z. Every sampler takes an optional ``torch.Generator`` so that tests
and lessons can make runs reproducible. This module holds continuous samplers only: the
single-site samplers of binary units (``gibbs_sweep``, ``metropolis_sweep``) live in
``common.boltzmann`` with the energy they sample.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from common.progress import progress as progress_bar

EnergyFn = Callable[[torch.Tensor], torch.Tensor]


def _randn_like(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    return torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)


def _rand(n: int, like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    return torch.rand(n, generator=generator, dtype=like.dtype, device=like.device)


def energy_and_grad(energy_fn: EnergyFn, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(E(x), grad_x E(x))`` for a batch, by autograd; neither result keeps a graph."""
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        energy = energy_fn(x)
        (grad,) = torch.autograd.grad(energy.sum(), x)
    return energy.detach(), grad.detach()


def effective_temperature(step_size: float, noise_scale: float) -> float:
    """T = s^2 / (2 h): the temperature that x <- x - h grad E + s xi samples (for small h).

    Image EBMs typically use h = 10 and s = 0.005, so T = 1.25e-6: noisy gradient descent, not sampling at T = 1.
    """
    return noise_scale**2 / (2 * step_size)


def langevin(
    energy_fn: EnergyFn,
    x0: torch.Tensor,
    n_steps: int,
    step_size: float,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
    keep_every: int = 0,
    progress: bool = False,
    grad_clip: float | None = None,
    noise_scale: float | None = None,
    clamp: tuple[float, float] | None = None,
    energy_trace: list | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Unadjusted Langevin algorithm (ULA).

    x_{k+1} = x_k - h grad E(x_k) + s xi_k,   xi_k ~ N(0, I),   s = sqrt(2 T h) unless ``noise_scale`` gives s

    Returns ``(x_K, path)``; ``path`` is ``(n_kept, B, ...)`` with the start and every
    ``keep_every``-th state when ``keep_every > 0``, else ``None``. ``grad_clip`` bounds each
    gradient coordinate and ``clamp=(low, high)`` keeps x in the data range (common stabilisers for
    neural energies; both bias the chain). ``energy_trace``, if a list, receives the batch-mean
    energy at every step as a 0-d tensor (no device sync). The chain is biased for h > 0: on
    E = a x^2/2 its variance is 2T/(a(2 - a h)), not T/a.
    """
    x = x0.detach().clone()
    path = [x.clone()] if keep_every else None
    noise = math.sqrt(2 * temperature * step_size) if noise_scale is None else noise_scale
    for k in progress_bar(range(n_steps), desc="Langevin", disable=not progress, leave=False):
        energy, grad = energy_and_grad(energy_fn, x)
        if energy_trace is not None:
            energy_trace.append(energy.mean())
        if grad_clip is not None:
            grad = grad.clamp(-grad_clip, grad_clip)
        x = x - step_size * grad + noise * _randn_like(x, generator)
        if clamp is not None:
            x = x.clamp(*clamp)
        if keep_every and (k + 1) % keep_every == 0:
            path.append(x.clone())
    return x, (torch.stack(path) if keep_every else None)


def mala(
    energy_fn: EnergyFn,
    x0: torch.Tensor,
    n_steps: int,
    step_size: float,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
    keep_every: int = 0,
    progress: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None, float]:
    """Metropolis-adjusted Langevin: a Langevin proposal accepted with the Metropolis-Hastings ratio.

    proposal  y = x - h grad E(x) + sqrt(2 T h) xi
    log q(y|x) = -|y - x + h grad E(x)|^2 / (4 T h)
    accept with prob min(1, exp(-(E(y) - E(x))/T + log q(x|y) - log q(y|x)))

    The correction removes the step-size bias: the chain targets exp(-E/T)/Z exactly.
    Returns ``(x_K, path, acceptance_rate)``.
    """
    x = x0.detach().clone()
    energy_x, grad_x = energy_and_grad(energy_fn, x)
    path = [x.clone()] if keep_every else None
    accepted = torch.zeros((), dtype=torch.float64)
    noise_scale = math.sqrt(2 * temperature * step_size)
    for k in progress_bar(range(n_steps), desc="MALA", disable=not progress, leave=False):
        y = x - step_size * grad_x + noise_scale * _randn_like(x, generator)
        energy_y, grad_y = energy_and_grad(energy_fn, y)
        log_q_forward = -((y - x + step_size * grad_x) ** 2).flatten(1).sum(1) / (4 * temperature * step_size)
        log_q_backward = -((x - y + step_size * grad_y) ** 2).flatten(1).sum(1) / (4 * temperature * step_size)
        log_ratio = -(energy_y - energy_x) / temperature + log_q_backward - log_q_forward
        accept = torch.log(_rand(len(x), log_ratio, generator)) < log_ratio  # (B,)
        shape = (-1,) + (1,) * (x.dim() - 1)
        x = torch.where(accept.view(shape), y, x)
        energy_x = torch.where(accept, energy_y, energy_x)
        grad_x = torch.where(accept.view(shape), grad_y, grad_x)
        accepted += accept.double().mean()
        if keep_every and (k + 1) % keep_every == 0:
            path.append(x.clone())
    return x, (torch.stack(path) if keep_every else None), float(accepted / max(n_steps, 1))


def underdamped_langevin(
    energy_fn: EnergyFn,
    x0: torch.Tensor,
    n_steps: int,
    step_size: float,
    friction: float = 1.0,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
    keep_every: int = 0,
    progress: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Underdamped (kinetic) Langevin, the sampler behind SGHMC, with unit mass.

    v_{k+1} = v_k - h grad E(x_k) - h gamma v_k + sqrt(2 gamma T h) xi_k
    x_{k+1} = x_k + h v_{k+1}

    The velocity lets chains coast across flat regions; large friction gamma recovers the
    overdamped (plain Langevin) behaviour, small friction gives long ballistic moves.
    """
    x = x0.detach().clone()
    v = torch.zeros_like(x)
    path = [x.clone()] if keep_every else None
    noise_scale = math.sqrt(2 * friction * temperature * step_size)
    for k in progress_bar(range(n_steps), desc="underdamped", disable=not progress, leave=False):
        _, grad = energy_and_grad(energy_fn, x)
        v = v - step_size * grad - step_size * friction * v + noise_scale * _randn_like(x, generator)
        x = x + step_size * v
        if keep_every and (k + 1) % keep_every == 0:
            path.append(x.clone())
    return x, (torch.stack(path) if keep_every else None)


def annealed_langevin(
    score_fn: Callable[[torch.Tensor, float], torch.Tensor],
    x0: torch.Tensor,
    sigmas,
    steps_per_level: int,
    step_lr: float,
    generator: torch.Generator | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """Annealed Langevin dynamics (Song & Ermon 2019) with a noise-conditional score s(x, sigma).

    For sigma_1 > ... > sigma_L, run Langevin at each level with step a_i = step_lr sigma_i^2 / sigma_L^2:
    x <- x + a_i s(x, sigma_i) + sqrt(2 a_i) xi
    Large noise levels connect separated modes; small ones sharpen the samples.
    """
    x = x0.detach().clone()
    sigma_last = float(sigmas[-1])
    for sigma in progress_bar(list(sigmas), desc="annealed Langevin", disable=not progress, leave=False):
        step = step_lr * (float(sigma) / sigma_last) ** 2
        for _ in range(steps_per_level):
            with torch.no_grad():
                score = score_fn(x, float(sigma))
            x = x + step * score + math.sqrt(2 * step) * _randn_like(x, generator)
    return x


# ---------------------------------------------------------------------------------------------
# Persistent chains
# ---------------------------------------------------------------------------------------------


class ReplayBuffer:
    """Persistent negative samples for EBM training (Du & Mordatch 2019).

    ``sample(n)`` returns n stored states, a fraction ``reinit_fraction`` of them replaced by
    fresh draws from ``init_fn`` so the buffer keeps exploring; ``push(x, index)`` stores the
    states the sampler moved them to.
    """

    def __init__(self, init_fn: Callable[[int], torch.Tensor], capacity: int, reinit_fraction: float = 0.05,
                 generator: torch.Generator | None = None):
        if not 0.0 <= reinit_fraction <= 1.0:
            raise ValueError("reinit_fraction must be in [0, 1]")
        self.init_fn = init_fn
        self.reinit_fraction = reinit_fraction
        self.generator = generator
        self.states = init_fn(capacity)

    def __len__(self) -> int:
        return len(self.states)

    def sample(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(states, index)``: n stored states (some re-initialised) and where they came from.

        The draws use the buffer's generator (on its own device); the states stay on theirs.
        """
        device = self.states.device
        gen_device = self.generator.device if self.generator is not None else torch.device("cpu")
        index = torch.randint(len(self.states), (n,), generator=self.generator, device=gen_device).to(device)
        states = self.states[index].clone()
        fresh = (torch.rand(n, generator=self.generator, device=gen_device) < self.reinit_fraction).to(device)
        n_fresh = int(fresh.sum())
        if n_fresh:
            states[fresh] = self.init_fn(n_fresh).to(states)
        return states, index

    def push(self, states: torch.Tensor, index: torch.Tensor) -> None:
        self.states[index.to(self.states.device)] = states.detach().to(self.states)
