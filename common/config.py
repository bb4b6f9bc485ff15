"""Turn a lesson's ``Config`` dataclass into command-line flags.

A lesson declares its hyperparameters once, with a comment that says what each one does::

    @dataclass
    class Config:
        step_size: float = positive(1e-2)  # Langevin step h; above ~5e-2 the chains blow up
        n_steps: int = count(500)          # chain length K; hopping between modes needs ~1e3

and gets ``--step-size`` and ``--n-steps`` for free. The trailing comment becomes the ``--help``
text, and the wrapper (``positive``, ``count``, ``probability`` ...) declares the valid range,
so that a bad value is refused with a one-line message and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import inspect
import io
import math
import os
import re
import sys
import tokenize
import zlib
from dataclasses import dataclass, field
from typing import Any, get_type_hints


class UserError(Exception):
    """A mistake of the user's outside the flag values (a missing data file, say).

    A lesson started with ``common.lesson.start_lesson`` ends with its message in one line and exit 2.
    """


# --------------------------------------------------------------------------------------------
# Field helpers: a default value plus its valid range.
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Range:
    """Valid interval for a numeric flag; ``None`` means unbounded on that side."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False  # True: the low end itself is excluded (x > low)
    high_open: bool = False  # True: the high end itself is excluded (x < high)

    def contains(self, value: float) -> bool:
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        if self.high is not None and (value >= self.high if self.high_open else value > self.high):
            return False
        return True

    def describe(self) -> str:
        parts = []
        if self.low is not None:
            parts.append(f"{'>' if self.low_open else '>='} {_number(self.low)}")
        if self.high is not None:
            parts.append(f"{'<' if self.high_open else '<='} {_number(self.high)}")
        return " and ".join(parts) if parts else "finite"


def _number(x: float) -> str:
    """Whole numbers in full (2^32 - 1 = 4294967295, not 4.29497e+09), others as %g."""
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e16 else f"{x:g}"


def _field(default: Any, valid: Range | None = None, choices: tuple | None = None) -> Any:
    metadata = {"range": valid, "choices": choices}
    if isinstance(default, (list, tuple)):
        return field(default_factory=lambda: tuple(default), metadata=metadata)
    return field(default=default, metadata=metadata)


def positive(default: float | tuple) -> Any:
    """A number that must be > 0 (step sizes, temperatures, learning rates, noise levels)."""
    return _field(default, Range(0, None, low_open=True))


def nonnegative(default: float | tuple) -> Any:
    """A number that must be >= 0 (weight decay, penalties, burn-in)."""
    return _field(default, Range(0, None))


def count(default: int | tuple, minimum: int = 1) -> Any:
    """A whole number >= ``minimum`` (steps, chains, epochs, units)."""
    return _field(default, Range(minimum, None))


def probability(default: float | tuple) -> Any:
    """A number in [0, 1] (fractions, dropout, re-initialisation rate)."""
    return _field(default, Range(0, 1))


def between(default: float | tuple, low: float, high: float, *, open_low=False, open_high=False) -> Any:
    """A number in the interval from ``low`` to ``high``."""
    return _field(default, Range(low, high, low_open=open_low, high_open=open_high))


def choice(default: str | tuple[str, ...], options: tuple[str, ...] | list[str]) -> Any:
    """One string out of a fixed set (``--dataset auto|digits|mnist``), or a tuple of them.

    For a ``tuple[str, ...]`` field every element must be one of ``options`` (``--rules hebbian,storkey``).
    """
    return _field(default, choices=tuple(options))


def optional(default: Any = None, valid: Any = None) -> Any:
    """A field that may be ``None`` (``max_train: int | None = optional()``); ``--max-train none`` sets None.

    ``valid`` is another helper's field (``count(1)``, ``positive(0.1)``) whose range applies when a value is given.
    """
    metadata = dict(valid.metadata) if valid is not None else {"range": None, "choices": None}
    return field(default=default, metadata=metadata)


# --------------------------------------------------------------------------------------------
# Help text from the comments in the lesson's source.
# --------------------------------------------------------------------------------------------


