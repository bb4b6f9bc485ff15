"""Every lesson runs end to end with --quick, once, with the network cut: exit 0, exactly the figures and
metrics.json keys its FIGURES and METRICS constants declare, strict JSON, and every exercise stub (one run:
EBM_ALL_STUBS=1). The cheapest lesson runs twice (same seed, same metrics); one --exercise run checks that
only the sections the exercise needs run. Tests that run a lesson carry the ``lesson`` marker.

Also checks the contract around the run: bad inputs (flag values, a mistyped flag, an unusable output
folder, missing MNIST files) exit 2 with a one-line message and no traceback, and --help and a bad value
answer without importing torch.
"""

import ast
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from common.config import declared_constant

ROOT = Path(__file__).resolve().parents[1]
LESSONS = sorted(p.name for p in ROOT.glob("[0-9][0-9]_*.py"))
# written by common.lesson, not the lesson
FRAMEWORK_KEYS = {"config", "provenance", "non_finite", "diverged", "claims", "key_figures"}

# sitecustomize runs at interpreter start-up in the lesson's process: every socket connection fails
NO_NETWORK = textwrap.dedent(
    """
    import socket

    def _refuse(*args, **kwargs):
        raise OSError("network cut by the test suite")

    socket.socket.connect = _refuse
    socket.socket.connect_ex = _refuse
    socket.create_connection = _refuse
    """
)
# a fake torch that cannot be imported: --help and flag errors must not need it
NO_TORCH = "raise ImportError('torch was imported before the flags were parsed')\n"


@pytest.fixture(scope="session")
def offline_env(tmp_path_factory):
    site = tmp_path_factory.mktemp("offline_site")
    (site / "sitecustomize.py").write_text(NO_NETWORK)
    path = os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return dict(os.environ, MPLBACKEND="Agg", PYTHONPATH=path,
                EBM_DATA_DIR=str(tmp_path_factory.mktemp("no_data")))


def run_lesson(lesson, *args, env, outdir=None, timeout=300):
    extra = ["--outdir", str(outdir)] if outdir is not None else []
    return subprocess.run([sys.executable, str(ROOT / lesson), *extra, *args],
                          capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=env)


def without_timings(metrics):
    """Metrics minus wall-clock measurements and provenance, which legitimately differ between runs."""
    if isinstance(metrics, dict):
        return {k: without_timings(v) for k, v in metrics.items()
                if "seconds" not in k and "time" not in k and k != "provenance"}
    return metrics


def declared(lesson, name):
    """The lesson's constant ``name`` (FIGURES, METRICS, SECTIONS, EXERCISES) read from its code."""
    value = declared_constant(ROOT / lesson, name)
    assert value is not None, f"{lesson} declares no {name}"
    return value


def stubs_in(lesson) -> list[int]:
    """The exercise numbers with a runnable stub (``if run.stub(N):``)."""
    return sorted({int(n) for n in re.findall(r"^if run\.stub\((\d+)\):", (ROOT / lesson).read_text(), re.M)})


