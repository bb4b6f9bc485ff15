"""The rendered course as a reader sees it, and lesson 01 as a student opens it in Jupyter.

One build of lesson 01's page from a --quick run executed in a real Jupyter kernel (the notebook route:
jupytext + nbclient) serves every test here: the notebook's outputs, the page's parts, and the check in
headless Chromium (scripts/check_site.py), which must also catch a planted broken image, raw TeX and a
network request -- a check that cannot fail is not a check.
"""

import importlib.util
import re
import shutil
import sys
from pathlib import Path

import pytest

pytest.importorskip("nbclient")
pytest.importorskip("nbconvert")
pytestmark = [pytest.mark.lesson, pytest.mark.xdist_group("site")]  # one worker builds the site once

ROOT = Path(__file__).resolve().parents[1]
LESSON = "01_ebm_foundations"


def load_script(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    build_site = load_script("build_site")
    site, outputs = tmp_path_factory.mktemp("site"), tmp_path_factory.mktemp("outputs")
    status = build_site.main(["--quick", "--lessons", "01", "--site", str(site), "--outputs", str(outputs)])
    assert status == 0
    import nbformat

    notebook = nbformat.read(outputs / "site" / f"{LESSON}-quick.ipynb", as_version=4)
    return site, outputs, notebook


def outputs_of(notebook, kind):
    return [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.get("outputs", [])
            if o.get("output_type") == kind]


def test_lesson_01_runs_as_a_notebook_with_its_figures_inline(built):
    _, outputs, notebook = built
    assert not outputs_of(notebook, "error")
    echoes = [o["data"].get("text/plain", "") for o in outputs_of(notebook, "execute_result")]
    assert not any("PosixPath" in text for text in echoes), echoes  # no path echoes after figure cells
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert not code[0].get("outputs"), "the first cell echoes the docstring"
    shown = [o for o in outputs_of(notebook, "display_data") if "image/png" in o["data"]]
    assert len(shown) >= 5 and all(o["metadata"]["ebm_figure"].startswith("fig") for o in shown)
    assert any("image/gif" in o["data"] for o in outputs_of(notebook, "display_data"))  # and the animation
    assert (outputs / LESSON / "quick" / "metrics.json").exists()


def test_the_page_has_its_parts(built):
    site, _, _ = built
    page = (site / f"{LESSON}.html").read_text(encoding="utf-8")
    assert "Built from a --quick run" in page and 'class="ebm-toc"' in page and "Claims this run checks" in page
    assert "✓" in page  # claim verdicts are marked
    assert f'href="downloads/{LESSON}.py"' in page and (site / "downloads" / f"{LESSON}.ipynb").exists()
    assert (site / f"{LESSON}_files" / "fig01_boltzmann_1d.png").exists()
    assert not re.search(r'<(script|link)[^>]+(src|href)="(https?:)?//', page)  # no remote script or style
    index = (site / "index.html").read_text(encoding="utf-8")
    assert f'href="{LESSON}.html"' in index and "docs/course_guide.html" in index
    assert (site / "docs" / "derivations" / "mle_gradient.html").exists()


def chromium_or_skip():
    pytest.importorskip("playwright")
    if shutil.which("chromium") is None:
        pytest.skip("no chromium (Debian: apt-get install chromium); .ci/run installs it where it can")


def test_pages_pass_the_browser_check(built, tmp_path):
    chromium_or_skip()
    check_site = load_script("check_site")
    site, _, _ = built
    pages = [f"{LESSON}.html", "index.html", "docs/notation.html", "docs/derivations/mle_gradient.html"]
    problems = check_site.check_site(site, pages, screenshots=tmp_path)
    assert not problems, "\n".join(problems)
    assert (tmp_path / f"{LESSON}.png").stat().st_size > 20_000  # a screenshot with something on it


def test_the_browser_check_catches_a_broken_page(built, tmp_path):
    chromium_or_skip()
    check_site = load_script("check_site")
    site, _, _ = built
    page = (site / f"{LESSON}.html").read_text(encoding="utf-8")
    broken = page.replace(f'src="{LESSON}_files/fig01_boltzmann_1d.png"', f'src="{LESSON}_files/no_such_figure.png"')
    planted = '<div class="jp-RenderedMarkdown tex2jax_ignore"><p>raw $x_1^2$ here</p></div>'  # MathJax skips it
    broken = broken.replace("<main>", f'<main>{planted}'
                            '<img src="https://example.org/remote.png" alt="remote">', 1)
    (site / "broken.html").write_text(broken, encoding="utf-8")
    try:
        problems = "\n".join(check_site.check_site(site, ["broken.html"]))
    finally:
        (site / "broken.html").unlink()
    assert "image did not load: " + f"{LESSON}_files/no_such_figure.png" in problems
    assert "network request: https://example.org/remote.png" in problems
    assert "untypeset maths" in problems


def test_results_page_from_the_same_real_quick_run(built, tmp_path):
    """scripts/make_results.py builds lesson 01's section from the run this module already made (--no-run)."""
    make_results = load_script("make_results")
    _, outputs, _ = built
    shutil.copytree(outputs / LESSON / "quick", tmp_path / "out" / "quick" / LESSON)
    results = tmp_path / "docs" / "results.md"
    assert make_results.main(["--lessons", "01", "--quick-only", "--no-run", "--outputs", str(tmp_path / "out"),
                              "--results", str(results)]) == 0
    page = results.read_text()
    assert "## 01_ebm_foundations" in page and "*From a `--quick` run: tiny settings" in page
    assert list((tmp_path / "docs" / "gallery").glob("01_fig*.png"))


def test_a_page_assembled_from_a_script_run_puts_each_output_under_its_cell(tmp_path, capsys):
    """The lecturer's prepared run (a plain script run) is the page's source: no kernel, no second run."""
    import subprocess

    build_site = load_script("build_site")
    outputs, site = tmp_path / "outputs", tmp_path / "site"
    run = subprocess.run([sys.executable, str(ROOT / f"{LESSON}.py"), "--quick", "--outdir",
                          str(outputs / LESSON / "quick")], capture_output=True, text=True, timeout=300, cwd=ROOT,
                         env={**__import__("os").environ, "MPLBACKEND": "Agg"})
    assert run.returncode == 0, run.stderr[-2000:]
    lesson = ROOT / f"{LESSON}.py"
    build_site.OUTPUTS = outputs
    notebook, _ = build_site.executed_notebook(lesson, quick=True, rerun=False, timeout=60)
    assert "assembled_from" in notebook.metadata["ebm_site"]  # not executed again
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            figure = output.get("metadata", {}).get("ebm_figure", "")
            if figure.startswith("fig"):  # each figure sits under the cell that saved it
                assert f'"{figure.removesuffix(".png")}"' in cell.source, (figure, cell.source[-300:])
    printed = "".join(o.get("text", "") for c in notebook.cells for o in c.get("outputs", []))
    assert printed.count("claim ") >= 10 and "Done." in printed
    assert build_site.main(["--quick", "--lessons", "01", "--site", str(site), "--outputs", str(outputs)]) == 0
    assert "from the run in" in capsys.readouterr().out
    assert (site / f"{LESSON}_files" / "fig09_langevin.png").exists()