def field_comments(cls: type, source: str | None = None) -> dict[str, str]:
    """Map each field name to the comment written after it in the class body.

    Comment-only lines right below a field, indented deeper than it, continue its comment. ``source`` is the class's
    source text; by default it is looked up with ``inspect``. Returns an empty dict when the
    source is not available (some notebook front ends), so help texts are then just defaults.
    """
    if source is None:
        try:
            source = inspect.getsource(cls)
        except (OSError, TypeError):
            return {}
    comment_on_line = {
        tok.start[0]: tok.string.lstrip("#").strip()
        for tok in tokenize.generate_tokens(io.StringIO(source).readline)
        if tok.type == tokenize.COMMENT
    }
    comments: dict[str, str] = {}
    current, field_indent = None, 0
    for lineno, line in enumerate(source.splitlines(), start=1):
        match = re.match(r"^(\s+)([A-Za-z_]\w*)\s*:", line)
        indent = len(line) - len(line.lstrip())
        if match and lineno in comment_on_line:
            current, field_indent = match.group(2), len(match.group(1))
            comments[current] = comment_on_line[lineno]
        elif current and line.strip().startswith("#") and indent > field_indent:
            comments[current] += "; " + comment_on_line[lineno]  # an indented continuation line
        else:
            current = None
    return comments


def declared_constant(lesson_file, name: str, default: Any = None) -> Any:
    """A lesson's module-level literal (FIGURES, METRICS, SECTIONS, EXERCISES) read from its source, without
    running it: the scripts and tests use the same declarations the run enforces."""
    import ast
    from pathlib import Path

    for node in ast.parse(Path(lesson_file).read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] == [name]:
            return ast.literal_eval(node.value)
    return default


def _help_comments(cls: type, prog: str | None) -> dict[str, str]:
    """The fields' comments for --help: from the lesson's file when there is one (read once), else ``inspect``."""
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / (prog or "")
    if prog and path.is_file():
        comments = _comments_in_file(str(path), path.stat().st_mtime_ns, cls.__name__)
        if comments:
            return comments
    return _inspected_comments(cls)


@functools.lru_cache(maxsize=64)
def _inspected_comments(cls: type) -> dict[str, str]:
    return field_comments(cls)


@functools.lru_cache(maxsize=64)
def _comments_in_file(path: str, mtime_ns: int, class_name: str) -> dict[str, str]:
    import ast
    from pathlib import Path

    text = Path(path).read_text(encoding="utf-8")
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.ClassDef) and node.name == class_name:
            return field_comments(None, ast.get_source_segment(text, node, padded=True))
    return {}


# --------------------------------------------------------------------------------------------
# Parsing and validation.
# --------------------------------------------------------------------------------------------


SEED_RANGE = Range(0, 2**32 - 1)  # what NumPy's and PyTorch's generators accept


class LessonStopped(Exception):  # noqa: N818 - it is not an error: the lesson stops as asked
    """Ends a lesson early in a notebook (after ``--help``, or on a bad value in ``EBM_ARGS``).

    IPython shows only the one line of ``_render_traceback_`` (a ``SystemExit`` would add a warning about how
    to quit), and "Run all" stops there instead of failing on every later cell.
    """

    def __init__(self, code: int):
        super().__init__(code)
        self.code = code

    def _render_traceback_(self):
        if self.code:
            return ["Stopped: fix EBM_ARGS (the message is above) and run the notebook again."]
        return ["Stopped after --help: set EBM_ARGS to the flags you want and run the notebook again."]


def stop_lesson(code: int):
    """Exit with ``code`` from a script; stop cleanly in a notebook."""
    raise LessonStopped(code) if running_in_notebook() else SystemExit(code)


