"""docs/derivations/ cites lessons, sections, metric names and common/ functions: each one must exist.

A derivation that points at "lesson 03 §4" or at the metric **`z_rel_error`** promises a student that
they will find it there. This test reads every derivation and checks, against the lesson sources:
- every linked or named lesson file exists (lessons marked "planned" may not exist yet);
- every section number cited for a lesson (§N) is one of that lesson's "# ## N." headings;
- every bold, backticked metric name (**`name`**) in a paragraph about a lesson is a key that the
  lesson writes to metrics.json (it appears there as the string "name");
- every backticked `common.module.attribute` can be imported.
"""

import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DERIVATIONS = sorted((ROOT / "docs" / "derivations").glob("*.md"))
LESSON_LINK = re.compile(r"\((?:\.\./)*(\d\d_[a-z_]+\.py)\)")
SECTION_AFTER_LINK = re.compile(r"\((?:\.\./)*(\d\d_[a-z_]+\.py)\)\s*,?\s*§\s*(\d+)")
SECTION_AFTER_NAME = re.compile(r"[Ll]esson (\d\d)\s*§\s*(\d+)")
METRIC = re.compile(r"\*\*`([a-z0-9_]+)`\*\*")
COMMON = re.compile(r"`(common\.[A-Za-z_][A-Za-z0-9_.]*)`")


def lesson_file(number_or_name: str) -> Path | None:
    if number_or_name.endswith(".py"):
        return ROOT / number_or_name
    matches = sorted(ROOT.glob(f"{number_or_name}_*.py"))
    return matches[0] if matches else None


def section_numbers(lesson: Path) -> set[int]:
    return {int(m) for m in re.findall(r"^# ## (\d+)\.", lesson.read_text(), flags=re.M)}


def paragraphs(text: str) -> list[str]:
    """Blank-line separated blocks, with list items split into their own paragraphs."""
    return [p for block in re.split(r"\n\s*\n", text) for p in re.split(r"\n(?=- )", block)]


@pytest.mark.parametrize("doc", DERIVATIONS, ids=lambda p: p.name)
def test_cited_lessons_and_sections_exist(doc):
    text = doc.read_text()
    for name in set(LESSON_LINK.findall(text)):
        if not (ROOT / name).exists():
            assert re.search(re.escape(name) + r"[^\n]{0,40}planned", text), f"{doc.name}: {name} does not exist"
    cited = [(lesson_file(f), int(n)) for f, n in SECTION_AFTER_LINK.findall(text) + SECTION_AFTER_NAME.findall(text)]
    assert cited or "§" not in text, f"{doc.name} uses § in a form this test does not read"
    for lesson, number in cited:
        if lesson is None or not lesson.exists():
            continue  # a planned lesson: checked above
        assert number in section_numbers(lesson), f"{doc.name} cites {lesson.name} §{number}, which has no such section"


@pytest.mark.parametrize("doc", DERIVATIONS, ids=lambda p: p.name)
def test_cited_metrics_are_written_by_the_lesson(doc):
    for paragraph in paragraphs(doc.read_text()):
        metrics = METRIC.findall(paragraph)
        lessons = [ROOT / f for f in LESSON_LINK.findall(paragraph) if (ROOT / f).exists()]
        if not metrics:
            continue
        assert lessons, f"{doc.name}: metric(s) {metrics} cited without naming the lesson that writes them"
        sources = " ".join(lesson.read_text() for lesson in lessons)
        for metric in metrics:
            assert f'"{metric}"' in sources, f"{doc.name}: no lesson in {[p.name for p in lessons]} writes {metric!r}"


@pytest.mark.parametrize("doc", DERIVATIONS, ids=lambda p: p.name)
def test_cited_common_functions_exist(doc):
    for dotted in set(COMMON.findall(doc.read_text())):
        parts = dotted.rstrip(".").split(".")
        module = importlib.import_module(".".join(parts[:2]))
        obj = module
        for attribute in parts[2:]:
            assert hasattr(obj, attribute), f"{doc.name} cites `{dotted}`, which does not exist"
            obj = getattr(obj, attribute)
