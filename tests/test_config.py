"""The lesson contract: flags from the Config dataclass, refusal of bad values, the divergence guard.

Every lesson's ``Config`` is read from its source (without running the lesson) and each of its
flags is fed a non-number, NaN, inf and a value outside its declared range: all must exit with
status 2 and a one-line message.
"""

import ast
import dataclasses
import json
import math
import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

import common.config as config_module
from common.config import (
    choice,
    count,
    field_comments,
    optional,
    parse_config,
    parse_flags,
    positive,
    probability,
    run_folder_name,
    validate,
)

ROOT = Path(__file__).resolve().parents[1]
LESSONS = sorted(ROOT.glob("[0-9][0-9]_*.py"))


@dataclass
class Demo:
    step_size: float = positive(0.01)  # Langevin step h
    n_steps: int = count(100)  # chain length K
                               # continues on the next line
    # -- a section header, not a continuation
    keep: float = probability(0.5)  # fraction kept
    ks: tuple[int, ...] = count((1, 5))  # CD steps
    dataset: str = choice("auto", ("auto", "digits"))  # which data
    verbose: bool = False  # print more
    rules: tuple[str, ...] = choice(("hebbian",), ("hebbian", "storkey"))  # storage rules to compare
    max_train: int | None = optional(None, count(1))  # images kept; none = all


def parse(argv, quick=None):
    return parse_config(Demo, argv, quick)


def test_flags_come_from_fields_and_quick_overrides_yield_to_explicit_flags():
    cfg, common = parse(["--step-size", "0.5", "--ks", "1,2,3", "--verbose"])
    assert (cfg.step_size, cfg.ks, cfg.verbose, common.seed, common.quick) == (0.5, (1, 2, 3), True, 0, False)
    cfg, common = parse(["--quick", "--n-steps", "7"], quick={"n_steps": 3, "keep": 0.1})
    assert (cfg.n_steps, cfg.keep, common.quick) == (7, 0.1, True)


def test_comments_become_help_text():
    comments = field_comments(Demo)
    assert comments["step_size"] == "Langevin step h"
    assert comments["n_steps"] == "chain length K; continues on the next line"
    assert "verbose" in comments