class CourseArgumentParser(argparse.ArgumentParser):
    """argparse, but every error is one line and exit status 2 (no usage dump, no traceback).

    Prefix matching is off (``allow_abbrev=False``): ``--qui`` is refused, not read as ``--quick``.
    """

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str):  # noqa: D401 - argparse API
        if message.startswith("unrecognized arguments: "):
            message = self.explain_unknown(message.split(": ", 1)[1].split())
        sys.stderr.write(f"{self.prog}: error: {message} (see --help)\n")
        stop_lesson(2)

    def explain_unknown(self, words: list[str]) -> str:
        """One line for the first unknown flag: the Config field spelled with underscores, a close match, or
        the lesson that has it."""
        import difflib

        flag = next((w.split("=", 1)[0] for w in words if w.startswith("-")), words[0])
        known = [s for s in self._option_string_actions if s.startswith("--")]
        dashed = "--" + flag.lstrip("-").replace("_", "-")
        if dashed in known:
            return f"unknown flag {flag}: flags use dashes, not underscores; did you mean {dashed}?"
        elsewhere = [lesson for lesson, flags in other_lessons_flags(self.prog).items() if dashed in flags]
        if elsewhere:
            return f"unknown flag {flag}: it is a flag of {', '.join(elsewhere)}, not of {self.prog}"
        close = difflib.get_close_matches(dashed, known, n=1, cutoff=0.75)
        if close:
            return f"unknown flag {flag}: did you mean {close[0]}?"
        return f"unrecognized arguments: {' '.join(words)}"

    def exit(self, status: int = 0, message: str | None = None):  # after --help
        if message:
            sys.stderr.write(message)
        stop_lesson(status)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def other_lessons_flags(prog: str | None) -> dict[str, set[str]]:
    """Every other lesson's Config flags, read from the lesson files at the repository root (no import)."""
    import ast
    from pathlib import Path

    found = {}
    for path in sorted(Path(__file__).resolve().parents[1].glob("[0-9][0-9]_*.py")):
        if path.name == prog:
            continue
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.ClassDef) and node.name == "Config":
                found[path.name] = {_flag(item.target.id) for item in node.body
                                    if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name)}
    return found


NEGATIVE_VALUE = re.compile(r"^-\.?\d")  # -1, -0.5, -.5, -1,1 and -4,1: a value, never a flag


def join_negative_values(argv: list[str], parser: argparse.ArgumentParser) -> list[str]:
    """``--mix-means -1,1`` becomes ``--mix-means=-1,1``: argparse takes a word that starts with ``-`` for a flag
    (it accepts ``-1`` but not ``-1,1``), so a negative list written the way the exercises print it would fail."""
    joined, words = [], list(argv)
    while words:
        word = words.pop(0)
        action = parser._option_string_actions.get(word)
        if action is not None and action.nargs is None and words and NEGATIVE_VALUE.match(words[0]):
            word = f"{word}={words.pop(0)}"
        joined.append(word)
    return joined


def _parse_scalar(kind: type, text: str, flag: str) -> Any:
    """Convert one command-line word to ``kind``; refuse NaN, inf and non-numbers."""
    if kind is bool:
        lowered = text.lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise argparse.ArgumentTypeError(f"expects true/false, got {text!r}")
    if kind is int:
        try:
            return int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expects a whole number, got {text!r}") from None
    if kind is float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expects a number, got {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"expects a finite number, got {text!r}")
        return value
    return text


def _field_kind(hint: Any) -> tuple[type, bool]:
    """(element type, is_tuple) for a field's type hint: ``float``, ``int``, ``tuple[int, ...]`` ...

    ``X | None`` (an optional field) gives the kind of ``X``; see ``_is_optional``.
    """
    args = [a for a in getattr(hint, "__args__", ()) if a is not type(None)]
    if _is_optional(hint):
        return _field_kind(args[0])
    origin = getattr(hint, "__origin__", None)
    if origin in (tuple, list):
        return hint.__args__[0], True
    return hint, False


def _is_optional(hint: Any) -> bool:
    """True for ``X | None`` and ``Optional[X]``."""
    args = getattr(hint, "__args__", ())
    return type(None) in args and getattr(hint, "__origin__", None) not in (tuple, list)


def _converter(kind: type, is_tuple: bool, flag: str, optional: bool = False):
    def convert(text: str):
        if optional and text.strip().lower() == "none":
            return None
        if is_tuple:
            words = [w for w in text.split(",") if w.strip()]
            if not words:
                raise argparse.ArgumentTypeError(f"expects a comma-separated list, got {text!r}")
            return tuple(_parse_scalar(kind, w.strip(), flag) for w in words)
        return _parse_scalar(kind, text, flag)

    convert.__name__ = kind.__name__  # argparse names the type in its own messages
    return convert


