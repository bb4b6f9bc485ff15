"""Run every lesson and write the gallery of results: docs/results.md and thumbnails in docs/gallery/.

    python scripts/make_results.py                 # every lesson, default and --quick (about 30 min on 2 cores)
    python scripts/make_results.py --lessons 07 08 # only these lessons
    python scripts/make_results.py --no-run --outputs outputs   # rebuild the page from runs already on disk
    python scripts/make_results.py --quick-only --outputs /tmp/r --results /tmp/r/results.md --gallery /tmp/r/g

For each lesson the page gives the measured runtime (wall and CPU seconds) and peak memory of the default and
the --quick run on this machine, the key metrics next to their targets or exact answers, and thumbnails of
two or three key figures, so a lecturer sees what each lesson produces before running anything.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# lesson -> [(metric key, what it should be next to)], and the figures worth a thumbnail
KEY_METRICS: dict[str, list[tuple[str, str]]] = {
    "01_ebm_foundations": [("z_rel_error", "< 1e-6 (closed form)"), ("density_integral", "1"),
                           ("score_max_abs_error", "< 1e-5 (closed form)"), ("mle_param_error", "a few SE"),
                           ("langevin_mmd", "vs langevin_mmd_baseline"), ("langevin_mmd_baseline", "noise floor")],
    "02_hopfield_networks": [("async_energy_increases", "0"), ("alpha_c_hebbian", "0.138 (N -> inf)"),
                             ("alpha_c_storkey", "> Hebbian")],
    "03_boltzmann_machines": [("gibbs_tv_final", "< 0.05"), ("tv_iid_expected_final", "i.i.d. floor"),
                              ("rhat_max", "< 1.05"), ("kl_visible_only", "0.6485 infimum"),
                              ("kl_with_hidden", "< kl_visible_only")],
    "04_restricted_boltzmann_machines": [("test_loglik_exact", "> baseline_loglik_independent"),
                                         ("baseline_loglik_independent", "baseline"),
                                         ("ais_abs_error_small", "<= 0.1 nats (exact log Z)"),
                                         ("sklearn_test_loglik", "scikit-learn, same epochs"),
                                         ("sklearn_equal_time_test_loglik", "scikit-learn, same CPU time"),
                                         ("dbn_bound_test_init", "= dbn_rbm1_test_loglik_exact"),
                                         ("dbn_bound_test_final", "> dbn_bound_test_init")],
    "05_contrastive_divergence": [("grad_cosine_by_k", "-> 1 with k (exact gradient)"),
                                  ("final_test_loglik_by_method", "exact log-likelihood"),
                                  ("unvisited_mode", "CD-1 keeps the far mode, PCD-1 removes it"),
                                  ("frozen_model_switch_rate", "decaying lr < constant lr")],
    "06_score_matching": [("esm_minus_ism_spread", "vs esm_minus_ism_mc_se"), ("sm_vs_mle_max_abs_diff", "< 1e-3"),
                          ("dsm_mmd", "< 2x dsm_mmd_baseline"), ("dsm_mmd_baseline", "noise floor"),
                          ("annealed_small_mode_weight", "true_small_mode_weight (0.2)")],
    "07_neural_ebms": [("teff_table", "theory within 2 %"), ("iat_flat", "tuned < ULA / 3"),
                       ("toy_nll", "within 0.15 of toy_nll_floor"), ("toy_nll_floor", "entropy"),
                       ("toy_mmd", "< 2x toy_mmd_baseline"), ("digits_fd", "< digits_fd_gaussian"),
                       ("digits_fd_floor", "floor"), ("digits_fd_gaussian", "baseline"),
                       ("digits_label_entropy", ">= 0.9 ln 10 = 2.07")],
    "08_cooperative_training": [("dv_kl_estimate", "within 10 % of dv_kl_exact"), ("dv_kl_exact", "quadrature"),
                                ("coop_toy_nll", "<= ebm_only_toy_nll"), ("toy_nll_floor", "entropy"),
                                ("coop_digits_fd", "<= ebm_only_digits_fd"), ("ebgan_modes_covered", "of 8"),
                                ("jem_accuracy", "within 2 points of clf_accuracy"), ("clf_accuracy", "baseline"),
                                ("jem_ece", "vs clf_ece"), ("clf_ece", "baseline")],
    "09_ebm_applications": [("ood_auroc", "energy vs max-softmax, per set"), ("inpaint_psnr", "> mean imputation"),
                            ("denoise_psnr", "> blur"), ("robust_accuracy", "adaptive < naive"),
                            ("composition_tv", "stated TV"), ("structured_branch_hit_rate", "ebm >> mse")],
    "10_advanced_ebm_topics": [("annealed_small_mode_weight", "0.20 +- 0.03"),
                               ("plain_small_mode_weight", "starting points' weight"),
                               ("eps_score_identity_error", "float precision"), ("ode_nll", "vs nll_floor"),
                               ("nce_logz_abs_error", "< 0.05 nats (quadrature)"),
                               ("flow_ebm_nll", "< flow_nll, within 0.1 of the floor"),
                               ("latent_ebm_fd", "<= gaussian_prior_fd"),
                               ("jepa_probe_accuracy", "vicreg >> collapsed")],
}
THUMBNAILS_PER_LESSON = 3
THUMB_WIDTH = 480


def lessons(selected: list[str] | None) -> list[str]:
    names = sorted(p.stem for p in ROOT.glob("[0-9][0-9]_*.py"))
    return [n for n in names if not selected or n[:2] in selected or n in selected]


# A fresh interpreter runs the lesson and reports its own children's usage, so each run's peak memory is its own.
_MEASURE = """
import json, resource, subprocess, sys, time
start = time.perf_counter()
code = subprocess.run(sys.argv[1:], capture_output=True, text=True)
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss is bytes on macOS, KiB on Linux
print(json.dumps({"wall_s": round(time.perf_counter() - start, 1), "cpu_s": round(usage.ru_utime + usage.ru_stime, 1),
                  "peak_mib": round(usage.ru_maxrss * scale / 2**20), "exit": code.returncode,
                  "stderr": code.stderr[-300:]}))
