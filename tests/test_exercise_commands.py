"""Every flag written in a lesson's exercises, in its solutions and in the course guide parses as printed.

A student copies `--mix-means -1,1` or `python 06_score_matching.py --quartic-theta -4,1` from the page;
each such command is run through the lesson's own parser (the lesson's first cell up to ``parse_flags``,
with ``EBM_PARSE_ONLY`` set, so nothing is trained). A bare `--flag` mentioned without a value must at least
be one of the lesson's flags.
"""

import ast
import contextlib
import io
import os
import re
import shlex
import sys
from pathlib import Path

import pytest

from common.config import other_lessons_flags

ROOT = Path(__file__).resolve().parents[1]
LESSONS = sorted(p for p in ROOT.glob("[0-9][0-9]_*.py"))
COMMON_FLAGS = {"--quick", "--seed", "--device", "--outdir", "--show", "--threads", "--exercise", "--help"}
SPAN = re.compile(r"`([^`\n]+)`")
PLACEHOLDER = re.compile(r"[<>{}…]|\.\.\.|\bN\b|\bDIR\b|\bX\b")


def parser_prefix(lesson: Path):
    """The lesson's source up to and including its ``parse_flags`` call, compiled once."""
    source = lesson.read_text(encoding="utf-8")
    call = next(node for node in ast.parse(source).body if "parse_flags(" in ast.get_source_segment(source, node))
    prefix = "\n".join(source.splitlines()[: call.end_lineno])
    return compile(prefix, str(lesson), "exec")


def parse(lesson: Path, code, args: list[str]) -> tuple[int, str]:
    """Run the lesson's flag parsing on ``args`` in this process; (exit status, what it wrote to stderr)."""
    err = io.StringIO()
    old_argv, old_env = sys.argv, os.environ.get("EBM_PARSE_ONLY")
    sys.argv, os.environ["EBM_PARSE_ONLY"] = [lesson.name, *args], "1"
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            exec(code, {"__name__": "__lesson__", "__file__": str(lesson)})
        status = 0
    except SystemExit as stop:
        status = stop.code or 0
    finally:
        sys.argv = old_argv
        os.environ.pop("EBM_PARSE_ONLY") if old_env is None else os.environ.update(EBM_PARSE_ONLY=old_env)
    return status, err.getvalue()


def written_commands(lesson: Path) -> list[list[str]]:
    """Argument lists for this lesson, from its exercises, its solutions file and the course guide."""
    text = lesson.read_text(encoding="utf-8")
    texts = [text[text.find("## Exercises"):]] if "## Exercises" in text else []
    texts += [p.read_text(encoding="utf-8") for p in (ROOT / "docs" / "solutions").glob(f"{lesson.stem[:2]}_*.md")]
    texts.append((ROOT / "docs" / "course_guide.md").read_text(encoding="utf-8"))
    own_section = f"### {lesson.stem[:2]} "
    commands = []
    for i, body in enumerate(texts):
        if i == len(texts) - 1:  # the guide: only this lesson's section and commands naming this lesson
            body = "\n".join(s for s in re.split(r"(?=^### )", body, flags=re.M) if s.startswith(own_section))
        for span in SPAN.findall(body):
            span = span.split("#")[0].strip()
            if span.startswith("python "):
                words = shlex.split(span)
                if len(words) < 2 or words[1] != lesson.name:
                    continue
                words = words[2:]
            elif span.startswith("--"):
                words = shlex.split(span)
            else:
                continue
            if words and not PLACEHOLDER.search(span):
                commands.append(words)
    return commands


@pytest.mark.parametrize("lesson", LESSONS, ids=lambda p: p.stem[:2])
def test_every_written_flag_parses(lesson):
    code = parser_prefix(lesson)
    own = other_lessons_flags(None)[lesson.name] | COMMON_FLAGS
    commands = written_commands(lesson)
    assert commands, f"{lesson.name}: no flags found in its exercises or solutions"
    failures = []
    for words in commands:
        if len(words) == 1 and words[0].startswith("--") and "=" not in words[0]:
            is_switch = words[0] in COMMON_FLAGS or words[0].startswith("--no-")
            if words[0] not in own and not is_switch:
                failures.append(f"{words[0]}: not a flag of {lesson.name}")
            continue  # a flag named in prose, without its value
        status, message = parse(lesson, code, words)
        if status != 0:
            failures.append(f"{' '.join(words)} -> {message.strip()}")
    assert not failures, "\n".join(failures)


def test_a_negative_list_parses_with_or_without_equals():
    lesson = ROOT / "06_score_matching.py"
    code = parser_prefix(lesson)
    assert parse(lesson, code, ["--quartic-theta", "-4,1"])[0] == 0
    assert parse(lesson, code, ["--quartic-theta=-4,1"])[0] == 0