def validate(config: Any) -> None:
    """Raise ``ValueError`` naming the flag if any field is outside its declared range."""
    hints = get_type_hints(type(config))
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        flag = _flag(f.name)
        kind, is_tuple = _field_kind(hints[f.name])
        if value is None and _is_optional(hints[f.name]):
            continue
        values = value if is_tuple else (value,)
        choices = f.metadata.get("choices")
        valid = f.metadata.get("range")
        for v in values:
            if choices is not None and v not in choices:
                raise ValueError(f"{flag} must be one of {', '.join(choices)} (got {v!r})")
            if kind in (int, float) and not isinstance(v, bool):
                if not math.isfinite(v):
                    raise ValueError(f"{flag} must be finite (got {v})")
                if valid is not None and not valid.contains(v):
                    raise ValueError(f"{flag} must be {valid.describe()} (got {v:g})")


def build_parser(config_cls: type, description: str | None, prog: str | None,
                 exercises: tuple[int, ...] | None = None, sections: dict[int, str] | None = None
                 ) -> CourseArgumentParser:
    parser = CourseArgumentParser(
        prog=prog,
        usage="%(prog)s [--quick] [--seed N] [--device D] [--outdir DIR] [--show] [--section N] [--exercise N] "
        "[--HYPERPARAMETER VALUE ...]",
        description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        argument_default=argparse.SUPPRESS,  # only flags actually given end up in the namespace
    )
    hints = get_type_hints(config_cls)
    comments = _help_comments(config_cls, prog)
    group = parser.add_argument_group("lesson hyperparameters (from the Config dataclass)")
    for f in dataclasses.fields(config_cls):
        kind, is_tuple = _field_kind(hints[f.name])
        optional = _is_optional(hints[f.name])
        flag = _flag(f.name)
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        shown = ",".join(str(v) for v in default) if is_tuple and default is not None else default
        help_text = comments.get(f.name, "")
        valid = f.metadata.get("range")
        choices = f.metadata.get("choices")
        if valid is not None and kind in (int, float):
            help_text += f" [{valid.describe()}]"
        if optional:
            help_text += " ('none' for None)"
        help_text = f"{help_text} (default: {shown})".strip().replace("%", "%%")
        if kind is bool and not is_tuple:  # a switch: --flag / --no-flag
            group.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, help=help_text)
            continue
        if choices and (is_tuple or optional):  # argparse checks whole values; validate() checks elements
            metavar = ",".join(choices) if is_tuple else "{" + ",".join(choices) + ",none}"
            choices = None
        else:
            metavar = None if choices else kind.__name__.upper() + ("S" if is_tuple else "")
        group.add_argument(
            flag,
            dest=f.name,
            type=_converter(kind, is_tuple, flag, optional),
            choices=choices,
            metavar=metavar,
            help=help_text,
        )
    common = parser.add_argument_group("common flags (every lesson)")
    common.add_argument("--quick", action="store_true", help="tiny settings: every code path runs in seconds")
    common.add_argument("--seed", type=_converter(int, False, "--seed"),
                        help=f"random seed, {SEED_RANGE.describe()} (default: 0)")
    common.add_argument(
        "--device",
        choices=("auto", "cpu", "cuda", "mps"),
        help="where tensors live; auto picks cuda, then mps, then cpu (default: auto)",
    )
    common.add_argument("--outdir", help="folder for figures and metrics.json (default: outputs/<lesson>/)")
    common.add_argument("--show", action="store_true", help="open figure windows as well as saving them")
    common.add_argument(
        "--threads",
        type=_converter(int, False, "--threads"),
        help="CPU threads for PyTorch (default: 1: the course's tensors are small, so more threads mostly add "
        "hand-off overhead; try 2+ for bigger models)",
    )
    common.add_argument(
        "--exercise",
        type=_converter(int, False, "--exercise"),
        help="run the stub of exercise N (see the end of the lesson)"
        + ("" if exercises is None else f"; exercises with a stub: {', '.join(map(str, exercises)) or 'none'}")
        + " (runs only the sections the exercise needs)",
    )
    listed = "" if not sections else "; " + "; ".join(f"{n} {title}" for n, title in sections.items())
    common.add_argument(
        "--section",
        type=_converter(int, True, "--section"),
        metavar="N[,M]",
        help="run only these sections (and skip the others' training), e.g. for a live demo" + listed,
    )
    return parser


