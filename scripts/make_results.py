"""Run the lessons and write the results page, a lecturer's checklist: docs/results.md (+ docs/gallery/).

    python scripts/make_results.py --jobs 2        # every lesson, --quick then default (about 30 min on 2 cores)
    python scripts/make_results.py --lessons 04    # rerun lesson 04; every other lesson's section is kept
    python scripts/make_results.py --no-run        # rebuild the page from the runs already in outputs/
    python scripts/make_results.py --quick-only --lessons 01 --outputs /tmp/r --results /tmp/r/results.md

Per lesson the page shows: how and when its section was produced; the runtime (wall and CPU seconds) and
peak memory of its default and --quick runs on this machine; every claim the lesson checks (common.claims)
with ✓ or ✗ and its numbers; and the figures the lesson marks as key (``run.savefig(..., key=True)``), large.

What the page says is kept in ``docs/results.json`` (one entry a lesson), so a rerun of a few lessons keeps
the others. A run that fails or passes its time limit replaces its lesson's section with the failure (no
figures or claims from an earlier run are left there), the script names the lesson and exits with status 1.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shlex
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # for common/ (the scripts run from scripts/)
FIGURE_WIDTH = 900  # pixels of a key figure on the page: readable without a click
FALLBACK_FIGURES = 3  # a lesson that marks no key figure shows its first few, and the page says so


def lessons(selected: list[str] | None) -> list[str]:
    names = sorted(p.stem for p in ROOT.glob("[0-9][0-9]_*.py"))
    unknown = [s for s in selected or [] if not any(n[:2] == s or n == s for n in names)]
    if unknown:
        raise SystemExit(f"make_results.py: error: no lesson {', '.join(unknown)} (lessons are 01-{names[-1][:2]})")
    return [n for n in names if not selected or n[:2] in selected or n in selected]


def declared_sections(lesson: str) -> list[int]:
    """The section numbers a lesson declares in its SECTIONS constant (none if it declares none)."""
    from common.config import declared_constant

    return sorted(declared_constant(ROOT / f"{lesson}.py", "SECTIONS", {}))


def lesson_command(lesson: str, outdir: Path, quick: bool, extra: tuple[str, ...] = ()) -> list[str]:
    return ([sys.executable, str(ROOT / f"{lesson}.py"), "--outdir", str(outdir)] + (["--quick"] if quick else [])
            + list(extra))


# A fresh interpreter runs the lesson and reports its own children's usage, so each run's peak memory is its own.
_MEASURE = """
import json, resource, subprocess, sys, time
start = time.perf_counter()
limit = float(sys.argv[1])
try:
    code = subprocess.run(sys.argv[2:], capture_output=True, text=True, timeout=limit)
    status, err = code.returncode, code.stderr
except subprocess.TimeoutExpired as timeout:
    status, err = "timeout", f"stopped after its time limit of {limit:g} s"
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss is bytes on macOS, KiB on Linux
print(json.dumps({"wall_s": round(time.perf_counter() - start, 1), "cpu_s": round(usage.ru_utime + usage.ru_stime, 1),
                  "peak_mib": round(usage.ru_maxrss * scale / 2**20), "exit": status,
                  "stderr": (err or "").strip()[-300:]}))
"""


def clear_outputs(outdir: Path) -> None:
    """Remove an earlier run's figures and metrics (top level only), so a failed run cannot leave them behind."""
    for stale in [*outdir.glob("fig[0-9][0-9]_*"), outdir / "metrics.json"]:
        if stale.is_file():
            stale.unlink()


def timed_run(lesson: str, outdir: Path, quick: bool, limit_s: float, extra: tuple[str, ...] = ()) -> dict:
    """Run one lesson under a time limit: wall and CPU seconds, peak resident memory (MiB), exit status."""
    outdir.mkdir(parents=True, exist_ok=True)
    clear_outputs(outdir)
    cmd = lesson_command(lesson, outdir, quick, extra)
    env = dict(os.environ, MPLBACKEND="Agg")
    measured = subprocess.run([sys.executable, "-c", _MEASURE, str(limit_s), *cmd], cwd=ROOT, env=env,
                              capture_output=True, text=True, check=True)
    return json.loads(measured.stdout.strip().splitlines()[-1])