"""


def timed_run(lesson: str, outdir: Path, quick: bool) -> dict:
    """Run one lesson; wall and CPU seconds, peak resident memory (MiB) and exit status of that run alone."""
    cmd = [sys.executable, str(ROOT / f"{lesson}.py"), "--outdir", str(outdir)] + (["--quick"] if quick else [])
    env = dict(os.environ, MPLBACKEND="Agg")
    measured = subprocess.run([sys.executable, "-c", _MEASURE, *cmd], cwd=ROOT, env=env, capture_output=True,
                              text=True, check=True)
    result = json.loads(measured.stdout.strip().splitlines()[-1])
    if result["exit"] != 0:
        print(f"  {lesson}{' --quick' if quick else ''} exited {result['exit']}: {result['stderr'].strip()}")
    return result


def format_value(value, depth: int = 0) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):
        if depth > 0 or len(value) > 6:
            return "{" + ", ".join(f"{k}: {format_value(v, 1)}" for k, v in list(value.items())[:6]) + \
                (", …}" if len(value) > 6 else "}")
        return "{" + ", ".join(f"{k}: {format_value(v, depth + 1)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        shown = ", ".join(format_value(v, depth + 1) for v in value[:6])
        return f"[{shown}{', …' if len(value) > 6 else ''}]"
    return "—" if value is None else str(value)


def make_thumbnails(lesson: str, outdir: Path, gallery: Path) -> list[Path]:
    """Shrink the first few figures of a run to small PNGs under docs/gallery/."""
    from PIL import Image

    gallery.mkdir(parents=True, exist_ok=True)
    thumbs = []
    for figure in sorted(outdir.glob("fig[0-9][0-9]_*.png"))[:THUMBNAILS_PER_LESSON]:
        image = Image.open(figure).convert("RGB")
        height = round(image.height * THUMB_WIDTH / image.width)
        target = gallery / f"{lesson[:2]}_{figure.name}"
        image.resize((THUMB_WIDTH, height), Image.LANCZOS).quantize(colors=128).save(target, optimize=True)
        thumbs.append(target)
    return thumbs


def lesson_section(lesson: str, outdir: Path, timings: dict, thumbs: list[Path], page_dir: Path) -> str:
    lines = [f"## {lesson}", ""]
    if timings:
        lines += ["| run | wall (s) | CPU (s) | peak memory (MiB) | exit |", "|---|---|---|---|---|"]
        for kind, t in timings.items():
            lines.append(f"| {kind} | {t['wall_s']} | {t['cpu_s']} | {t['peak_mib']} | {t['exit']} |")
        lines.append("")
    metrics_path = outdir / "metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.exists() else {}
    if metrics.get("provenance", {}).get("quick"):
        lines += ["*Metrics from a `--quick` run: tiny settings, not meaningful numbers.*", ""]
    lines += ["| metric | value | target or exact answer |", "|---|---|---|"]
    for key, target in KEY_METRICS.get(lesson, []):
        lines.append(f"| `{key}` | {format_value(metrics.get(key)).replace('|', '/')} | {target} |")
    lines.append("")
    lines += [f"![{t.stem}]({os.path.relpath(t, page_dir)})" for t in thumbs]
    return "\n".join(lines + [""])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("--lessons", nargs="*", help="lesson numbers (e.g. 01 07); default: all")
    parser.add_argument("--outputs", default=str(ROOT / "outputs"), help="where the runs write (one folder a lesson)")
    parser.add_argument("--results", default=str(ROOT / "docs" / "results.md"), help="the page to write")
    parser.add_argument("--gallery", default=str(ROOT / "docs" / "gallery"), help="folder for the thumbnails")
    parser.add_argument("--no-run", action="store_true", help="do not run anything; build from the outputs on disk")
    parser.add_argument("--no-quick", action="store_true", help="skip the --quick runs (their timings)")
    parser.add_argument("--quick-only", action="store_true", help="only the --quick runs, and the page from them")
    parser.add_argument("--jobs", type=int, default=1, help="lessons run at the same time (each uses one thread; "
                        "more jobs than cores inflate the wall times, not the CPU times)")
    args = parser.parse_args(argv)
    outputs, results, gallery = Path(args.outputs), Path(args.results), Path(args.gallery)
    selected = lessons(args.lessons)

    def run_one(lesson):
        timings = {}
        if not args.no_run:
            print(f"{lesson} ...", flush=True)
            if not args.no_quick:
                timings["--quick"] = timed_run(lesson, outputs / "quick" / lesson, quick=True)
            if not args.quick_only:
                timings["default"] = timed_run(lesson, outputs / lesson, quick=False)
        return timings

    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        new_timings = dict(zip(selected, pool.map(run_one, selected)))
    # timings are kept next to the outputs, so a later --no-run (or a rerun of a few lessons) keeps the others
    timings_file = outputs / "timings.json"
    all_timings = json.loads(timings_file.read_text()) if timings_file.exists() else {}
    for lesson, t in new_timings.items():
        all_timings.setdefault(lesson, {}).update(t)
    outputs.mkdir(parents=True, exist_ok=True)
    timings_file.write_text(json.dumps(all_timings, indent=2))
    sections = []
    for lesson in selected:
        outdir = outputs / "quick" / lesson if args.quick_only else outputs / lesson
        thumbs = make_thumbnails(lesson, outdir, gallery)
        sections.append(lesson_section(lesson, outdir, all_timings.get(lesson, {}), thumbs, results.parent))
    header = [
        "# Results of every lesson",
        "",
        f"Generated by `python scripts/make_results.py` on {time.strftime('%Y-%m-%d')}, {platform.machine()}, "
        f"{os.cpu_count()} CPU cores, Python {platform.python_version()}. Seed 0, one PyTorch thread (the default). "
        "Runtimes are those of this machine: wall-clock and CPU seconds, peak resident memory of the lesson's process. "
        f"Runs at a time: {args.jobs}; the lessons are single-threaded, so with more runs than idle cores the CPU "
        "seconds are the honest measure of what one run takes on an idle machine.",
        "",
    ]
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text("\n".join(header + sections))
    print(f"wrote {results} and {len(list(gallery.glob('*.png')))} thumbnails in {gallery}/")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