def running_in_notebook() -> bool:
    """True inside a Jupyter kernel, whose argv is the kernel's, not the student's.

    Asks the running IPython shell (a kernel's is a ``ZMQInteractiveShell``) rather than whether ipykernel was
    imported: a test process that imports the notebook tools is not a notebook.
    """
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None and hasattr(ipython, "get_ipython") else None
    return type(shell).__name__ == "ZMQInteractiveShell"


def parse_config(
    config_cls: type,
    argv: list[str] | None = None,
    quick_overrides: dict[str, Any] | None = None,
    description: str | None = None,
    prog: str | None = None,
    exercises: tuple[int, ...] | None = None,
    sections: dict[int, str] | None = None,
) -> tuple[Any, argparse.Namespace]:
    """Parse flags into ``(config, common)``.

    Precedence, lowest to highest: the dataclass defaults, ``quick_overrides`` when ``--quick``
    is given, then every flag given explicitly. In a notebook the kernel's argv is ignored; set
    the environment variable ``EBM_ARGS`` (e.g. ``"--quick --seed 3"``) to pass flags there.
    """
    if argv is None:
        if running_in_notebook():
            import os
            import shlex

            argv = shlex.split(os.environ.get("EBM_ARGS", ""))
        else:
            argv = sys.argv[1:]
    parser = build_parser(config_cls, description, prog, exercises, sections)
    given = vars(parser.parse_args(join_negative_values(argv, parser)))
    common_names = ("quick", "seed", "device", "outdir", "show", "exercise", "threads", "section")
    common = argparse.Namespace(
        quick=given.pop("quick", False),
        seed=given.pop("seed", 0),
        device=given.pop("device", "auto"),
        outdir=given.pop("outdir", None),
        show=given.pop("show", False),
        exercise=given.pop("exercise", None),
        threads=given.pop("threads", 1),
        section=given.pop("section", None),
    )
    if common.section is not None and sections is not None:
        unknown = sorted(set(common.section) - set(sections))
        if unknown:
            parser.error(f"--section {','.join(map(str, unknown))}: this lesson's sections are "
                         f"{', '.join(map(str, sections))}")
    if common.threads < 1:
        parser.error(f"--threads must be >= 1 (got {common.threads})")
    if not SEED_RANGE.contains(common.seed):
        parser.error(f"--seed must be {SEED_RANGE.describe()} (got {common.seed})")
    assert not set(common_names) & set(given)
    values = {}
    if common.quick and quick_overrides:
        unknown = set(quick_overrides) - {f.name for f in dataclasses.fields(config_cls)}
        if unknown:
            raise TypeError(f"quick overrides name unknown fields: {sorted(unknown)}")
        values.update(quick_overrides)
    values.update(given)
    common.given = sorted(given)  # the Config fields set by an explicit flag
    config = config_cls(**values)
    try:
        validate(config)
    except ValueError as err:
        parser.error(str(err))
    return config, common


# import name -> the requirement that provides it (requirements.txt); torchvision is optional for the digits
REQUIRED_PACKAGES = {"torch": "torch", "numpy": "numpy", "matplotlib": "matplotlib", "scipy": "scipy",
                     "sklearn": "scikit-learn", "tqdm": "tqdm"}
SETUP_HINT = "run the set-up from the README (bash setup.sh), or activate its environment: source .venv/bin/activate"


def require_packages(prog: str) -> None:
    """Refuse in one line, naming the set-up command, when a package the lessons need is missing."""
    import importlib.util

    missing = [pip for module, pip in REQUIRED_PACKAGES.items() if importlib.util.find_spec(module) is None]
    if missing:
        sys.stderr.write(f"{prog}: error: this Python ({sys.executable}) lacks {', '.join(missing)}; {SETUP_HINT}\n")
        stop_lesson(2)


@dataclass
class Flags:
    """The common flags of every lesson, parsed before any heavy import (see ``parse_flags``)."""

    name: str  # the lesson, e.g. "07_neural_ebms"
    quick: bool = False
    seed: int = 0
    device: str = "auto"
    outdir: str | None = None
    show: bool = False
    exercise: int | None = None
    threads: int = 1
    section: tuple[int, ...] | None = None  # --section: only these sections run (None: all of them)
    changed: dict = field(default_factory=dict)  # Config fields set away from their defaults by a flag


