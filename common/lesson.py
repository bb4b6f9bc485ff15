"""One run of a lesson: flags, seed, device, output folder, figures, metrics and the divergence guard.

Every lesson starts with::

    cfg, run = start_lesson(Config, "01_ebm_foundations", __doc__, quick=QUICK)

and then uses ``run.device``, ``run.savefig(fig, "fig01_what")``, ``run.metrics["name"] = value``
(written to ``metrics.json`` at once, so a run that stops early keeps what it had), and
``run.check_finite(loss, step=i, what="loss", flag="--lr")`` inside training loops.
"""

from __future__ import annotations

import json
import math
import os
import random
import sys
import zlib
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from common.config import describe_config, running_in_notebook

REPO_ROOT = Path(__file__).resolve().parents[1]


class TrainingDiverged(SystemExit):
    """Raised when a loss, energy or sample becomes NaN/inf or explodes past a bound.

    It is a ``SystemExit`` with a message, so Python prints the message (no traceback) and exits
    with status 1; figures and metrics saved before it stay on disk.
    """


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and PyTorch's generators (CPU and every GPU)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def pick_device(name: str) -> torch.device:
    """``auto`` picks cuda, then mps, then cpu; an explicit device that is missing is an error."""
    has_mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "mps" if has_mps else "cpu"
    elif name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for, but PyTorch sees no CUDA GPU (use --device cpu)")
    elif name == "mps" and not has_mps:
        raise ValueError("--device mps was asked for, but this PyTorch has no MPS backend (use --device cpu)")
    return torch.device(name)


def to_jsonable(value: Any) -> Any:
    """Tensors, arrays and NumPy scalars become plain Python numbers and lists."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN/inf; keep it readable rather than invalid
    return value


class Metrics(MutableMapping):
    """A dict that rewrites ``metrics.json`` whenever it changes."""

    def __init__(self, path: Path):
        self.path = path
        self._data: dict[str, Any] = {}

    def __getitem__(self, key):
        return self._data[key]

    def __setitem__(self, key, value):
        self._data[key] = to_jsonable(value)
        self._write()

    def __delitem__(self, key):
        del self._data[key]
        self._write()

    def __iter__(self):
        return iter(self._data)

    def __len__(self):
        return len(self._data)

    def _write(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(self._data, indent=2) + "\n")


class LessonRun:
    """What a lesson needs at run time besides its ``Config``."""

    def __init__(self, name: str, config: Any, common, device: torch.device, outdir: Path):
        self.name = name
        self.config = config
        self.quick: bool = common.quick
        self.seed: int = common.seed
        self.show: bool = common.show
        self.exercise: int | None = common.exercise
        self.device = device
        self.outdir = outdir
        self.metrics = Metrics(outdir / "metrics.json")
        self.figures: list[Path] = []

    # -- randomness -------------------------------------------------------------------------
    def generator(self, section: str) -> torch.Generator:
        """A generator of its own for one section, on the run's device, seeded from (seed, section).

        Sections do not share a stream, so changing one section's settings never changes another's draws.
        """
        generator = torch.Generator(device=self.device)
        generator.manual_seed(self.seed * 1_000_003 + zlib.crc32(section.encode()))
        return generator

    # -- figures --------------------------------------------------------------------------
    def savefig(self, fig, stem: str) -> Path:
        """Save ``fig`` as ``<outdir>/<stem>.png``, show it if ``--show``, then close it."""
        import matplotlib.pyplot as plt

        if not stem.startswith("fig"):
            raise ValueError(f"figure names start with figNN_ (got {stem!r})")
        path = self.outdir / f"{stem}.png"
        fig.savefig(path)
        self.figures.append(path)
        print(f"  [figure] {path}")
        if self.show or running_in_notebook():
            plt.show()
        plt.close(fig)
        return path

    # -- divergence guard -----------------------------------------------------------------
    def check_finite(self, value, *, step: int | str, what: str, field: str | None = None, flag: str | None = None,
                     bound: float | None = None, advice: str = "lower") -> None:
        """Stop the lesson (exit 1, outputs kept) if ``value`` is NaN/inf or ``|value| > bound``.

        ``field`` is the ``Config`` field to blame (``"lr"``); the message says ``lower --lr``
        (``advice`` replaces the verb). ``flag`` is the older free-text form, e.g. ``"lower --lr"``.
        """
        if field is not None:
            if field not in getattr(self.config, "__dataclass_fields__", {}):
                raise ValueError(f"check_finite blames {field!r}, which is not a Config field")
            flag = f"{advice} --{field.replace('_', '-')}"
        tensor = torch.as_tensor(value).detach()
        bad = not bool(torch.isfinite(tensor).all())
        if not bad and bound is not None:
            bad = bool(tensor.abs().max() > bound)
        if bad:
            reason = "NaN/inf" if not bool(torch.isfinite(tensor).all()) else f"|value| > {bound:g}"
            message = (
                f"{self.name}: training diverged at step {step}: {what} became {reason}. "
                f"Try again and {flag or 'change the settings'}. Figures and metrics so far are in {self.outdir}/"
            )
            self.metrics["diverged"] = message
            raise TrainingDiverged(message)

    def finish(self) -> None:
        """Print where the outputs are; call once at the end of the lesson."""
        print(f"\nDone. {len(self.figures)} figures and metrics.json are in {self.outdir}/")


def start_lesson(config, flags=None, doc: str | None = None, quick: dict | None = None, argv=None):
    """Seed every generator, pick the device, make the output folder; returns the ``LessonRun``.

    New style (flags parsed before the heavy imports, so ``--help`` is fast)::

        cfg, flags = parse_flags(Config, "07_neural_ebms", __doc__, quick=QUICK)
        ...heavy imports...
        run = start_lesson(cfg, flags)

    Old style, still accepted: ``cfg, run = start_lesson(Config, name, __doc__, quick=QUICK)``.
    """
    if isinstance(config, type):  # old style: parse here and return (config, run)
        from common.config import parse_flags

        config, flags = parse_flags(config, flags, doc, quick=quick, argv=argv)
        return config, _start(config, flags)
    return _start(config, flags)


def _start(config, flags) -> LessonRun:
    name = flags.name
    try:
        device = pick_device(flags.device)
    except ValueError as err:
        sys.stderr.write(f"{name}.py: error: {err}\n")
        raise SystemExit(2) from None
    if not flags.show and not running_in_notebook():
        import matplotlib

        matplotlib.use("Agg")  # save figures without a display (CI, ssh, servers)
    from common.plotting import use_course_style

    use_course_style()
    env_dir = os.environ.get("EBM_OUTPUT_DIR")
    outdir = Path(flags.outdir) if flags.outdir else Path(env_dir) / name if env_dir else REPO_ROOT / "outputs" / name
    outdir.mkdir(parents=True, exist_ok=True)
    seed_everything(flags.seed)
    torch.set_num_threads(flags.threads)  # small tensors: one thread avoids per-op hand-off costs
    run = LessonRun(name, config, flags, device, outdir)
    print(f"{name}  |  device={device}  threads={flags.threads}  seed={flags.seed}  quick={flags.quick}  "
          f"outdir={outdir}")
    print(describe_config(config))
    run.metrics["config"] = {k: getattr(config, k) for k in config.__dataclass_fields__}
    run.metrics["seed"] = flags.seed
    run.metrics["quick"] = flags.quick
    return run
