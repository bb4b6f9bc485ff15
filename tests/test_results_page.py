"""The results page generator (scripts/make_results.py): claims with ✓/✗, key figures, a rerun of one lesson
keeps the others, a failing or timed-out lesson exits non-zero and leaves nothing stale in its section.

The lesson runs are faked (a function that writes what a lesson writes), except for one real time limit and
one real --quick run of lesson 01.
"""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def make_results():
    spec = importlib.util.spec_from_file_location("make_results", ROOT / "scripts" / "make_results.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fake_lesson_run(fail=()):
    """A stand-in for timed_run: writes two figures and metrics.json with one holding and one failing claim."""
    from PIL import Image

    def run(lesson, outdir, quick, limit_s, extra=()):
        outdir.mkdir(parents=True, exist_ok=True)
        if lesson[:2] in fail:
            return {"wall_s": 1.0, "cpu_s": 1.0, "peak_mib": 10, "exit": 1, "stderr": "boom: training diverged"}
        for name in ("fig01_a.png", "fig02_b.png"):
            Image.new("RGB", (1200, 600), "white").save(outdir / name)
        claims = {
            "good": {"sentence": f"{lesson} good", "measured": 1.0, "op": "<", "reference": 2.0,
                     "reference_label": "floor", "tolerance": 0.0, "holds": True, "meaningful": not quick},
            "bad": {"sentence": f"{lesson} bad", "measured": {"mean": 3.0, "se": 0.1, "n_seeds": 3,
                                                              "values": [2.9, 3.0, 3.1]},
                    "op": "ratio<", "reference": 1.0, "reference_label": "", "tolerance": 2.0, "holds": False,
                    "meaningful": not quick},
        }
        metrics = {"provenance": {"seed": 0, "threads": 1, "quick": quick}, "claims": claims,
                   "key_figures": ["fig02_b.png"]}
        (outdir / "metrics.json").write_text(json.dumps(metrics))
        return {"wall_s": 2.0, "cpu_s": 1.5, "peak_mib": 100, "exit": 0, "stderr": ""}

    return run


def paths(tmp_path):
    return ["--outputs", str(tmp_path / "out"), "--results", str(tmp_path / "docs" / "results.md")]


def test_claims_marks_and_key_figures(make_results, tmp_path, monkeypatch):
    monkeypatch.setattr(make_results, "timed_run", fake_lesson_run())
    assert make_results.main(["--lessons", "01", "04", *paths(tmp_path)]) == 0
    page = (tmp_path / "docs" / "results.md").read_text()
    assert "| ✓ | 01_ebm_foundations good | 1 | < 2 (floor) |" in page
    assert "| ✗ | 01_ebm_foundations bad | 3 ± 0.1 (n = 3) | < 2 × 1 |" in page
    assert "**Claims: 1 of 2 hold.**" in page and "**2 of 4 claims hold**" in page
    # the key figure only, copied at readable width
    assert "gallery/01_fig02_b.png" in page and "01_fig01_a.png" not in page
    from PIL import Image
    assert Image.open(tmp_path / "docs" / "gallery" / "01_fig02_b.png").width == make_results.FIGURE_WIDTH
    assert "Produced " in page and "--lessons 01 04" in page


def test_rerunning_one_lesson_keeps_the_others(make_results, tmp_path, monkeypatch):
    monkeypatch.setattr(make_results, "timed_run", fake_lesson_run())
    make_results.main(["--lessons", "01", "04", *paths(tmp_path)])
    make_results.main(["--lessons", "04", *paths(tmp_path)])
    page = (tmp_path / "docs" / "results.md").read_text()
    assert "01_ebm_foundations good" in page and "04_restricted_boltzmann_machines good" in page
    state = json.loads((tmp_path / "docs" / "results.json").read_text())
    assert "--lessons 01 04" in state["01_ebm_foundations"]["command"]
    assert "--lessons 04" in state["04_restricted_boltzmann_machines"]["command"]


def test_a_failing_lesson_exits_non_zero_and_leaves_nothing_stale(make_results, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(make_results, "timed_run", fake_lesson_run())
    make_results.main(["--lessons", "02", *paths(tmp_path)])
    gallery = tmp_path / "docs" / "gallery"
    assert list(gallery.glob("02_*"))
    monkeypatch.setattr(make_results, "timed_run", fake_lesson_run(fail=("02",)))
    assert make_results.main(["--lessons", "02", *paths(tmp_path)]) == 1
    assert "FAILED: 02_hopfield_networks" in capsys.readouterr().err
    page = (tmp_path / "docs" / "results.md").read_text()
    section = page.split("## 02_hopfield_networks")[1].split("\n## ")[0]
    assert "run failed" in page and "boom: training diverged" in section
    assert "02_hopfield_networks good" not in section and "gallery/02_" not in section
    assert not list(gallery.glob("02_*"))


def test_a_run_past_its_time_limit_is_stopped_and_reported(make_results, tmp_path, monkeypatch):
    monkeypatch.setattr(make_results, "lesson_command",
                        lambda lesson, outdir, quick, extra=(): [sys.executable, "-c", "import time; time.sleep(30)"])
    timing = make_results.timed_run("01_ebm_foundations", tmp_path / "x", quick=True, limit_s=1)
    assert timing["exit"] == "timeout" and timing["wall_s"] < 10


def test_stale_outputs_are_cleared_before_a_run(make_results, tmp_path):
    (tmp_path / "fig01_old.png").write_text("x")
    (tmp_path / "metrics.json").write_text("{}")
    (tmp_path / "notes.txt").write_text("kept")
    make_results.clear_outputs(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_quick_runs_repeat_for_a_median_and_extra_runs_get_their_own_row(make_results, tmp_path, monkeypatch):
    cpu = iter([3.0, 1.0, 2.0])
    fake = fake_lesson_run()

    def run(lesson, outdir, quick, limit_s, extra=()):
        timing = fake(lesson, outdir, quick, limit_s)
        return {**timing, "cpu_s": next(cpu)} if quick else {**timing, "cpu_s": 50.0 if extra else 9.0}

    monkeypatch.setattr(make_results, "timed_run", run)
    assert make_results.main(["--lessons", "04", "--quick-repeats", "3", "--extra-run", "--dataset mnist --lecture",
                              *paths(tmp_path)]) == 0
    state = json.loads((tmp_path / "docs" / "results.json").read_text())
    timings = state["04_restricted_boltzmann_machines"]["timings"]
    assert timings["--quick"]["cpu_s"] == 2.0 and timings["--quick"]["cpu_runs"] == [3.0, 1.0, 2.0]
    assert timings["--dataset mnist --lecture"]["cpu_s"] == 50.0 and timings["default"]["cpu_s"] == 9.0
    page = (tmp_path / "docs" / "results.md").read_text()
    assert "| --dataset mnist --lecture | 2.0 | 50.0 |" in page and "2.0 (median of 3.0, 1.0, 2.0)" in page


def test_extra_only_adds_timings_and_keeps_the_last_full_run(make_results, tmp_path, monkeypatch):
    monkeypatch.setattr(make_results, "timed_run", fake_lesson_run())
    assert make_results.main(["--lessons", "07", *paths(tmp_path)]) == 0
    before = json.loads((tmp_path / "docs" / "results.json").read_text())["07_neural_ebms"]
    assert make_results.main(["--lessons", "07", "--extra-only", "--extra-run", "--section 2", *paths(tmp_path)]) == 0
    after = json.loads((tmp_path / "docs" / "results.json").read_text())["07_neural_ebms"]
    assert after["claims"] == before["claims"] and after["timings"]["default"] == before["timings"]["default"]
    assert "--section 2" in after["timings"] and "| --section 2 |" in (tmp_path / "docs" / "results.md").read_text()