@pytest.mark.parametrize(
    "argv",
    [
        ["--step-size", "0"], ["--step-size", "-1"], ["--step-size", "nan"], ["--step-size", "inf"],
        ["--step-size", "abc"], ["--n-steps", "0"], ["--n-steps", "2.5"], ["--keep", "1.5"],
        ["--ks", "1,0"], ["--ks", ","], ["--dataset", "mnist"], ["--verbose", "maybe"],
        ["--seed", "x"], ["--device", "tpu"], ["--threads", "0"], ["--threads", "1.5"],
        ["--unknown", "1"], ["--step-size"], ["--seed", "-1"], ["--seed", str(2**32)], ["--qui"], ["--step"],
        ["--verbose", "true"], ["--rules", "hebbian,nope"], ["--max-train", "0"], ["--max-train", "x"],
    ],
)
def test_bad_values_exit_2_with_one_line(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "error:" in err


def test_validate_names_the_flag():
    with pytest.raises(ValueError, match="--step-size must be > 0"):
        validate(Demo(step_size=-1.0))


def lesson_config_class(path: Path):
    """The lesson's Config class and its source text, from the file alone (the lesson is not run)."""
    tree = ast.parse(path.read_text())
    node = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Config")
    namespace = {name: getattr(config_module, name) for name in dir(config_module)}
    namespace.update(dataclass=dataclass, np=np, math=math)
    for statement in tree.body[: tree.body.index(node)]:  # constants the Config may use
        if isinstance(statement, ast.Assign):
            try:
                exec(compile(ast.Module(body=[statement], type_ignores=[]), str(path), "exec"), namespace)  # noqa: S102
            except Exception:  # an assignment that needs the lesson's imports: not a Config constant
                pass
    exec(compile(ast.Module(body=[node], type_ignores=[]), str(path), "exec"), namespace)  # noqa: S102
    lines = path.read_text().splitlines()[node.lineno - 1 : node.end_lineno]  # whole lines: keep comments
    return namespace["Config"], "\n".join(lines)


def bad_values_for(field) -> list[str]:
    hint = field.type if isinstance(field.type, str) else field.type.__name__
    bad = []
    if "float" in hint or "int" in hint:
        bad += ["abc", "nan", "inf"]
        valid = field.metadata.get("range")
        if valid is not None and valid.low is not None:
            bad.append(str(valid.low - 1))
        if valid is not None and valid.high is not None:
            bad.append(str(valid.high + 1))
    if field.metadata.get("choices"):
        bad.append("not-a-choice")
    if "bool" in hint:
        bad.append("maybe")
    return bad


@pytest.mark.parametrize("lesson", LESSONS, ids=lambda p: p.stem)
def test_every_lesson_flag_refuses_bad_values(lesson, capsys):
    config_cls, source = lesson_config_class(lesson)
    fields = dataclasses.fields(config_cls)
    assert fields, f"{lesson.name}: empty Config"
    comments = field_comments(config_cls, source)
    for field in fields:
        assert comments.get(field.name), f"{lesson.name}: field {field.name} has no comment (its --help text)"
        numeric = any(t in str(field.type) for t in ("float", "int"))
        if numeric and "bool" not in str(field.type):
            assert field.metadata.get("range") is not None, f"{lesson.name}: {field.name} declares no valid range"
        flag = "--" + field.name.replace("_", "-")
        for value in bad_values_for(field):
            with pytest.raises(SystemExit) as exit_info:
                parse_config(config_cls, [flag, value])
            assert exit_info.value.code == 2, (lesson.name, flag, value)
            assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_divergence_guard_exits_1_names_the_flag_and_keeps_outputs(tmp_path):
    script = tmp_path / "diverging_lesson.py"
    script.write_text(textwrap.dedent(
        f"""
        import sys; sys.path.insert(0, {str(ROOT)!r})
        from dataclasses import dataclass
        from common.config import parse_flags, positive
        from common.lesson import start_lesson
        from common import plotting

        @dataclass
        class Config:
            lr: float = positive(10.0)  # learning rate

        cfg, flags = parse_flags(Config, "99_diverging", None)
        run = start_lesson(cfg, flags)
        fig, ax = plotting.figure()
        ax.plot([0, 1])
        run.savefig(fig, "fig01_before")
        run.metrics["loss_before"] = 1.0
        run.check_finite(float("nan"), step=12, what="loss", field="lr")
        print("not reached")
        """
    ))
    env = dict(os.environ, MPLBACKEND="Agg")
    result = subprocess.run([sys.executable, str(script), "--outdir", str(tmp_path / "out")],
                            capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr and "not reached" not in result.stdout
    assert "step 12" in result.stderr and "lower --lr" in result.stderr
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["loss_before"] == 1.0 and "lower --lr" in metrics["diverged"]
    assert (tmp_path / "out" / "fig01_before.png").exists()


def test_switches_tuples_of_choices_and_optional_fields():
    cfg, _ = parse(["--no-verbose", "--rules", "storkey,hebbian", "--max-train", "7"])
    assert (cfg.verbose, cfg.rules, cfg.max_train) == (False, ("storkey", "hebbian"), 7)
    cfg, _ = parse(["--verbose", "--max-train", "none"])
    assert cfg.verbose is True and cfg.max_train is None


def test_check_hook_and_exercise_list_refuse_in_one_line(capsys):
    def check(cfg):
        if cfg.n_steps < 10 * cfg.ks[0]:
            raise ValueError("--n-steps must be at least 10 times the first --ks")

    for argv, message in ((["--n-steps", "5"], "--n-steps must be at least"),
                          (["--exercise", "2"], "exercises with one: 1, 3")):
        with pytest.raises(SystemExit) as exit_info:
            parse_flags(Demo, "99_demo", None, check=check, exercises=(1, 3), argv=argv)
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and len(err.strip().splitlines()) == 1 and message in err
    cfg, flags = parse_flags(Demo, "99_demo", None, check=check, exercises=(1, 3), argv=["--exercise", "3"])
    assert flags.exercise == 3


def test_run_folder_names_what_changed(monkeypatch):
    monkeypatch.setattr(config_module, "running_in_notebook", lambda: False)
    folder = {}
    for argv in ([], ["--quick"], ["--step-size", "0.05"], ["--step-size", "0.01"], ["--quick", "--seed", "3"],
                 ["--ks", "2,3"]):
        _, flags = parse_flags(Demo, "99_demo", None, quick={"n_steps": 3}, argv=argv)
        folder[" ".join(argv)] = run_folder_name(flags)
    assert folder == {"": None, "--quick": "quick", "--step-size 0.05": "step-size=0.05",
                      "--step-size 0.01": None, "--quick --seed 3": "quick_seed=3", "--ks 2,3": "ks=2,3"}


def test_threads_reach_every_blas_loaded_later(monkeypatch):
    """--threads is the one thread knob: BLAS/OpenMP pools loaded after the flags (scipy's, scikit-learn's)
    read these variables when they load."""
    from common.config import parse_flags

    @dataclass
    class Tiny:
        lr: float = 0.1

    for variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.setenv(variable, "8")
    parse_flags(Tiny, "99_tiny", argv=["--threads", "2"])
    assert [os.environ[v] for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")] == ["2"] * 3


def test_section_and_exercise_choose_what_runs(capsys):
    from dataclasses import dataclass

    from common.config import parse_flags, run_folder_name

    @dataclass
    class Tiny:
        lr: float = 0.1

    sections = {1: "warm-up", 2: "training", 3: "sampling"}
    exercises = {1: (2,), 4: (1, 3)}
    _, flags = parse_flags(Tiny, "99_tiny", sections=sections, exercises=exercises, argv=["--section", "2,3"])
    assert flags.section == (2, 3) and run_folder_name(flags) == "section=2,3"
    _, flags = parse_flags(Tiny, "99_tiny", sections=sections, exercises=exercises, argv=["--exercise", "4"])
    assert flags.section == (1, 3) and run_folder_name(flags) == "exercise=4"
    _, flags = parse_flags(Tiny, "99_tiny", sections=sections, exercises=exercises, argv=[])
    assert flags.section is None and run_folder_name(flags) is None
    with pytest.raises(SystemExit) as stop:
        parse_flags(Tiny, "99_tiny", sections=sections, exercises=exercises, argv=["--section", "7"])
    assert stop.value.code == 2
    assert "sections are 1, 2, 3" in capsys.readouterr().err
