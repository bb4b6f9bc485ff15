"""Build the course as a static web site, offline: one page per lesson, an index, and the docs.

    python scripts/build_site.py                  # all ten lessons from default runs
    python scripts/build_site.py --quick          # from --quick runs (each page carries the quick-run mark)
    python scripts/build_site.py --lessons 01 07  # only these lessons (the index keeps the others' links)
    then open site/index.html in a browser (no server needed)

Each lesson is converted with jupytext and executed in a Jupyter kernel (nbclient) exactly as a student would
run the notebook, with ``--outdir outputs/<lesson>`` (``outputs/<lesson>/quick`` for ``--quick``): the run
that builds the page is the prepared default run a lecturer projects. The executed notebook is cached in
``outputs/site/``, keyed by a hash of the lesson, ``common/`` and the flags, so a second build re-runs only
what changed (``--rerun`` forces it). nbconvert's HTML exporter renders the page with the template in
``scripts/site_template/`` (the JupyterLab look, nothing fetched from the network); MathJax comes from the
``jupyter-server-mathjax`` package and is copied into ``site/_static/``. ``scripts/check_site.py`` then
opens every page in headless Chromium and fails on a missing image, a broken link, untypeset maths or any
network request.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import html
import json
import os
import re
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # for common/ (the scripts run from scripts/)
TEMPLATES = Path(__file__).resolve().parent / "site_template"
OUTPUTS = ROOT / "outputs"  # --outputs changes it (the tests build into a temporary folder)
QUICK_MARK = "quick run: tiny settings, numbers not meaningful"
MATHJAX_SKIP = ("localization",)  # 2 MB of menu translations the pages do not use

SITE_CSS = """
body { margin: 0; }
main { max-width: 1040px; margin: 0 auto 0 300px; padding: 0 24px 80px; }
nav.ebm-toc { position: fixed; top: 0; left: 0; width: 270px; height: 100vh; overflow-y: auto;
  padding: 16px 12px; box-sizing: border-box; border-right: 1px solid #ddd; background: #fafafa;
  font: 14px/1.4 system-ui, sans-serif; }
