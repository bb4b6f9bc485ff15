"""Every lesson runs end to end with --quick, with the network cut: exit 0, the figures and metrics its
docstring promises, strict JSON, the same metrics for the same seed, and its --exercise stub runs.

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


_FIRST_RUNS = {}


def quick_run(lesson, tmp_path_factory, env):
    """Run a lesson with --quick (network cut) once per test session; later tests reuse the result."""
    if lesson not in _FIRST_RUNS:
        outdir = tmp_path_factory.mktemp(lesson[:2])
        _FIRST_RUNS[lesson] = (run_lesson(lesson, "--quick", env=env, outdir=outdir), outdir)
    return _FIRST_RUNS[lesson]


def without_timings(metrics):
    """Metrics minus wall-clock measurements and provenance, which legitimately differ between runs."""
    if isinstance(metrics, dict):
        return {k: without_timings(v) for k, v in metrics.items()
                if "seconds" not in k and "time" not in k and k != "provenance"}
    return metrics


def docstring_block(doc: str, header: str) -> str:
    """The indented lines under a line that starts with ``header`` (``Figures``, ``metrics.json``)."""
    lines = doc.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header))
    block = []
    for line in lines[start + 1:]:
        if not line.strip() or not line.startswith(" "):
            break
        block.append(line)
    return "\n".join(block)


def declared(lesson, name):
    """The lesson's constant ``name`` (FIGURES, METRICS, SECTIONS, EXERCISES) read from its code, or None."""
    for node in ast.parse((ROOT / lesson).read_text()).body:
        if isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] == [name]:
            return ast.literal_eval(node.value)
    return None


def promised(lesson):
    """(figure names, metric keys, the metrics' descriptions): the lesson's FIGURES and METRICS constants."""
    figures, metrics = declared(lesson, "FIGURES"), declared(lesson, "METRICS")
    if figures is not None and metrics is not None:
        return set(figures), set(metrics), "\n".join(metrics)
    doc = ast.get_docstring(ast.parse((ROOT / lesson).read_text()))
    figures = set(re.findall(r"\b((?:fig\d\d|anim)_\w+?)(?:\.png|\.gif)?\b", docstring_block(doc, "Figures")))
    block = docstring_block(doc, "metrics.json")
    keys = set()
    for line in block.splitlines():
        if len(line) - len(line.lstrip()) <= 4:  # a key line, not a deeper-indented continuation
            head = re.split(r"\s{2,}", line.strip())[0]
            keys |= {k.strip() for k in head.split(",") if k.strip()}
    return figures, keys, block


@pytest.mark.parametrize("lesson", LESSONS)
def test_lesson_runs_quick_offline_and_writes_what_its_docstring_promises(lesson, tmp_path_factory, offline_env):
    result, outdir = quick_run(lesson, tmp_path_factory, offline_env)
    assert result.returncode == 0, result.stderr[-3000:]
    written = {p.stem for p in outdir.iterdir() if p.suffix in (".png", ".gif")}
    figures, keys, block = promised(lesson)
    assert written == figures, f"written but not listed: {written - figures}; listed, not written: {figures - written}"
    assert all((outdir / f"{f}.png").stat().st_size > 5000 for f in written if f.startswith("fig"))
    metrics = json.loads((outdir / "metrics.json").read_text(), parse_constant=lambda c: pytest.fail(c))
    assert keys <= set(metrics), f"documented but not written: {keys - set(metrics)}"
    undocumented = {k for k in set(metrics) - FRAMEWORK_KEYS if not re.search(rf"\b{re.escape(k)}\b", block)}
    assert not undocumented, f"metrics.json keys missing from the docstring: {undocumented}"
    assert metrics["provenance"]["quick"] is True and "diverged" not in metrics
    assert {"device", "threads", "seed", "torch", "numpy"} <= set(metrics["provenance"])
    assert "quick run" in result.stdout  # the printed summary says so


@pytest.mark.parametrize("lesson", LESSONS)
def test_same_seed_same_metrics_and_the_exercise_stub_runs(lesson, tmp_path_factory, offline_env, tmp_path):
    """The second run adds --exercise N (the stub runs at the very end, after every metric is written)."""
    first, first_dir = quick_run(lesson, tmp_path_factory, offline_env)
    assert first.returncode == 0
    text = (ROOT / lesson).read_text()
    stubs = sorted({int(n) for n in re.findall(r"^if run\.(?:exercise == |stub\()(\d+)\)?:", text, re.M)})
    assert stubs, f"{lesson} has no runnable exercise stub"
    exercises = re.search(r"exercises=\(([\d, ]*)\)", text)
    assert exercises and sorted(int(n) for n in exercises.group(1).replace(" ", "").split(",") if n) == stubs
    second = run_lesson(lesson, "--quick", "--exercise", str(stubs[0]), env=offline_env, outdir=tmp_path)
    assert second.returncode == 0, second.stderr[-3000:]
    assert f"xercise {stubs[0]}" in second.stdout  # the stub printed something
    metrics_1 = json.loads((first_dir / "metrics.json").read_text())
    metrics_2 = json.loads((tmp_path / "metrics.json").read_text())
    assert without_timings(metrics_1) == without_timings(metrics_2)


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
    for bad in (["--seed", "x"], ["--seed", "-1"], ["--seed", str(2**32)], ["--device", "tpu"], ["--no-such-flag"],
                ["--qui"], ["--exercise", "99"]):
        result = run_lesson(lesson, *bad, env=torchless_env, outdir=tmp_path, timeout=60)
        assert result.returncode == 2, (bad, result.stderr)
        assert "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr


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
