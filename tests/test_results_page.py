"""The gallery generator (scripts/make_results.py) builds its page from a real --quick run."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_results_page_from_a_quick_run(tmp_path):
    results, gallery = tmp_path / "results.md", tmp_path / "gallery"
    cmd = [sys.executable, str(ROOT / "scripts" / "make_results.py"), "--lessons", "01", "--quick-only",
           "--outputs", str(tmp_path / "out"), "--results", str(results), "--gallery", str(gallery)]
    subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=300,
                   env={**os.environ, "MPLBACKEND": "Agg"})
    page = results.read_text()
    assert "## 01_ebm_foundations" in page and "| --quick |" in page
    assert "`--quick` run: tiny settings" in page  # quick numbers are marked as such
    assert "| `z_rel_error` | " in page and "| `z_rel_error` | — |" not in page  # the metric was read
    thumbs = sorted(gallery.glob("01_fig*.png"))
    assert len(thumbs) == 3 and all(t.stat().st_size < 200_000 for t in thumbs)
    assert all(f"gallery/{t.name}" in page for t in thumbs)
