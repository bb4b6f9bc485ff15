"""The course's one training loop for neural models, with the divergence guard built in.

A lesson writes its loss as a function of the step and hands it to a ``Trainer``::

    trainer = Trainer(energy, run, lr=cfg.lr, blame="lr", grad_clip=cfg.grad_clip, ema_decay=0.99)

    def loss_fn(step):
        x_pos = next_batch()
        x_neg = draw_negatives(energy, buffer, len(x_pos), n_steps=cfg.langevin_steps, step_size=cfg.step_size)
        return contrastive_divergence_loss(energy(x_pos), energy(x_neg), alpha=cfg.alpha)

    history = trainer.fit(loss_fn, cfg.n_steps, desc="EBM")

``model`` is a network or a plain list of tensors (``Trainer([log_a], run, lr=0.05)`` fits two numbers).
A lesson that introduces a training method writes its update as a short loop first (``loss.backward()``,
``optimizer.step()``), then uses this class for the long runs. Everything a student should see is here in
~100 lines: Adam, warm-up and schedule, gradient clipping, an exponential moving average of the weights, a
history of every logged number, and the guard that stops a diverging run with a message naming the flag to
change (or restarts from the last good weights with a lower learning rate, when asked to).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import torch
from torch import nn

from common.lesson import TrainingDiverged
from common.progress import progress as progress_bar
from common.samplers import ReplayBuffer, langevin

LossFn = Callable[[int], tuple[torch.Tensor, dict[str, torch.Tensor]]]


class Trainer:
    """Adam + schedule + clipping + EMA + history + checkpoints + divergence guard for one model."""

    def __init__(self, model: nn.Module | list[torch.Tensor], run, *, lr: float, blame: str = "lr", betas=(0.9, 0.999),
                 weight_decay: float = 0.0, n_steps: int | None = None, schedule: str = "constant", warmup: int = 0,
                 grad_clip: float | None = None, ema_decay: float | None = None, check_every: int = 25,
                 bound: float | None = None, restarts: int = 0, restart_lr_factor: float = 0.5, name: str = "model"):
        if schedule not in ("constant", "cosine"):
            raise ValueError(f"schedule must be constant or cosine (got {schedule!r})")
        self.model, self.run, self.name = model, run, name
        self.blame, self.check_every, self.bound = blame, check_every, bound
        self.grad_clip, self.warmup, self.schedule, self.n_steps = grad_clip, warmup, schedule, n_steps
        self.restarts, self.restart_lr_factor, self.restarts_used = restarts, restart_lr_factor, 0
        self.base_lr = lr
        # a network, or the tensors themselves (each with requires_grad=True)
        self.params = list(model.parameters() if isinstance(model, nn.Module) else model)
        if ema_decay is not None and not isinstance(model, nn.Module):
            raise ValueError("ema_decay needs a network (an nn.Module), not a list of tensors")
        self.optimizer = torch.optim.Adam(self.params, lr=lr, betas=tuple(betas), weight_decay=weight_decay)
        self.ema = model
        if ema_decay is not None:
            # theta_ema <- d theta_ema + (1 - d) theta after every step: a smoother model to sample from
            multi_avg = torch.optim.swa_utils.get_ema_multi_avg_fn(ema_decay)
            self.ema = torch.optim.swa_utils.AveragedModel(model, multi_avg_fn=multi_avg, use_buffers=True)
        self.history: dict[str, list[float]] = {}
        self.step_count = 0
        self._pending: list[dict[str, torch.Tensor]] = []
        self._good = self._snapshot()

    # -- schedule ------------------------------------------------------------------------------
    def lr_at(self, step: int) -> float:
        """Linear warm-up over ``warmup`` steps, then constant or cosine decay to 0 at ``n_steps``."""
        scale = min(1.0, (step + 1) / self.warmup) if self.warmup else 1.0
        if self.schedule == "cosine" and self.n_steps:
            # lr_t = lr_0 (1 + cos(pi t / T)) / 2
            scale *= 0.5 * (1 + math.cos(math.pi * min(step, self.n_steps) / self.n_steps))
        return self.base_lr * scale

    # -- one update ----------------------------------------------------------------------------
    def step(self, loss: torch.Tensor, logs: dict[str, torch.Tensor] | None = None) -> None:
        """Backward, clip, Adam step, EMA update; the logs are kept as tensors until the next check."""
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr_at(self.step_count)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        # clip the gradient's global norm: one bad batch cannot throw the weights far
        grad_norm = (torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip) if self.grad_clip is not None
                     else torch.sqrt(sum((p.grad.detach() ** 2).sum() for p in self.params if p.grad is not None)))
        self.optimizer.step()
        if self.ema is not self.model:
            self.ema.update_parameters(self.model)
        entry = {"loss": loss.detach(), "grad_norm": grad_norm.detach()}
        entry.update({k: torch.as_tensor(v).detach() for k, v in (logs or {}).items()})
        self._pending.append(entry)
        self.step_count += 1
        if self.step_count % self.check_every == 0:
            self.flush()

    def flush(self) -> None:
        """Move the pending logs to ``history`` (one device sync) and run the divergence guard on them."""
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        stacked = {k: torch.stack([p[k] for p in pending if k in p]).float().cpu() for k in pending[-1]}
        for key, values in stacked.items():
            self.history.setdefault(key, []).extend(values.tolist())
        watched = torch.cat([stacked["loss"], *(v for k, v in stacked.items() if k != "grad_norm")])
        self.run.check_finite(watched, step=self.step_count, what=f"{self.name} loss or a logged value",
                              field=self.blame, bound=self.bound)
        if all(torch.isfinite(p).all() for p in self.params):
            self._good = self._snapshot()

    # -- the loop ------------------------------------------------------------------------------
    def fit(self, loss_fn: LossFn, n_steps: int, desc: str = "training", progress: bool = True
            ) -> dict[str, list[float]]:
        """Run ``n_steps`` updates of ``loss_fn(step) -> (loss, logs)``; returns ``history``."""
        if self.n_steps is None:
            self.n_steps = n_steps
        bar = progress_bar(range(n_steps), desc=desc, leave=False, disable=not progress)
        for i in bar:
            loss, logs = loss_fn(i)
            try:
                self.step(loss, logs)
            except TrainingDiverged:
                if self.restarts_used >= self.restarts:
                    raise
                self.restart()
            if i % 50 == 0 and self.history.get("loss"):
                bar.set_postfix(loss=f"{self.history['loss'][-1]:.3g}")
        try:
            self.flush()
        except TrainingDiverged:
            if self.restarts_used >= self.restarts:
                raise
            self.restart()
        return self.history

    def restart(self) -> None:
        """Back to the last weights that passed the guard, with the learning rate times ``restart_lr_factor``."""
        self.restarts_used += 1
        self._restore(self._good)
        self.base_lr *= self.restart_lr_factor
        self.optimizer.state.clear()  # Adam's moments were built on the diverging run
        self._pending = []
        self.run.metrics.pop("diverged", None)
        print(f"  [{self.name}] diverged at step {self.step_count}: restart {self.restarts_used}/{self.restarts} "
              f"from the last good weights with --{self.blame.replace('_', '-')} x {self.restart_lr_factor:g} "
              f"= {self.base_lr:.3g}")

    # -- weights ------------------------------------------------------------------------------
    def _snapshot(self) -> dict:
        if not isinstance(self.model, nn.Module):
            return {"model": [p.detach().clone() for p in self.params], "ema": None}
        return {"model": copy.deepcopy(self.model.state_dict()),
                "ema": copy.deepcopy(self.ema.state_dict()) if self.ema is not self.model else None}

    def _restore(self, snapshot: dict) -> None:
        if not isinstance(self.model, nn.Module):
            with torch.no_grad():
                for p, saved in zip(self.params, snapshot["model"]):
                    p.copy_(saved)
            return
        self.model.load_state_dict(snapshot["model"])
        if snapshot["ema"] is not None:
            self.ema.load_state_dict(snapshot["ema"])


# ---------------------------------------------------------------------------------------------
# Maximum-likelihood training of an energy: the loss and its negative samples
# ---------------------------------------------------------------------------------------------


def contrastive_divergence_loss(energy_pos: torch.Tensor, energy_neg: torch.Tensor, alpha: float = 0.0
                                ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The maximum-likelihood surrogate of an EBM and its logs.

    grad_theta NLL = E_data[grad E] - E_model[grad E]   =>   loss = mean E(x+) - mean E(x-)
                                                              + alpha (mean E(x+)^2 + mean E(x-)^2)
    Minimising it pushes the energy of data down and of the model's samples up; the alpha term keeps the
    energies near 0 (without it they can drift to huge magnitudes while their difference stays small).
    """
    contrast = energy_pos.mean() - energy_neg.mean()
    reg = (energy_pos**2).mean() + (energy_neg**2).mean()
    logs = {"e_pos": energy_pos.mean().detach(), "e_neg": energy_neg.mean().detach(), "reg": reg.detach()}
    return contrast + alpha * reg, logs


def draw_negatives(energy_fn, source: ReplayBuffer | Callable[[int], torch.Tensor], n: int, *, n_steps: int,
                   step_size: float, noise_scale: float | None = None, clamp=None, grad_clip=None,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """Negative samples for one update: Langevin from a replay buffer (persistent) or from fresh starts.

    ``source`` is a ``ReplayBuffer`` (states are sampled, moved ``n_steps`` and pushed back) or a function
    ``init_fn(n)`` (short-run, non-persistent chains from noise; Nijkamp et al. 2019).
    """
    if isinstance(source, ReplayBuffer):
        x0, index = source.sample(n)
    else:
        x0, index = source(n), None
    x, _ = langevin(energy_fn, x0, n_steps, step_size, noise_scale=noise_scale, clamp=clamp, grad_clip=grad_clip,
                    generator=generator)
    if index is not None:
        source.push(x, index)
    return x.detach()