def shrink_figures(lesson: str, outdir: Path, names: list[str], gallery: Path) -> list[str]:
    """Copy the named figures of a run, resized to ``FIGURE_WIDTH``, to ``gallery/NN_<name>``; old ones go."""
    from PIL import Image

    gallery.mkdir(parents=True, exist_ok=True)
    for old in gallery.glob(f"{lesson[:2]}_*"):
        old.unlink()
    copied = []
    for name in names:
        source = outdir / name
        if not source.exists():
            continue
        image = Image.open(source).convert("RGB")
        if image.width > FIGURE_WIDTH:
            image = image.resize((FIGURE_WIDTH, round(image.height * FIGURE_WIDTH / image.width)), Image.LANCZOS)
        target = gallery / f"{lesson[:2]}_{name}"
        image.quantize(colors=192).save(target, optimize=True)
        copied.append(target.name)
    return copied


def collect(lesson: str, outdir: Path, gallery: Path, quick: bool) -> dict:
    """What the page shows of one finished run: its claims, its key figures (copied to the gallery)."""
    metrics = json.loads((outdir / "metrics.json").read_text())
    figures = metrics.get("key_figures") or []
    marked = bool(figures)
    if not marked:
        figures = sorted(p.name for p in outdir.glob("fig[0-9][0-9]_*.png"))[:FALLBACK_FIGURES]
    return {"claims": metrics.get("claims", {}), "figures": shrink_figures(lesson, outdir, figures, gallery),
            "figures_marked": marked, "from_quick_run": quick,
            "seed": metrics.get("provenance", {}).get("seed"), "threads": metrics.get("provenance", {}).get("threads")}


def fmt(value) -> str:
    if isinstance(value, dict):  # a SeedStats record
        se = value["se"]
        return f"{fmt(value['mean'])} ± {'—' if se is None else f'{se:.2g}'} (n = {value['n_seeds']})"
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def claim_condition(claim: dict) -> str:
    ref, tol, op = fmt(claim["reference"]), claim.get("tolerance", 0), claim["op"]
    label = f" ({claim['reference_label'].strip('()')})" if claim.get("reference_label") else ""
    if op == "within":
        return f"within {fmt(tol)} of {ref}{label}"
    if op == "within_rel":
        return f"within {100 * tol:g} % of {ref}{label}"
    if op == "ratio<":
        return f"< {tol:g} × {ref}{label}"
    shift = f" {'+' if tol > 0 else '−'} {fmt(abs(tol))}" if tol else ""
    return f"{op} {ref}{shift}{label}"


