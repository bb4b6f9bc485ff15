"""Every slip a newcomer makes is answered in one line: a mistyped flag gets a suggestion, a Config field typed
with underscores its flag, another lesson's flag the lesson it belongs to; an output folder that is the
filesystem root or someone else's is refused; --show without a display says it only saves; a missing
package names the set-up command; the console states the settings in one line."""

import sys
from argparse import Namespace
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_exercise_commands import ROOT, parse, parser_prefix  # noqa: E402

from common import config, lesson  # noqa: E402

LESSON_07 = ROOT / "07_neural_ebms.py"


@pytest.fixture(scope="module")
def code_07():
    return parser_prefix(LESSON_07)


@pytest.mark.parametrize("typed, answer", [
    (["--qiuck"], "unknown flag --qiuck: did you mean --quick?"),
    (["--toy_step_size", "0.1"], "flags use dashes, not underscores; did you mean --toy-step-size?"),
    (["--mix-means=-1,1"], "it is a flag of 08_cooperative_training.py, not of 07_neural_ebms.py"),
    (["--toy-step-szie", "0.1"], "did you mean --toy-step-size?"),
])
def test_a_mistyped_flag_gets_one_helpful_line(code_07, typed, answer):
    status, message = parse(LESSON_07, code_07, typed)
    assert status == 2 and answer in message and message.count("\n") == 1


def test_a_root_or_a_foreign_folder_is_refused_as_outdir(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        lesson.make_outdir("01_x", Path("/"))
    assert stop.value.code == 2 and "root of the filesystem" in capsys.readouterr().err
    (tmp_path / "thesis.tex").write_text("mine")
    (tmp_path / "fig01_old.png").write_text("the course's")
    with pytest.raises(SystemExit):
        lesson.make_outdir("01_x", tmp_path)
    assert "holds files the course did not write (thesis.tex)" in capsys.readouterr().err
    (tmp_path / "thesis.tex").unlink()
    lesson.make_outdir("01_x", tmp_path)  # only course files (and sub-folders): accepted


def test_show_without_a_display_is_detected(monkeypatch):
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    assert not lesson.has_display()
    monkeypatch.setenv("DISPLAY", ":0")
    assert lesson.has_display()


def test_a_missing_package_names_the_set_up_command(monkeypatch, capsys):
    monkeypatch.setattr(config, "REQUIRED_PACKAGES", {"no_such_package_here": "nosuch"})
    with pytest.raises(SystemExit) as stop:
        config.require_packages("01_x.py")
    message = capsys.readouterr().err
    assert stop.value.code == 2 and "lacks nosuch" in message and "setup.sh" in message


def test_settings_are_one_line_of_what_changed():
    flags = Namespace(quick=True, changed={"step_size": 0.05, "ks": (1, 5)})
    line = lesson.changed_flags_line(None, flags)
    assert line.startswith("settings: --quick --ks 1,5 --step-size 0.05") and "\n" not in line
    assert "the defaults" in lesson.changed_flags_line(None, Namespace(quick=False, changed={}))


def test_image_grids_work_without_torchvision(request, capsys):
    """A broken torchvision (built for another torch) must not stop a digits lesson: the fallback grid has
    torchvision's layout, pixel for pixel."""
    import torch
    from torchvision.utils import make_grid as torchvision_grid

    from common import plotting

    batch = torch.rand(23, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    reference = torchvision_grid(batch, nrow=10, padding=1, pad_value=0.5)
    request.getfixturevalue("broken_torchvision")  # from here on, torchvision does not import
    fallback = plotting.make_grid(batch, nrow=10, padding=1, pad_value=0.5)
    assert torch.equal(fallback[0], reference[0])
    assert "only --dataset mnist needs torchvision" in capsys.readouterr().out
