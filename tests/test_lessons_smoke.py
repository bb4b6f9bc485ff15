"""Every lesson runs end to end with --quick: exit 0, figures written, metrics.json valid.

Also checks the contract around the run: bad flag values exit 2 with a one-line message and no
traceback, and the same seed gives the same metrics.json.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LESSONS = sorted(p.name for p in ROOT.glob("[0-9][0-9]_*.py"))


def run_lesson(lesson, *args, outdir, timeout=300):
    env = dict(os.environ, MPLBACKEND="Agg", EBM_DATA_DIR=str(outdir / "no_data"))
    return subprocess.run(
        [sys.executable, str(ROOT / lesson), "--outdir", str(outdir), *args],
        capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=env,
    )


_FIRST_RUNS = {}


def quick_run(lesson, tmp_path_factory):
    """Run a lesson with --quick once per test session; later tests reuse the result."""
    if lesson not in _FIRST_RUNS:
        outdir = tmp_path_factory.mktemp(lesson[:2])
        _FIRST_RUNS[lesson] = (run_lesson(lesson, "--quick", outdir=outdir), outdir)
    return _FIRST_RUNS[lesson]


def without_timings(metrics):
    """Metrics minus wall-clock measurements, which legitimately differ between runs."""
    if isinstance(metrics, dict):
        return {k: without_timings(v) for k, v in metrics.items() if "seconds" not in k and "time" not in k}
    return metrics


@pytest.mark.parametrize("lesson", LESSONS)
def test_lesson_runs_quick(lesson, tmp_path_factory):
    result, tmp_path = quick_run(lesson, tmp_path_factory)
    assert result.returncode == 0, result.stderr[-3000:]
    figures = sorted(tmp_path.glob("fig[0-9][0-9]_*.png"))
    assert len(figures) >= 5, f"only {len(figures)} figures: {figures}"
    assert all(f.stat().st_size > 5000 for f in figures), "an empty-looking figure"
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["quick"] is True and "diverged" not in metrics


@pytest.mark.parametrize("lesson", LESSONS)
def test_same_seed_gives_the_same_metrics(lesson, tmp_path_factory, tmp_path):
    first, first_dir = quick_run(lesson, tmp_path_factory)
    assert first.returncode == 0
    second = run_lesson(lesson, "--quick", outdir=tmp_path)
    assert second.returncode == 0, second.stderr[-3000:]
    metrics_1 = json.loads((first_dir / "metrics.json").read_text())
    metrics_2 = json.loads((tmp_path / "metrics.json").read_text())
    assert without_timings(metrics_1) == without_timings(metrics_2)


@pytest.mark.parametrize("lesson", LESSONS)
def test_lesson_rejects_bad_values(lesson, tmp_path):
    for bad in (["--seed", "x"], ["--device", "tpu"], ["--no-such-flag"]):
        result = run_lesson(lesson, *bad, outdir=tmp_path, timeout=60)
        assert result.returncode == 2, (bad, result.stderr)
        assert "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr


@pytest.mark.parametrize("lesson", LESSONS)
def test_lesson_has_contract_parts(lesson):
    text = (ROOT / lesson).read_text()
    assert "# %%" in text and "@dataclass" in text and "start_lesson(" in text
    exercises = [line for line in text.splitlines() if line.lstrip("#* ").lower().startswith("exercise ")]
    assert len(exercises) >= 5, f"{lesson} has {len(exercises)} exercises"
    assert "import " + lesson[:2] not in text  # a lesson never imports another lesson