@pytest.mark.lesson
@pytest.mark.parametrize("lesson", LESSONS)
def test_quick_run_writes_what_the_lesson_declares_and_every_stub_runs(lesson, tmp_path, offline_env):
    """One --quick run per lesson, network cut, with EBM_ALL_STUBS=1: exit 0; exactly the FIGURES; the METRICS
    keys (and no others); strict JSON; claims recorded as not meaningful; then every exercise stub runs."""
    result = run_lesson(lesson, "--quick", env={**offline_env, "EBM_ALL_STUBS": "1"}, outdir=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "[contract]" not in result.stdout, result.stdout[-2000:]
    figures, metrics_declared = declared(lesson, "FIGURES"), declared(lesson, "METRICS")
    written = {p.stem for p in tmp_path.iterdir() if p.suffix in (".png", ".gif")}
    assert written == set(figures), f"written, not declared: {written - set(figures)}; " \
                                    f"declared, not written: {set(figures) - written}"
    metrics = json.loads((tmp_path / "metrics.json").read_text(), parse_constant=lambda c: pytest.fail(c))
    assert set(metrics) - FRAMEWORK_KEYS == set(metrics_declared)
    assert all(isinstance(text, str) and text.strip() for text in {**figures, **metrics_declared}.values())
    assert metrics["provenance"]["quick"] is True and "diverged" not in metrics
    assert {"device", "threads", "seed", "torch", "numpy"} <= set(metrics["provenance"])
    assert all(claim["meaningful"] is False for claim in metrics.get("claims", {}).values())
    assert "quick run" in result.stdout  # the printed summary says so
    stubs = stubs_in(lesson)
    exercises = declared(lesson, "EXERCISES")
    assert stubs and sorted(exercises) == stubs, f"EXERCISES {sorted(exercises)} vs stubs {stubs}"
    sections = declared(lesson, "SECTIONS")
    assert all(set(needs) <= set(sections) for needs in exercises.values())
    for n in stubs:
        assert f"xercise {n}" in result.stdout, f"the stub of exercise {n} printed nothing"


@pytest.mark.lesson
def test_same_seed_same_metrics(tmp_path, offline_env):
    """Determinism on the cheapest lesson: two quick runs with one seed write the same metrics."""
    runs = [run_lesson("03_boltzmann_machines.py", "--quick", env=offline_env, outdir=tmp_path / str(i))
            for i in range(2)]
    assert all(r.returncode == 0 for r in runs), runs[0].stderr[-2000:]
    first, second = (json.loads((tmp_path / str(i) / "metrics.json").read_text()) for i in range(2))
    assert without_timings(first) == without_timings(second)


@pytest.mark.lesson
def test_an_exercise_runs_only_the_sections_it_needs(tmp_path, offline_env):
    """--exercise N runs EXERCISES[N]'s sections and the stub; it writes a subset of the figures and says so."""
    lesson = "02_hopfield_networks.py"
    exercises, figures = declared(lesson, "EXERCISES"), declared(lesson, "FIGURES")
    number = min(exercises, key=lambda n: len(exercises[n]))
    result = run_lesson(lesson, "--quick", "--exercise", str(number), env=offline_env, outdir=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"xercise {number}" in result.stdout and "only (exercise" in result.stdout
    written = {p.stem for p in tmp_path.iterdir() if p.suffix in (".png", ".gif")}
    assert written < set(figures) and "[contract]" not in result.stdout
    assert json.loads((tmp_path / "metrics.json").read_text())["provenance"]["section"] == list(exercises[number])


@pytest.fixture(scope="session")
def torchless_env(tmp_path_factory):
    fake = tmp_path_factory.mktemp("torchless")
    (fake / "torch").mkdir()
    (fake / "torch" / "__init__.py").write_text(NO_TORCH)
    return dict(os.environ, MPLBACKEND="Agg", PYTHONPATH=str(fake))


@pytest.mark.parametrize("lesson", LESSONS)
def test_help_and_bad_values_answer_before_torch_is_imported(lesson, tmp_path, torchless_env):
    help_run = run_lesson(lesson, "--help", env=torchless_env, timeout=60)
    assert help_run.returncode == 0, help_run.stderr[-2000:]
    assert "--no-such-flag" not in help_run.stdout and "exercises with a stub" in help_run.stdout
    # the other bad values are checked in-process (tests/test_config.py, tests/test_slips.py): same parser
    for bad in (["--seed", "x"], ["--exercise", "99"], ["--section", "99"]):
        result = run_lesson(lesson, *bad, env=torchless_env, outdir=tmp_path, timeout=60)
        assert result.returncode == 2, (bad, result.stderr)
        assert "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr


@pytest.mark.lesson
def test_unusable_outdir_and_missing_mnist_exit_2_in_one_line(tmp_path, offline_env):
    a_file = tmp_path / "a_file"
    a_file.write_text("not a folder")
    for outdir in (a_file, a_file / "below_a_file"):
        result = run_lesson("03_boltzmann_machines.py", "--quick", env=offline_env, outdir=outdir, timeout=120)
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
        assert len(result.stderr.strip().splitlines()) == 1 and "folder" in result.stderr
    result = run_lesson("04_restricted_boltzmann_machines.py", "--quick", "--dataset", "mnist", env=offline_env,
                        outdir=tmp_path / "out", timeout=300)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert len(result.stderr.strip().splitlines()) == 1 and "MNIST" in result.stderr


def guard_calls(lesson):
    """Every ``run.check_finite(...)`` call in a lesson, as AST nodes."""
    tree = ast.parse((ROOT / lesson).read_text())
    return [node for node in ast.walk(tree) if isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute) and node.func.attr == "check_finite"]


def blamed_fields(node) -> list:
    """The field names a ``field=`` argument can take: a string, or either branch of ``a if cond else b``."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, ast.IfExp):
        return blamed_fields(node.body) + blamed_fields(node.orelse)
    return [None]  # anything else cannot be checked from the source: refuse it


@pytest.mark.parametrize("lesson", LESSONS)
def test_every_divergence_guard_names_a_config_field(lesson):
    tree = ast.parse((ROOT / lesson).read_text())
    config = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Config")
    fields = {s.target.id for s in config.body if isinstance(s, ast.AnnAssign)}
    for call in guard_calls(lesson):
        keywords = {k.arg: k.value for k in call.keywords}
        assert "field" in keywords and "flag" not in keywords, f"{lesson}:{call.lineno} names no field"
        names = blamed_fields(keywords["field"])
        assert names and all(n in fields for n in names), f"{lesson}:{call.lineno} blames {names}, not a field"


def imported_modules(source: str) -> set[str]:
    """Every module a source imports, at any depth (``import x``, ``from x import y``, ``importlib.import_module``)."""
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            names.add(node.module or "")
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "import_module" and node.args:
            names.add(getattr(node.args[0], "value", ""))
    return names


@pytest.mark.parametrize("lesson", LESSONS)
def test_a_lesson_imports_no_other_lesson(lesson):
    lesson_modules = {name[:-3] for name in LESSONS}
    imported = imported_modules((ROOT / lesson).read_text())
    assert not imported & lesson_modules, f"{lesson} imports {sorted(imported & lesson_modules)}"


def test_the_layering_check_can_fail():
    """The check sees the only ways a lesson could import another (a file name starting with a digit is not
    a valid module name for ``import``, so importlib is the way)."""
    source = "import importlib\nother = importlib.import_module('07_neural_ebms')\nfrom common import plotting\n"
    assert "07_neural_ebms" in imported_modules(source) and "common" in imported_modules(source)


@pytest.mark.parametrize("lesson", LESSONS)
def test_lesson_has_contract_parts(lesson):
    text = (ROOT / lesson).read_text()
    assert "# %%" in text and "@dataclass" in text and "start_lesson(" in text and "parse_flags(" in text
    exercises = [line for line in text.splitlines() if line.lstrip("#* ").lower().startswith("exercise ")]
    assert len(exercises) >= 5, f"{lesson} has {len(exercises)} exercises"
    # flags are parsed before torch is imported (so --help is fast)
    assert text.index("parse_flags(Config") < text.index("\nimport torch")