nav.ebm-toc ul { list-style: none; padding-left: 0; margin: 0; }
nav.ebm-toc li { margin: 4px 0; }
nav.ebm-toc li.sub { padding-left: 12px; font-size: 13px; }
nav.ebm-toc a { color: #1a4f8b; text-decoration: none; }
header.ebm-header { font: 15px/1.5 system-ui, sans-serif; padding: 14px 0; border-bottom: 1px solid #ddd;
  margin-bottom: 12px; }
header.ebm-header a { color: #1a4f8b; }
.ebm-quick { background: #fff0f0; border: 2px solid #b00000; color: #b00000; padding: 8px 12px;
  font: 600 15px system-ui, sans-serif; margin: 12px 0; }
.ebm-claims { font: 14px/1.45 system-ui, sans-serif; margin: 12px 0 24px; }
.ebm-claims table { border-collapse: collapse; width: 100%; }
.ebm-claims td { border-top: 1px solid #e3e3e3; padding: 4px 6px; vertical-align: top; }
.ebm-claims td.mark { font-size: 18px; width: 1.5em; text-align: center; }
.holds { color: #1a7f37; } .fails { color: #b00000; }
.jp-RenderedMarkdown.celltag_notice { background: #eef5fc; border-left: 4px solid #1f77b4;
  padding: 6px 14px; border-radius: 3px; }
.jp-OutputArea-output img { max-width: 100%; height: auto; }
pre.ebm-intro { white-space: pre-wrap; font: 15px/1.5 system-ui, sans-serif; background: #fafafa;
  border: 1px solid #e3e3e3; padding: 10px 14px; }
main.ebm-doc { margin: 0 auto; font: 16px/1.6 system-ui, sans-serif; }
.ebm-doc pre { background: #f5f5f5; padding: 10px; overflow-x: auto; }
.ebm-doc code { background: #f3f3f3; padding: 0 3px; }
.ebm-doc table { border-collapse: collapse; } .ebm-doc td, .ebm-doc th { border: 1px solid #ddd; padding: 4px 8px; }
.ebm-doc img { max-width: 100%; }
.ebm-index td { vertical-align: top; padding: 8px; border-top: 1px solid #e3e3e3; }
.ebm-index img { width: 260px; border: 1px solid #ddd; }
@media (max-width: 900px) { nav.ebm-toc { position: static; width: auto; height: auto; border-right: 0; }
  main { margin: 0 auto; } }
"""


def lesson_files(selected: list[str] | None) -> list[Path]:
    every = sorted(ROOT.glob("[0-9][0-9]_*.py"))
    if not selected:
        return every
    chosen = [p for p in every if p.name[:2] in selected]
    unknown = set(selected) - {p.name[:2] for p in chosen}
    if unknown:
        raise SystemExit(f"build_site.py: error: no lesson numbered {', '.join(sorted(unknown))}")
    return chosen


def run_args(lesson: Path, quick: bool) -> tuple[str, Path]:
    """The flags the page's run gets (EBM_ARGS) and where its figures and metrics.json go."""
    outdir = OUTPUTS / lesson.stem / ("quick" if quick else "")
    return f"{'--quick ' if quick else ''}--outdir {outdir}", outdir


def source_hash(lesson: Path, args: str) -> str:
    """What the executed notebook depends on: the lesson, every common/ module, the flags."""
    digest = hashlib.sha256(lesson.read_bytes() + args.encode())
    for module in sorted((ROOT / "common").glob("*.py")):
        digest.update(module.read_bytes())
    return digest.hexdigest()[:16]


def assembled_notebook(lesson: Path, outdir: Path):
    """The lesson as a notebook with the outputs of the run already in ``outdir``, or None if there is none.

    A script run records what each top-level line printed and which figures it saved (``console.json``,
    ``common.lesson.ConsoleLog``); each goes under the cell that holds that line. Refused (None) when the
    lesson changed since that run, or when jupytext's cells do not match the file's ``# %%`` markers.
    """
    import base64
    import bisect

    import jupytext
    import nbformat

    log_file = outdir / "console.json"
    if not log_file.exists() or not (outdir / "metrics.json").exists():
        return None
    log = json.loads(log_file.read_text())
    if log.get("lesson_sha256") != hashlib.sha256(lesson.read_bytes()).hexdigest():
        return None
    lines = lesson.read_text(encoding="utf-8").splitlines()
    starts = [i + 1 for i, line in enumerate(lines) if line.startswith("# %%")]  # 1-based marker lines
    before = 1 if starts and any(line.strip() for line in lines[: starts[0] - 1]) else 0
    notebook = jupytext.read(lesson)
    if not starts or len(notebook.cells) != len(starts) + before:
        return None
    for line, kind, payload in log["events"]:
        if line is None:
            continue
        cell = notebook.cells[bisect.bisect_right(starts, line) - 1 + before]
        if cell.cell_type != "code":
            continue
        outputs = cell.setdefault("outputs", [])
        if kind == "text" and outputs and outputs[-1].output_type == "stream":
            outputs[-1].text += payload
        elif kind == "text":
            outputs.append(nbformat.v4.new_output("stream", name="stdout", text=payload))
        elif (outdir / payload).exists():
            mime = "image/gif" if payload.endswith(".gif") else "image/png"
            data = base64.b64encode((outdir / payload).read_bytes()).decode()
            outputs.append(nbformat.v4.new_output("display_data", data={mime: data},
                                                  metadata={"ebm_figure": payload}))
    notebook.metadata["ebm_site"] = {"assembled_from": shown(outdir), "quick": outdir.name == "quick"}
    return notebook


def executed_notebook(lesson: Path, quick: bool, rerun: bool, timeout: float, execute: bool = False):
    """The lesson as a notebook with its outputs: assembled from the prepared run in ``outputs/<lesson>/``
    when there is one for this version of the lesson, else executed in a kernel (cached)."""
    import jupytext
    import nbclient
    import nbformat

    args, outdir = run_args(lesson, quick)
    if not (execute or rerun):
        assembled = assembled_notebook(lesson, outdir)
        if assembled is not None:
            print(f"  {lesson.stem}: from the run in {shown(outdir)}/")
            return assembled, outdir
    key = source_hash(lesson, args)
    cache = OUTPUTS / "site"
    cached = cache / f"{lesson.stem}{'-quick' if quick else ''}.ipynb"
    if cached.exists() and not rerun and (outdir / "metrics.json").exists():
        notebook = nbformat.read(cached, as_version=4)
        if notebook.metadata.get("ebm_site", {}).get("hash") == key:
            print(f"  {lesson.stem}: cached run ({shown(cached)})")
            return notebook, outdir
    notebook = jupytext.read(lesson)
    # the kernel's own CPU seconds, read by one extra cell at the end (removed again below)
    notebook.cells.append(nbformat.v4.new_code_cell("import os as _os\nprint(sum(_os.times()[:2]))"))
    env = dict(os.environ, EBM_ARGS=args, MPLBACKEND="module://matplotlib_inline.backend_inline", EBM_PROGRESS="off")
    start = time.perf_counter()
    print(f"  {lesson.stem}: running in a kernel with {args} ...", flush=True)
    client = nbclient.NotebookClient(notebook, timeout=timeout, kernel_name="python3",
                                     resources={"metadata": {"path": str(ROOT)}})
    client.execute(env=env)
    timing = notebook.cells.pop()
    cpu_s = float(timing.outputs[0]["text"]) if timing.outputs else None
    notebook.metadata["ebm_site"] = {"hash": key, "args": args, "wall_s": round(time.perf_counter() - start, 1),
                                     "cpu_s": round(cpu_s, 1) if cpu_s else None, "quick": quick}
    cache.mkdir(parents=True, exist_ok=True)
    nbformat.write(notebook, cached)
    return notebook, outdir


def shown(path: Path) -> str:
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return str(path)


# ---------------------------------------------------------------------------------------------
# From an executed notebook to a page
# ---------------------------------------------------------------------------------------------


def declared_figures(lesson: Path) -> dict[str, str]:
    """The lesson's FIGURES constant ({stem: what it shows}), for the images' alternative text."""
    from common.config import declared_constant

    return declared_constant(lesson, "FIGURES", {})


def images_as_files(cell_index: int, cell, files: Path, lesson: Path) -> None:
    """Write each image output to ``files/`` (a figure under its own name) and show it with an <img> tag."""
    import base64

    figures = declared_figures(lesson)
    for j, output in enumerate(cell.get("outputs", [])):
        data = output.get("data", {})
        kind = next((k for k in ("image/png", "image/gif") if k in data), None)
        if kind is None:
            continue
        name = output.get("metadata", {}).get("ebm_figure") or f"output_{cell_index}_{j}.{kind.split('/')[1]}"
        files.mkdir(parents=True, exist_ok=True)
        (files / name).write_bytes(base64.b64decode(data[kind]))
        alt = figures.get(Path(name).stem, f"figure {Path(name).stem} of {lesson.stem}")
        output["data"] = {"text/html": f'<img src="{files.name}/{name}" alt="{html.escape(alt)}">'}


def docstring_as_prose(notebook) -> None:
    """The lesson's docstring (its first cell) shown as text, not as a string literal in a code cell."""
    import ast

    import nbformat

    first = next((c for c in notebook.cells if c.cell_type == "code"), None)
    if first is None or not first.source.lstrip().startswith('"""'):
        return
    module = ast.parse(first.source)
    doc = ast.get_docstring(module)
    if doc is None:
        return
    rest = "\n".join(first.source.splitlines()[module.body[0].end_lineno:]).strip()
    body = doc.split("\n", 1)[1].strip() if "\n" in doc else ""
    intro = nbformat.v4.new_markdown_cell("<pre class=\"ebm-intro\">" + html.escape(body) + "</pre>")
    index = notebook.cells.index(first)
    notebook.cells[index:index + 1] = [intro] + ([nbformat.v4.new_code_cell(rest)] if rest else [])


def marked_for_the_page(notebook, lesson: Path, files: Path):
    """A copy with the page's marks: "What to notice" cells tagged as notes, claim verdicts with check marks,
    images written to ``files/``."""
    notebook = copy.deepcopy(notebook)
    notebook.metadata.pop("widgets", None)
    docstring_as_prose(notebook)
    for i, cell in enumerate(notebook.cells):
        if cell.cell_type == "markdown" and "What to notice" in cell.source:
            cell.metadata.setdefault("tags", []).append("notice")
        images_as_files(i, cell, files, lesson)
        for output in cell.get("outputs", []):
            if output.get("output_type") == "stream":
                output["text"] = re.sub(r"(\s)HOLDS\b", "\\1✓ HOLDS", output["text"])
                output["text"] = re.sub(r"(\s)FAILS\b", "\\1✗ FAILS", output["text"])
    return notebook


def claims_table(metrics: dict) -> str:
    claims = metrics.get("claims", {})
    if not claims:
        return ""
    held = sum(c["holds"] for c in claims.values())
    rows = []
    for claim in claims.values():
        text = re.sub(r"^claim\s+", "", claim["text"])
        text = re.sub(r"\s+(HOLDS|FAILS)$", "", text)
        mark = '<td class="mark holds">✓</td>' if claim["holds"] else '<td class="mark fails">✗</td>'
        rows.append(f"<tr>{mark}<td>{html.escape(text)}</td></tr>")
    quick = bool(metrics.get("provenance", {}).get("quick"))
    note = " (a quick run: the verdicts are not meaningful)" if quick else ""
    table = f"<table>{''.join(rows)}</table>"
    if quick:  # folded: a quick run's verdicts only show that the code runs
        table = f"<details><summary>the {len(claims)} claims</summary>{table}</details>"
    return (f'<section class="ebm-claims"><h2 id="claims">Claims this run checks</h2>'
            f"<p><b>{held} of {len(claims)} hold</b>{note}. Each line is printed with its verdict where the "
            f"lesson measures it; the sentence is what the prose relies on.</p>{table}</section>")


def table_of_contents(page: str) -> str:
    items = ['<li><a href="#claims">Claims</a></li>']
    for level, anchor, inner in re.findall(r'<h([23]) id="([^"]+)">(.*?)<a class="anchor-link"', page):
        text = re.sub(r"<[^>]+>", "", inner)
        items.append(f'<li class="{"sub" if level == "3" else ""}"><a href="#{anchor}">{text}</a></li>')
    return (f'<nav class="ebm-toc"><a href="index.html">&larr; all lessons</a><h3>Contents</h3>'
            f'<ul>{"".join(items)}</ul></nav>')


def lesson_page(lesson: Path, notebook, outdir: Path, site: Path, quick: bool) -> Path:
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(template_name="ebm_course", extra_template_basedirs=[str(TEMPLATES)],
                            exclude_input_prompt=True, exclude_output_prompt=True)
    files = site / f"{lesson.stem}_files"
    shutil.rmtree(files, ignore_errors=True)
    resources = {"metadata": {"name": lesson.stem}, "static_url": "_static"}
    page, _ = exporter.from_notebook_node(marked_for_the_page(notebook, lesson, files), resources=resources)
    metrics = json.loads((outdir / "metrics.json").read_text()) if (outdir / "metrics.json").exists() else {}
    number = lesson.name[:2]
    header = (f'<header class="ebm-header"><a href="index.html">EBM course</a> &middot; Lesson {number} &middot; '
              f'download <a href="downloads/{lesson.name}">{lesson.name}</a> or '
              f'<a href="downloads/{lesson.stem}.ipynb">{lesson.stem}.ipynb</a> &middot; '
              f'<a href="docs/solutions/{lesson.stem}.html">solutions</a></header>')
    if quick:
        header += f'<div class="ebm-quick">Built from a --quick run ({QUICK_MARK}).</div>'
    page = page.replace("<main>", f"{table_of_contents(page)}<main>{header}{claims_table(metrics)}", 1)
    page = re.sub(r'href="(docs/[^":#]+)\.md(#[^"]*)?"', lambda m: f'href="{m.group(1)}.html{m.group(2) or ""}"', page)
    target = site / f"{lesson.stem}.html"
    target.write_text(page, encoding="utf-8")
    return target


def downloads(lesson: Path, site: Path) -> None:
    import jupytext

    folder = site / "downloads"
    folder.mkdir(parents=True, exist_ok=True)
    jupytext.write(jupytext.read(lesson), folder / f"{lesson.stem}.ipynb")


# ---------------------------------------------------------------------------------------------
# Docs, index, static files
# ---------------------------------------------------------------------------------------------


def markdown_renderer():
    from markdown_it import MarkdownIt
    from mdit_py_plugins.anchors import anchors_plugin
    from mdit_py_plugins.dollarmath import dollarmath_plugin

    def maths(content: str, options: dict) -> str:
        # MathJax typesets \( \) and \[ \]; the TeX is escaped so that < and & survive as text
        if options.get("display_mode"):
            return f'<div class="math">\\[{html.escape(content)}\\]</div>'
        return f'<span class="math">\\({html.escape(content)}\\)</span>'

    return MarkdownIt("commonmark", {"html": True}).enable("table").use(
        dollarmath_plugin, double_inline=True, renderer=maths).use(anchors_plugin, min_level=1, max_level=4)


def page_shell(title: str, body: str, static: str, toc: str = "") -> str:
    template = (TEMPLATES / "ebm_course" / "index.html.j2").read_text()  # the lesson pages' MathJax set-up
    mathjax = template.index('<script type="text/x-mathjax-config">')
    head = template[mathjax:template.index("{%- endblock", mathjax)]
    head = head.replace("{{ resources.static_url }}", static)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1.0"><title>{html.escape(title)}</title>'
            f"{head}</head><body>{toc}<main class=\"ebm-doc\">{body}</main></body></html>\n")


def rewrite_links(page: str, depth: int, site: Path) -> str:
    """Links between docs point at the rendered pages: x.md -> x.html, ../07_x.py -> the lesson's page (or its
    download, when this build did not render that lesson)."""
    up = "../" * depth

    def lesson_link(match) -> str:
        stem = match.group(1)
        return f'href="{up}{stem}.html"' if (site / f"{stem}.html").exists() else f'href="{up}downloads/{stem}.py"'

    page = re.sub(r'href="([^":#]+)\.md(#[^"]*)?"', lambda m: f'href="{m.group(1)}.html{m.group(2) or ""}"', page)
    return re.sub(r'href="(?:\.\./)*([0-9][0-9]_\w+)\.py"', lesson_link, page)


def build_docs(site: Path) -> list[Path]:
    md = markdown_renderer()
    pages = []
    for source in sorted((ROOT / "docs").rglob("*.md")):
        relative = source.relative_to(ROOT)  # docs/derivations/x.md
        target = site / relative.with_suffix(".html")
        target.parent.mkdir(parents=True, exist_ok=True)
        depth = len(relative.parts) - 1
        body = rewrite_links(md.render(source.read_text(encoding="utf-8")), depth, site)
        nav = f'<p><a href="{"../" * depth}index.html">&larr; the course</a></p>'
        title = next((line[2:] for line in source.read_text().splitlines() if line.startswith("# ")), source.stem)
        target.write_text(page_shell(title, nav + body, "../" * depth + "_static"), encoding="utf-8")
        pages.append(target)
    if (ROOT / "docs" / "gallery").is_dir():
        shutil.copytree(ROOT / "docs" / "gallery", site / "docs" / "gallery", dirs_exist_ok=True)
    return pages


def lesson_summary(lesson: Path) -> str:
    """The docstring's first line, after the title: what the lesson is about."""
    import ast

    doc = ast.get_docstring(ast.parse(lesson.read_text(encoding="utf-8"))) or ""
    first = doc.splitlines()[0] if doc else lesson.stem
    return first.split("--", 1)[-1].strip()


def build_index(site: Path, lessons: list[Path], quick: bool) -> Path:
    results_file = ROOT / "docs" / "results.json"
    results = json.loads(results_file.read_text()) if results_file.exists() else {}
    rows = []
    for lesson in lessons:
        entry = results.get(lesson.stem, {})
        timings = entry.get("timings", {})
        default_s = timings.get("default", {}).get("cpu_s")
        quick_s = timings.get("--quick", {}).get("cpu_s")
        claims = [c for c in entry.get("claims", {}).values() if c.get("meaningful", True)]
        held = f"{sum(c['holds'] for c in claims)} of {len(claims)}" if claims else "-"
        figure = ""
        run_dir = run_args(lesson, quick)[1]
        metrics_file = run_dir / "metrics.json"
        keys = json.loads(metrics_file.read_text()).get("key_figures", []) if metrics_file.exists() else []
        if keys and (run_dir / keys[0]).exists():
            (site / "img").mkdir(exist_ok=True)
            shutil.copy2(run_dir / keys[0], site / "img" / f"{lesson.stem}_{keys[0]}")
            figure = f'<img src="img/{lesson.stem}_{keys[0]}" alt="key figure of lesson {lesson.name[:2]}">'
        page_exists = (site / f"{lesson.stem}.html").exists()
        title = (f'<a href="{lesson.stem}.html">{lesson.stem}</a>' if page_exists else lesson.stem)
        minutes = f"{default_s:.0f} s" if default_s else "-"
        rows.append(f"<tr><td>{lesson.name[:2]}</td><td><b>{title}</b><br>{html.escape(lesson_summary(lesson))}"
                    f"<br><small>default run {minutes} CPU, --quick {quick_s or '-'} s; claims that hold: {held}"
                    f"</small></td><td>{figure}</td></tr>")
    docs = sorted(p.relative_to(site).as_posix() for p in (site / "docs").rglob("*.html"))
    derivations = "".join(f'<li><a href="{d}">{Path(d).stem.replace("_", " ")}</a></li>'
                          for d in docs if "/derivations/" in d)
    solutions = "".join(f'<li><a href="{d}">{Path(d).stem}</a></li>' for d in docs if "/solutions/" in d)
    quick_note = f'<div class="ebm-quick">Built from --quick runs ({QUICK_MARK}).</div>' if quick else ""
    body = (f"<h1>Energy-based models: ten runnable lessons</h1>{quick_note}"
            "<p>Run in order; each lesson is one page with its prose, maths, code, printed output and figures, "
            "built from the run a lecturer prepares. Runtimes are CPU seconds on a 2-core machine from the "
            '<a href="docs/results.html">results page</a>, which also lists every claim.</p>'
            '<p><a href="docs/course_guide.html">Course guide (for lecturers)</a> &middot; '
            '<a href="docs/notation.html">Notation</a> &middot; <a href="docs/results.html">Results</a></p>'
            f'<table class="ebm-index">{"".join(rows)}</table>'
            f"<h2>Derivations</h2><ul>{derivations}</ul><h2>Solutions</h2><ul>{solutions}</ul>")
    target = site / "index.html"
    target.write_text(page_shell("Energy-based models course", body, "_static"), encoding="utf-8")
    return target


def copy_static(site: Path) -> None:
    import jupyter_server_mathjax

    static = site / "_static"
    static.mkdir(parents=True, exist_ok=True)
    (static / "site.css").write_text(SITE_CSS)
    source = Path(jupyter_server_mathjax.__file__).parent / "static"
    target = static / "mathjax"
    if not (target / "MathJax.js").exists():
        shutil.copytree(source, target, ignore=lambda folder, names: [
            n for n in names if any((Path(folder) / n).as_posix().endswith(skip) for skip in MATHJAX_SKIP)])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lessons", nargs="*", help="lesson numbers (e.g. 01 07); default: all")
    parser.add_argument("--quick", action="store_true", help="build from --quick runs (pages carry the quick mark)")
    parser.add_argument("--site", default=str(ROOT / "site"), help="where the site goes (default: site/)")
    parser.add_argument("--outputs", help="where the runs write (default: outputs/)")
    parser.add_argument("--rerun", action="store_true", help="execute the lessons even when the cache is current")
    parser.add_argument("--execute", action="store_true", help="run each lesson in a kernel even when "
                        "outputs/<lesson>/ holds a run of this version of it (the default uses that run)")
    parser.add_argument("--jobs", type=int, default=1, help="lessons executed at the same time (one kernel each)")
    parser.add_argument("--timeout", type=float, default=1200, help="seconds one notebook cell may take")
    args = parser.parse_args(argv)
    global OUTPUTS
    OUTPUTS = Path(args.outputs).resolve() if args.outputs else OUTPUTS
    site = Path(args.site)
    site.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    copy_static(site)
    failed = []

    def build(lesson: Path) -> None:
        try:
            notebook, outdir = executed_notebook(lesson, args.quick, args.rerun, args.timeout, args.execute)
        except Exception as err:  # a lesson that fails in the kernel: report it, build the others
            failed.append(f"{lesson.stem}: {type(err).__name__}: {str(err).strip().splitlines()[-1][:300]}")
            return
        downloads(lesson, site)
        page = lesson_page(lesson, notebook, outdir, site, args.quick)
        cpu = notebook.metadata["ebm_site"].get("cpu_s")
        print(f"  {lesson.stem}: page {shown(page)}" + (f" (kernel: {cpu} s CPU)" if cpu else ""), flush=True)

    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        list(pool.map(build, lesson_files(args.lessons)))
    (site / "downloads").mkdir(exist_ok=True)
    for lesson in lesson_files(None):  # every lesson's script, so the docs can link to an unrendered one
        shutil.copy2(lesson, site / "downloads" / lesson.name)
    build_docs(site)
    build_index(site, lesson_files(None), args.quick)
    print(f"Site in {shown(site)}/ (open {shown(site / 'index.html')}), built in {time.perf_counter() - start:.0f} s")
    for line in failed:
        print(f"FAILED {line}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
