"""Every package the code imports is declared: requirements.txt for the lessons and common/, and
requirements-dev.txt (which includes it) for tests and scripts. CI installs from these files alone."""

import ast
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# import name -> package
DISTRIBUTION = {"PIL": "pillow", "sklearn": "scikit-learn", "IPython": "ipython", "markdown_it": "markdown-it-py",
                "mdit_py_plugins": "mdit-py-plugins", "jupyter_server_mathjax": "jupyter-server-mathjax"}
LOCAL = {"common", "tests", "test_exercise_commands"}
NOTEBOOK_ONLY = {"ipython"}  # imported by common.lesson only inside a running Jupyter kernel, which brings it


def imported(paths) -> set[str]:
    names = set()
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names.add(node.module.split(".")[0])
    return {n for n in names if n not in sys.stdlib_module_names and n not in LOCAL}


def declared(file: str) -> set[str]:
    names = set()
    for line in (ROOT / file).read_text().splitlines():
        line = line.split("#")[0].strip()
        if line.startswith("-r "):
            names |= declared(line[3:].strip())
        elif line:
            names.add(re.split(r"[<>=!~\[ ;]", line)[0].lower())
    return names


def test_lessons_and_common_import_only_what_requirements_declare():
    code = [*ROOT.glob("[0-9][0-9]_*.py"), *(ROOT / "common").glob("*.py")]
    missing = {DISTRIBUTION.get(n, n).lower() for n in imported(code)} - declared("requirements.txt") - NOTEBOOK_ONLY
    assert not missing, f"imported but not in requirements.txt: {sorted(missing)}"


def test_tests_and_scripts_import_only_what_dev_requirements_declare():
    code = [*(ROOT / "tests").glob("*.py"), *(ROOT / "scripts").glob("*.py")]
    missing = {DISTRIBUTION.get(n, n).lower() for n in imported(code)} - declared("requirements-dev.txt")
    assert not missing, f"imported but not in requirements-dev.txt: {sorted(missing)}"
