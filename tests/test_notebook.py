"""--help in a real Jupyter kernel (jupytext + nbclient): the notebook route keeps the flag explanations.
Lesson 01 executed as a notebook is tested in tests/test_site.py (the same run builds its web page).

The notebook tools are test dependencies (requirements-dev.txt), not student ones.
"""

from pathlib import Path

import pytest

jupytext = pytest.importorskip("jupytext")
nbclient = pytest.importorskip("nbclient")

ROOT = Path(__file__).resolve().parents[1]
CELLS_OF_LAST_RUN: list = []


def execute(lesson: str, ebm_args: str, monkeypatch, allow_errors=False):
    notebook = jupytext.read(ROOT / lesson)
    monkeypatch.setenv("EBM_ARGS", ebm_args)  # the kernel inherits the environment
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    client = nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3", allow_errors=allow_errors,
                                     resources={"metadata": {"path": str(ROOT)}})  # the notebook sits at the root
    global CELLS_OF_LAST_RUN
    CELLS_OF_LAST_RUN = [cell for cell in notebook.cells if cell.cell_type == "code"]
    client.execute()
    return CELLS_OF_LAST_RUN


def outputs(cells, kind):
    return [o for cell in cells for o in cell.get("outputs", []) if o.get("output_type") == kind]


@pytest.mark.lesson
def test_help_in_a_kernel_keeps_the_per_flag_explanations_and_stops_cleanly(monkeypatch):
    with pytest.raises(nbclient.exceptions.CellExecutionError):  # "run all" stops at the flags cell
        execute("01_ebm_foundations.py", "--help", monkeypatch)
    cells = CELLS_OF_LAST_RUN
    text = "".join(o.get("text", "") for o in outputs(cells, "stream"))
    assert "--temperature" in text and "T in p = exp(-E/T)/Z" in text  # the Config comment, not just a default
    (error,) = outputs(cells, "error")
    assert error["ename"] == "LessonStopped" and len(error["traceback"]) == 1  # one line, no traceback
    assert "UserWarning" not in text
