"""Progress bars degrade to a few plain lines when the output is not a terminal (logs, CI, pipes)."""

import common.progress as progress_module
from common.progress import PlainProgress, progress


def test_not_a_terminal_gives_plain_lines_at_quarters_only_for_slow_loops(capsys, monkeypatch):
    monkeypatch.setattr(progress_module, "bars_wanted", lambda: False)
    monkeypatch.setattr(progress_module, "QUIET_SECONDS", 0.0)
    bar = progress(range(100), desc="MLE")
    assert isinstance(bar, PlainProgress)
    for i in bar:
        if i == 10:
            bar.set_postfix(loss="0.5")
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert [line.split()[1] for line in lines] == ["25%", "50%", "75%", "100%"]
    assert "\r" not in err and "loss=0.5" in lines[-1] and lines[-1].startswith("  [MLE] 100% (100/100)")


def test_a_fast_loop_prints_nothing(capsys, monkeypatch):
    monkeypatch.setattr(progress_module, "bars_wanted", lambda: False)
    assert sum(progress(range(1000), desc="fast")) == 499500
    assert capsys.readouterr().err == ""


def test_a_terminal_gets_tqdm(monkeypatch):
    monkeypatch.setattr(progress_module, "bars_wanted", lambda: True)
    bar = progress(range(3), desc="x", disable=True)
    assert type(bar).__module__.startswith("tqdm") and list(bar) == [0, 1, 2]