def parse_flags(
    config_cls: type,
    name: str,
    doc: str | None = None,
    quick: dict[str, Any] | None = None,
    check: Any = None,
    exercises: dict[int, tuple[int, ...]] | tuple[int, ...] | None = None,
    argv: list[str] | None = None,
    sections: dict[int, str] | None = None,
) -> tuple[Any, Flags]:
    """Parse and validate every flag of a lesson; imports nothing heavy, so ``--help`` answers at once.

    ``check(cfg)`` may raise ``ValueError`` for rules across fields (tuple lengths, one field below
    another); its message is printed in one line with exit status 2. ``exercises`` lists the exercise
    numbers that have a runnable stub; ``--exercise N`` for any other N is refused (``None``: not checked).
    As a dict ``{exercise: (sections it needs)}`` (the lesson's ``EXERCISES``), ``--exercise N`` runs only
    those sections, then the stub. ``sections`` (the lesson's ``SECTIONS``, ``{number: title}``) enables
    ``--section N[,M]``. Returns ``(config, flags)``; hand both to ``common.lesson.start_lesson``.
    """
    description = (doc or "").strip().split("\n\n")[0] or None
    prog = f"{name}.py"
    stubs = tuple(exercises) if exercises is not None else None
    config, common = parse_config(config_cls, argv, quick, description=description, prog=prog, exercises=stubs,
                                  sections=sections)
    if check is not None:
        try:
            check(config)
        except ValueError as err:
            sys.stderr.write(f"{prog}: error: {err} (see --help)\n")
            stop_lesson(2)
    if exercises is not None and common.exercise is not None and common.exercise not in exercises:
        listed = ", ".join(str(n) for n in exercises) or "none"
        sys.stderr.write(f"{prog}: error: --exercise {common.exercise} has no stub (exercises with one: {listed})\n")
        stop_lesson(2)
    if isinstance(exercises, dict) and common.exercise is not None and common.section is None:
        common.section = tuple(exercises[common.exercise])  # only what the exercise needs
    # every BLAS and OpenMP pool loaded from here on (scipy's, scikit-learn's) gets --threads: on the course's
    # small matrices extra threads only spin; start_lesson limits the pools already loaded (threadpoolctl)
    for variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[variable] = str(common.threads)
    require_packages(prog)
    if os.environ.get("EBM_PARSE_ONLY"):  # tests/test_exercise_commands.py: check the flags, run nothing
        print(f"{prog}: flags ok")
        stop_lesson(0)
    defaults = config_cls()
    given = common.__dict__.pop("given")
    # only what a flag changed: --quick's own overrides are named by "quick", not field by field
    changed = {name: getattr(config, name) for name in given if getattr(config, name) != getattr(defaults, name)}
    flags = Flags(name=name, changed=changed, **vars(common))
    return config, flags


def run_folder_name(flags: Flags) -> str | None:
    """The subfolder of ``outputs/<lesson>/`` for a run that is not the prepared default, or ``None``.

    ``--quick``, a notebook, every changed Config field, a non-default seed and ``--exercise N`` each
    add a part: ``quick``, ``step-size=0.05``, ``quick_seed=3``. A run with the default settings writes
    to ``outputs/<lesson>/`` itself, the folder a lecturer prepares before class.
    """
    parts = ["quick"] if flags.quick else []
    if running_in_notebook():
        parts.append("notebook")
    for key, value in sorted(flags.changed.items()):
        shown = ",".join(str(v) for v in value) if isinstance(value, tuple) else str(value)
        parts.append(f"{key.replace('_', '-')}={shown}")
    if flags.seed != 0:
        parts.append(f"seed={flags.seed}")
    if flags.exercise is not None:
        parts.append(f"exercise={flags.exercise}")
    elif flags.section is not None:
        parts.append("section=" + ",".join(map(str, flags.section)))
    if not parts:
        return None
    name = re.sub(r"[^A-Za-z0-9=.,+_-]", "-", "_".join(parts))
    if len(name) > 100:  # very many changed flags: keep it readable and unique
        name = f"{name[:80]}_{zlib.crc32(name.encode()):08x}"
    return name
