"""One run of a lesson: seed, device, per-section generators, output folder, figures, metrics, divergence guard.

Every lesson parses its flags first (``common.config.parse_flags``, torch-free, so ``--help`` is fast)
and then, after the heavy imports::

    run = start_lesson(cfg, flags)                 # or start_lesson(cfg, flags, cpu_only="why")
    gen = run.generator("section-name")            # one generator per section, on run.device
    run.savefig(fig, "fig01_what")                 # course style; quick runs are marked
    run.metrics["name"] = value                    # metrics.json is rewritten at once (strict JSON)
    run.claim("key", "sentence", measured, "<", reference)   # prints HOLDS/FAILS, records it (common.claims)
    run.check_finite(loss, step=i, what="loss", field="lr")   # exit 1: "... lower --lr ..."
    run.finish()

Outputs go to ``outputs/<lesson>/`` for a run with the default settings, and to a subfolder named after
what changed otherwise (``outputs/<lesson>/quick/``, ``.../step-size=0.05/``); ``--outdir`` wins.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import random
import sys
import zlib
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from common.config import UserError, run_folder_name, running_in_notebook

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


QUICK_MARK = "quick run: tiny settings, numbers not meaningful"


def to_jsonable(value: Any) -> Any:
    """Tensors, arrays and NumPy scalars become plain Python numbers and lists; NaN and inf become None.

    JSON has no NaN or infinity, so ``metrics.json`` stays strict JSON; ``Metrics`` records which keys
    held a non-finite value under ``"non_finite"``.
    """
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist())
    if isinstance(value, np.generic):
        return to_jsonable(value.item())
    if isinstance(value, (dict, MutableMapping)):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _has_non_finite(value: Any) -> bool:
    if isinstance(value, torch.Tensor):
        return not bool(torch.isfinite(value.detach()).all()) if value.is_floating_point() else False
    if isinstance(value, np.ndarray):
        return bool(np.issubdtype(value.dtype, np.floating) and not np.isfinite(value).all())
    if isinstance(value, (float, np.floating)):
        return not math.isfinite(float(value))
    if isinstance(value, dict):
        return any(_has_non_finite(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(_has_non_finite(v) for v in value)
    return False


# keys common.lesson writes itself; a lesson's own keys are declared in its METRICS
FRAMEWORK_KEYS = {"config", "provenance", "non_finite", "diverged", "claims", "key_figures"}


class Metrics(MutableMapping):
    """A dict that rewrites ``metrics.json`` whenever it, or a dict stored in it, changes.

    ``run.metrics["a"] = {...}`` and ``run.metrics["a"]["b"] = 1`` are both written at once.
    Non-finite numbers are written as ``null`` and their keys listed under ``"non_finite"``.
    """

    def __init__(self, path: Path | None, root: Metrics | None = None, key: str = "",
                 declared: dict[str, str] | None = None):
        self.path = path
        self._root = root or self
        self._key = key
        self._data: dict[str, Any] = {}
        self.declared = declared  # the lesson's METRICS: a top-level key not in it is refused

    def __getitem__(self, key):
        value = self._data[key]
        if isinstance(value, dict):  # a view that writes through, so nested assignments are kept
            view = Metrics(None, self._root, f"{self._key}{key}.")
            view._data = value
            return view
        return value

    def __setitem__(self, key, value):
        key = str(key)
        declared = self._root.declared
        if self is self._root and declared is not None and key not in declared and key not in FRAMEWORK_KEYS:
            raise KeyError(f"metrics.json key {key!r} is not declared in the lesson's METRICS")
        if _has_non_finite(value):
            root = self._root._data
            noted = root.setdefault("non_finite", [])
            if f"{self._key}{key}" not in noted:
                noted.append(f"{self._key}{key}")
        self._data[key] = to_jsonable(value)
        self._root._write()

    def __delitem__(self, key):
        del self._data[key]
        self._root._write()

    def __iter__(self):
        return iter(self._data)

    def __len__(self):
        return len(self._data)

    def _write(self):
        text = json.dumps(self._data, indent=2, allow_nan=False) + "\n"
        self.path.write_text(text)


def provenance(flags, device: torch.device) -> dict[str, Any]:
    """Where the numbers came from: device, threads, seed, --quick, exercise, library versions."""
    return {
        "lesson": flags.name, "device": str(device), "threads": flags.threads, "seed": flags.seed,
        "quick": flags.quick, "exercise": flags.exercise, "section": flags.section, "changed": dict(flags.changed),
        "torch": torch.__version__, "numpy": np.__version__, "python": platform.python_version(),
    }


class LessonRun:
    """What a lesson needs at run time besides its ``Config``."""

    def __init__(self, name: str, config: Any, flags, device: torch.device, outdir: Path,
                 figures: dict[str, str] | None = None, metrics: dict[str, str] | None = None):
        self.name = name
        self.config = config
        self.quick: bool = flags.quick
        self.seed: int = flags.seed
        self.show: bool = flags.show
        self.exercise: int | None = flags.exercise
        self.sections: tuple[int, ...] | None = flags.section  # None: every section runs
        self.device = device
        self.outdir = outdir
        self.declared_figures = figures  # the lesson's FIGURES: {stem: what it shows}
        self.metrics = Metrics(outdir / "metrics.json", declared=metrics)
        self.figures: list[Path] = []
        self.claims: list = []
        # quick figures only prove the code runs: a third of the pixels and one drawing pass (see savefig)
        self.dpi = 60 if flags.quick else 150

    # -- sections -------------------------------------------------------------------------
    def section(self, number: int) -> bool:
        """Whether section ``number`` runs: always, unless ``--section`` (or ``--exercise``) chose others."""
        return self.sections is None or number in self.sections

    def stub(self, number: int) -> bool:
        """Whether exercise ``number``'s stub runs: with ``--exercise N``, or every stub when the environment
        sets EBM_ALL_STUBS=1 (the test suite's one quick run of each lesson checks all of them at once)."""
        return self.exercise == number or bool(os.environ.get("EBM_ALL_STUBS"))

    @property
    def complete(self) -> bool:
        """True when every section ran (no --section, no --exercise): then every declared output must exist."""
        return self.sections is None

    # -- claims ---------------------------------------------------------------------------
    def claim(self, key: str, sentence: str, measured, op: str, reference, tolerance: float = 0.0, *,
              reference_label: str = "", sigmas: float = 2.0):
        """Check one sentence of the lesson against its numbers: print HOLDS/FAILS, record it, return the Claim.

        ``measured`` and ``reference`` are numbers or ``SeedStats`` (``common.claims.over_seeds``); ``op`` is
        one of ``<``, ``>``, ``within``, ``within_rel``, ``ratio<`` (see ``common.claims``). A ``--quick``
        run records the claim marked as not meaningful.
        """
        from common.claims import Claim

        item = Claim(key, sentence, measured, op, reference, tolerance, reference_label, sigmas,
                     meaningful=not self.quick)
        self.claims = [c for c in self.claims if c.key != key] + [item]
        if "claims" not in self.metrics:
            self.metrics["claims"] = {}
        self.metrics["claims"][key] = item.to_json()
        print(f"   {item.line()}")
        return item

    # -- randomness -------------------------------------------------------------------------
    def generator(self, section: str) -> torch.Generator:
        """A generator of its own for one section, on the run's device, seeded from (seed, section).

        Sections do not share a stream, so changing one section's settings never changes another's draws.
        """
        generator = torch.Generator(device=self.device)
        generator.manual_seed(self.seed * 1_000_003 + zlib.crc32(section.encode()))
        return generator

    def cpu_generator(self, section: str) -> torch.Generator:
        """Like ``generator(section)``, but on the CPU whatever ``--device`` is (for the 2-D parts of a lesson)."""
        return torch.Generator().manual_seed(self.generator(section).initial_seed())

    # -- figures --------------------------------------------------------------------------
    def savefig(self, fig, stem: str, *, key: bool = False) -> None:
        """Save ``fig`` as ``<outdir>/<stem>.png``, show it if ``--show`` or in a notebook, then close it.

        ``key=True`` marks one of the lesson's key figures: ``metrics.json`` lists them under
        ``"key_figures"`` and the results page (``scripts/make_results.py``) shows those, large.

        A ``--quick`` figure carries a red "quick run" banner below it. Returns nothing, so a
        notebook cell that ends with it shows the figure and no echo of its path.
        """
        import matplotlib.pyplot as plt

        if not stem.startswith("fig"):
            raise ValueError(f"figure names start with figNN_ (got {stem!r})")
        self._check_declared(stem)
        path = self.outdir / f"{stem}.png"
        if self.quick:
            # one drawing pass: no layout engine and no tight bounding box (each costs a pass over every text);
            # the banner sits inside the bottom edge of the figure
            fig.set_layout_engine("none")
            fig.text(0.5, 0.0, QUICK_MARK, ha="center", va="bottom", fontsize=9, color="#b00000",
                     bbox={"facecolor": "white", "edgecolor": "#b00000", "alpha": 0.85, "pad": 1})
            fig.savefig(path, dpi=self.dpi, bbox_inches=None)  # QUICK_STYLE: bbox "standard"
        else:
            fig.savefig(path, dpi=self.dpi)
        self.figures.append(path)
        if key:
            self.metrics["key_figures"] = [*self.metrics.get("key_figures", []), path.name]
        print(f"  [figure] {shown_path(path)}")
        if isinstance(sys.stdout, ConsoleLog):
            sys.stdout.figure(path)
        if running_in_notebook():
            _display_file(path)  # the saved file itself, so the page shows exactly what outputs/ holds
        elif self.show:
            plt.show()
        plt.close(fig)

    def _check_declared(self, stem: str) -> None:
        if self.declared_figures is not None and stem not in self.declared_figures:
            raise KeyError(f"figure {stem!r} is not declared in the lesson's FIGURES")

    def saved_animation(self, path) -> None:
        """Report an animation written to ``path`` (a GIF), and show it inline in a notebook."""
        self._check_declared(Path(path).stem)
        self.figures.append(Path(path))
        print(f"  [animation] {shown_path(path)}")
        if isinstance(sys.stdout, ConsoleLog):
            sys.stdout.figure(Path(path))
        if running_in_notebook():
            _display_file(Path(path))

    # -- divergence guard -----------------------------------------------------------------
    def check_finite(self, value, *, step: int | str, what: str, field: str, bound: float | None = None,
                     advice: str = "lower", every: int = 1) -> None:
        """Stop the lesson (exit 1, outputs kept) if ``value`` is NaN/inf or ``|value| > bound``.

        ``field`` is the ``Config`` field to blame (``"lr"``); the message says ``lower --lr``
        (``advice`` replaces the verb). ``every=N`` checks only when the integer ``step`` is a
        multiple of N, so a GPU loop is not forced to synchronise with the host at every step.
        """
        if field not in getattr(self.config, "__dataclass_fields__", {}):
            raise ValueError(f"check_finite blames {field!r}, which is not a Config field")
        if every > 1 and isinstance(step, int) and step % every:
            return
        tensor = torch.as_tensor(value).detach()
        finite = bool(torch.isfinite(tensor).all())
        bad = not finite or (bound is not None and bool(tensor.abs().max() > bound))
        if bad:
            reason = "NaN/inf" if not finite else f"|value| > {bound:g}"
            message = (
                f"{self.name}: training diverged at step {step}: {what} became {reason}. "
                f"Try again and {advice} --{field.replace('_', '-')}. "
                f"Figures and metrics so far are in {self.outdir}/"
            )
            self.metrics["diverged"] = message
            raise TrainingDiverged(message)

    def finish(self) -> None:
        """Print every claim's verdict again and where the outputs are; call once at the end of the lesson."""
        from common.claims import summary_lines

        missing = self.missing_outputs()
        if missing:
            print(f"[contract] declared but not written: {', '.join(missing)}")
        lines = summary_lines(self.claims)
        if lines:
            print("\n" + "\n".join(lines))
        if self.quick:
            print(f"\n[{QUICK_MARK}] --quick only checks that every code path runs; "
                  "run without --quick for the lesson's real numbers.")
        print(f"\nDone. {len(self.figures)} figures and metrics.json are in {shown_path(self.outdir)}/")
        if isinstance(sys.stdout, ConsoleLog):
            sys.stdout.save(self.outdir / "console.json")

    def missing_outputs(self) -> list[str]:
        """Declared figures and metrics a complete run did not write (empty after --section/--exercise runs)."""
        if not self.complete:
            return []
        written = {p.stem for p in self.figures}
        missing = sorted(set(self.declared_figures or ()) - written)
        return missing + sorted(set(self.metrics.declared or ()) - set(self.metrics))


class ConsoleLog:
    """Standard output as the lesson prints it, each piece tagged with the lesson's line that printed it.

    A script run has no cells, but its file does (``# %%``): ``scripts/build_site.py`` puts each printed
    line and each figure back under the cell whose top-level line produced it, so a lesson's web page is
    assembled from the run a lecturer prepared, without running the lesson again in a kernel. Written to
    ``<outdir>/console.json`` when the run finishes.
    """

    def __init__(self, stream, lesson_file: str):
        self.stream, self.lesson_file = stream, lesson_file
        self.events: list[list] = []  # [line, "text" | "figure", payload]

    def line(self) -> int | None:
        """The line of the lesson's module-level statement running now (the outermost lesson frame)."""
        frame, found = sys._getframe(1), None
        while frame is not None:
            if frame.f_code.co_filename == self.lesson_file and frame.f_code.co_name == "<module>":
                found = frame.f_lineno
            frame = frame.f_back
        return found

    def write(self, text: str) -> int:
        self.stream.write(text)
        line = self.line()
        if self.events and self.events[-1][1] == "text" and self.events[-1][0] == line:
            self.events[-1][2] += text  # the rest of the same print, or the next print of the same statement
        else:
            self.events.append([line, "text", text])
        return len(text)

    def figure(self, path: Path) -> None:
        self.events.append([self.line(), "figure", Path(path).name])

    def save(self, path: Path) -> None:
        source = Path(self.lesson_file).read_bytes()
        path.write_text(json.dumps({"lesson_sha256": hashlib.sha256(source).hexdigest(), "events": self.events}))

    def flush(self) -> None:
        self.stream.flush()

    def __getattr__(self, name):
        return getattr(self.stream, name)


def _display_file(path: Path) -> None:
    """Show a saved PNG or GIF inline in a notebook, tagged with its name (the site build uses the tag)."""
    from IPython.display import Image, display

    display(Image(filename=str(path)), metadata={"ebm_figure": path.name})


def shown_path(path: Path) -> str:
    """A path as a person reads it: relative to the current folder when inside it (outputs/01_x/fig01.png)."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def has_display() -> bool:
    """Whether ``--show`` can open a window: macOS and Windows always can; elsewhere an X or Wayland display."""
    if sys.platform in ("darwin", "win32"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def changed_flags_line(config, flags) -> str:
    """The run's settings in one line: only what differs from the defaults (the full config is in metrics.json)."""
    parts = ["--quick"] if flags.quick else []
    for key, value in sorted(flags.changed.items()):
        shown = ",".join(str(v) for v in value) if isinstance(value, tuple) else str(value)
        parts.append(f"--{key.replace('_', '-')} {shown}")
    return "settings: " + (" ".join(parts) if parts else "the defaults") + "  (every value: metrics.json, config)"


def _refuse(name: str, message: str) -> None:
    sys.stderr.write(f"{name}.py: error: {message}\n")
    raise SystemExit(2)


def resolve_outdir(flags) -> Path:
    """``--outdir`` if given; else ``outputs/<lesson>/`` (or ``$EBM_OUTPUT_DIR/<lesson>``) plus, for a run
    that is not the prepared default, a subfolder named after what changed (see ``run_folder_name``)."""
    if flags.outdir:
        return Path(flags.outdir)
    env_dir = os.environ.get("EBM_OUTPUT_DIR")
    base = Path(env_dir) / flags.name if env_dir else REPO_ROOT / "outputs" / flags.name
    sub = run_folder_name(flags)
    return base / sub if sub else base


# what the course writes into an output folder; a folder holding anything else is someone else's
COURSE_FILES = ("fig[0-9][0-9]_*", "anim_*", "metrics.json", "*.pt", "console.json")


def foreign_files(folder: Path) -> list[str]:
    """Files at the top of ``folder`` that no lesson writes (sub-folders are other runs' and are left alone)."""
    return sorted(p.name for p in folder.iterdir()
                  if p.is_file() and not any(p.match(pattern) for pattern in COURSE_FILES))


def make_outdir(name: str, outdir: Path) -> None:
    """Create ``outdir`` and check it is writable; a folder that cannot be is refused in one line (exit 2).

    A filesystem root, or an existing folder holding files the course did not write (your home, the
    repository), is refused too: a lesson's figures never land among someone else's files.
    """
    if outdir.exists() and not outdir.is_dir():
        _refuse(name, f"--outdir {outdir} is an existing file, not a folder")
    if outdir.resolve() == Path(outdir.resolve().anchor):
        _refuse(name, f"--outdir {outdir} is the root of the filesystem; pass a folder of its own, e.g. --outdir runs/")
    if outdir.is_dir() and os.access(outdir, os.R_OK | os.X_OK):
        foreign = foreign_files(outdir)
        if foreign:
            shown = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
            _refuse(name, f"--outdir {outdir} holds files the course did not write ({shown}); "
                          "pass a new or empty folder")
    try:
        outdir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        _refuse(name, f"cannot create the output folder {outdir} ({err.strerror or type(err).__name__}); "
                      "pass --outdir with a writable folder")
    if not os.access(outdir, os.W_OK | os.X_OK):
        _refuse(name, f"the output folder {outdir} is not writable; pass --outdir with a writable folder")


def _install_user_error_hook(name: str) -> None:
    """A ``UserError`` (missing data file ...) that reaches the top ends in one line and exit 2, no traceback."""
    previous = sys.excepthook

    def hook(kind, value, traceback):
        if isinstance(value, UserError):
            sys.stdout.flush()
            sys.stderr.write(f"{name}.py: error: {value}\n")
            sys.stderr.flush()
            os._exit(2)  # from inside excepthook, only _exit can choose the status
        previous(kind, value, traceback)

    sys.excepthook = hook


def start_lesson(config, flags, *, cpu_only: str | None = None, figures: dict[str, str] | None = None,
                 metrics: dict[str, str] | None = None) -> LessonRun:
    """Pick the device, make the output folder, seed every generator, apply the course style; returns the run.

    ``cfg, flags = parse_flags(Config, "07_neural_ebms", __doc__, quick=QUICK)`` comes first (before the
    heavy imports, so ``--help`` is fast); then ``run = start_lesson(cfg, flags)``. A lesson that runs on
    the CPU by design passes ``cpu_only="why"``: it says so once (if another device was asked for) and
    records ``"device": "cpu"``. ``figures`` and ``metrics`` are the lesson's ``FIGURES`` and ``METRICS``
    (``{name: what it is}``): the run refuses a figure or top-level metric that is not declared there, and a
    complete run says which declared ones it did not write.
    """
    name = flags.name
    if cpu_only:
        device = torch.device("cpu")
        if flags.device not in ("auto", "cpu"):
            print(f"[device] {name} runs on the CPU by design ({cpu_only}); --device {flags.device} is not used")
    else:
        try:
            device = pick_device(flags.device)
        except ValueError as err:
            _refuse(name, str(err))
    outdir = resolve_outdir(flags)
    make_outdir(name, outdir)
    _install_user_error_hook(name)
    if flags.show and not running_in_notebook() and not has_display():
        print("[--show] no display here, so the figures are only saved to files (open them from the output folder)")
        flags.show = False
    if not flags.show and not running_in_notebook():
        import matplotlib

        matplotlib.use("Agg")  # save figures without a display (CI, ssh, servers)
    from common.plotting import use_course_style

    use_course_style(quick=flags.quick)
    seed_everything(flags.seed)
    torch.set_num_threads(flags.threads)  # small tensors: one thread avoids per-op hand-off costs
    # the BLAS pools already loaded (NumPy's) get the same count: on small matrices their idle threads spin
    # (scikit-learn's logistic regression cost 15x the CPU); pools loaded later read the variables parse_flags set
    from threadpoolctl import threadpool_limits

    threadpool_limits(flags.threads)
    main_file = getattr(sys.modules.get("__main__"), "__file__", None)
    if main_file and not running_in_notebook() and not isinstance(sys.stdout, ConsoleLog):
        sys.stdout = ConsoleLog(sys.stdout, main_file)  # a script run: remember which line printed what
    run = LessonRun(name, config, flags, device, outdir, figures=figures, metrics=metrics)
    print(f"{name}  |  device={device}  threads={flags.threads}  seed={flags.seed}  outdir={shown_path(outdir)}")
    if flags.quick:
        print(f"[{QUICK_MARK}]")
    if flags.section is not None:
        what = f"exercise {flags.exercise} needs" if flags.exercise is not None else "--section"
        if flags.section:
            print(f"[sections {','.join(map(str, flags.section))} only ({what}); the others are skipped]")
        else:
            print(f"[no section runs (exercise {flags.exercise} needs none); only its stub]")
    print(changed_flags_line(config, flags))
    run.metrics["provenance"] = provenance(flags, device)
    run.metrics["config"] = {k: getattr(config, k) for k in config.__dataclass_fields__}
    return run