def lesson_section(lesson: str, entry: dict | None, page_dir: Path, gallery: Path) -> str:
    lines = [f"## {lesson}", ""]
    if not entry:
        return "\n".join(lines + ["*Not generated yet: `python scripts/make_results.py --lessons "
                                  f"{lesson[:2]}`.*", ""])
    lines += [f"*Produced {entry['produced']} by `{entry['command']}` (commit {entry.get('commit', '?')}, "
              f"seed {entry.get('seed')}, {entry.get('threads')} thread(s)).*", ""]
    timings = entry.get("timings", {})
    if timings:
        lines += ["| run | wall (s) | CPU (s) | peak memory (MiB) | exit |", "|---|---|---|---|---|"]
        others = sorted((k for k in timings if k not in ("default", "--quick")),
                        key=lambda k: (k.startswith("--section"), len(k), k))  # --section 2 before --section 10
        for kind in ("default", "--quick", *others):
            if kind in timings:
                t = timings[kind]
                runs = t.get("cpu_runs")
                cpu = f"{t['cpu_s']} (median of {', '.join(map(str, runs))})" if runs else t["cpu_s"]
                lines.append(f"| {kind} | {t['wall_s']} | {cpu} | {t['peak_mib']} | {t['exit']} |")
        lines.append("")
    if entry.get("failed"):
        return "\n".join(lines + [f"**✗ This lesson's run failed: {entry['failed']}** No claims or figures are "
                                  "shown until it runs again.", ""])
    if entry.get("from_quick_run"):
        lines += ["*From a `--quick` run: tiny settings, the verdicts are not meaningful.*", ""]
    claims = entry.get("claims", {})
    if claims:
        held = sum(bool(c["holds"]) for c in claims.values())
        lines += [f"**Claims: {held} of {len(claims)} hold.**", "",
                  "| | claim | measured | compared with |", "|---|---|---|---|"]
        for claim in claims.values():
            mark = "✓" if claim["holds"] else "✗"
            row = [mark, claim["sentence"], fmt(claim["measured"]), claim_condition(claim)]
            lines.append("| " + " | ".join(cell.replace("|", "/") for cell in row) + " |")
        lines.append("")
    else:
        lines += ["*This lesson registers no claims yet.*", ""]
    if entry.get("figures") and not entry.get("figures_marked"):
        lines += ["*The lesson marks no key figures; its first few are shown.*", ""]
    for name in entry.get("figures", []):
        lines += [f"![{name}]({os.path.relpath(gallery / name, page_dir)})", ""]
    return "\n".join(lines)


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "?"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("--lessons", nargs="*", help="lesson numbers (e.g. 04 07); default: all")
    parser.add_argument("--outputs", default=str(ROOT / "outputs"), help="where the runs write (one folder a lesson)")
    parser.add_argument("--results", default=str(ROOT / "docs" / "results.md"), help="the page to write")
    parser.add_argument("--gallery", default=None, help="folder for the page's figures (default: gallery/ beside it)")
    parser.add_argument("--no-run", action="store_true", help="run nothing; build the sections from outputs on disk")
    parser.add_argument("--no-quick", action="store_true", help="skip the --quick runs (their timings)")
    parser.add_argument("--quick-only", action="store_true", help="only the --quick runs, and the sections from them")
    parser.add_argument("--timeout", type=float, default=900, help="seconds a default run may take (then it fails)")
    parser.add_argument("--quick-timeout", type=float, default=180, help="seconds a --quick run may take")
    parser.add_argument("--quick-repeats", type=int, default=1, help="--quick runs per lesson; the table gives the "
                        "median CPU time (the course's budget is a median of 3)")
    parser.add_argument("--extra-run", action="append", default=[], metavar="FLAGS",
                        help="also time the selected lessons with these flags (e.g. '--dataset mnist --lecture'); "
                        "a row of their timing table, not their claims")
    parser.add_argument("--no-default", action="store_true", help="skip the default runs; the sections come from "
                        "the default runs already on disk (e.g. to time --quick alone)")
    parser.add_argument("--extra-only", action="store_true", help="run only the --extra-run/--sections runs; keep "
                        "the lessons' default and --quick results as they are")
    parser.add_argument("--sections", action="store_true", help="also time `--section N` alone for every section "
                        "the lesson declares (the course guide's live demos)")
    parser.add_argument("--jobs", type=int, default=1, help="lessons run at the same time (each uses one thread; "
                        "more jobs than cores inflate the wall times, not the CPU times)")
    args = parser.parse_args(argv)
    outputs, results = Path(args.outputs), Path(args.results)
    gallery = Path(args.gallery) if args.gallery else results.parent / "gallery"
    state_file = results.with_suffix(".json")
    state = json.loads(state_file.read_text()) if state_file.exists() else {}
    selected = lessons(args.lessons)
    command = "python scripts/make_results.py " + " ".join(argv if argv is not None else sys.argv[1:])

    def run_one(lesson: str) -> dict:
        quick_dir, default_dir = outputs / "quick" / lesson, outputs / lesson
        shown_dir = quick_dir if args.quick_only else default_dir
        entry = {"produced": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "command": command.strip(),
                 "commit": git_commit(), "machine": f"{platform.machine()}, {os.cpu_count()} cores",
                 "timings": dict(state.get(lesson, {}).get("timings", {}))}
        if not args.no_run:
            runs = [] if args.no_quick or args.extra_only else [("--quick", quick_dir, True, args.quick_timeout)]
            skip_default = args.quick_only or args.extra_only or args.no_default
            runs += [] if skip_default else [("default", default_dir, False, args.timeout)]
            extras = list(args.extra_run) + ([f"--section {n}" for n in declared_sections(lesson)] if args.sections
                                             else [])
            runs += [(flags, outputs / "extra" / lesson / re.sub(r"[^\w=.-]+", "_", flags), False, args.timeout)
                     for flags in extras]
            for kind, outdir, quick, limit in runs:
                print(f"{lesson} {kind} ...", flush=True)
                repeats = args.quick_repeats if quick else 1
                extra = tuple(shlex.split(kind)) if kind not in ("default", "--quick") else ()
                timings = [timed_run(lesson, outdir, quick, limit, extra) for _ in range(repeats)]
                timing = sorted(timings, key=lambda t: t["cpu_s"])[len(timings) // 2]  # the median run
                entry["timings"][kind] = {k: timing[k] for k in ("wall_s", "cpu_s", "peak_mib", "exit")}
                if repeats > 1:
                    entry["timings"][kind]["cpu_runs"] = [t["cpu_s"] for t in timings]
                if timing["exit"] != 0:
                    entry["failed"] = f"the {kind} run exited with {timing['exit']}: {timing['stderr']}"
                    for old in gallery.glob(f"{lesson[:2]}_*"):
                        old.unlink()
                    return entry
        if args.extra_only:  # the rest of the lesson's entry stays as the last full run left it
            return {**state.get(lesson, {}), "timings": entry["timings"]}
        if not (shown_dir / "metrics.json").exists():
            entry["failed"] = f"no metrics.json in {shown_dir} (run it first, or drop --no-run)"
            return entry
        entry.update(collect(lesson, shown_dir, gallery, args.quick_only))
        return entry

    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        for lesson, entry in zip(selected, pool.map(run_one, selected)):
            state[lesson] = entry
    results.parent.mkdir(parents=True, exist_ok=True)
    state_file.write_text(json.dumps(state, indent=1, ensure_ascii=False) + "\n")
    every = lessons(None)
    held = sum(bool(c["holds"]) for e in state.values() for c in e.get("claims", {}).values())
    total = sum(len(e.get("claims", {})) for e in state.values())
    header = [
        "# Results of every lesson",
        "",
        "A lecturer's checklist, generated by `python scripts/make_results.py` (do not edit by hand). Each section "
        "says when and by which command it was produced. Runtimes are this machine's: wall-clock and CPU seconds "
        "and peak resident memory of the lesson's own process, one PyTorch thread; lessons run side by side share "
        "the cores, so CPU seconds are the honest measure of one run on an idle machine. Each claim is a sentence "
        "of the lesson checked by its own run (✓ holds, ✗ fails: the lesson's text says so).",
        "",
        f"**{held} of {total} claims hold** over {len(state)} lessons.",
        "",
        "| lesson | default CPU (s) | `--quick` CPU (s) | claims held |",
        "|---|---|---|---|",
    ]
    for lesson in every:
        entry = state.get(lesson, {})
        t = entry.get("timings", {})
        claims = entry.get("claims", {})
        status = "run failed" if entry.get("failed") else f"{sum(bool(c['holds']) for c in claims.values())} / " \
            f"{len(claims)}"
        header.append(f"| [{lesson}](#{lesson}) | {t.get('default', {}).get('cpu_s', '—')} | "
                      f"{t.get('--quick', {}).get('cpu_s', '—')} | {status} |")
    sections = [lesson_section(lesson, state.get(lesson), results.parent, gallery) for lesson in every]
    results.write_text("\n".join(header + [""] + sections))
    failed = [lesson for lesson in selected if state[lesson].get("failed")]
    for lesson in failed:
        print(f"FAILED: {lesson}: {state[lesson]['failed']}", file=sys.stderr)
    print(f"wrote {results} ({len(selected)} lesson(s) updated, {len(failed)} failed)")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
