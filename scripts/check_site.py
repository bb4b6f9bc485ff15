"""Open every page of the built site from disk in headless Chromium and check it as a reader would see it.

    python scripts/check_site.py                  # every page of site/, screenshots in site/_screenshots/
    python scripts/check_site.py --site /tmp/site --pages 01_ebm_foundations.html index.html

A page fails when it asks for anything outside the site folder (the network, a CDN, a font server), when
an image does not load, when a link points at a file or an anchor that does not exist, when MathJax does not
finish or reports an error, or when TeX is left untypeset in the prose (``$...$``, ``\\(...\\)`` in the
rendered text of markdown). Each page gets a screenshot of its first screens, to look at before a release.

Needs Debian's ``chromium`` (``apt-get install chromium``) and the ``playwright`` package (its own browser
download is not used: ``executable_path`` points at Debian's).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path
from urllib.parse import unquote, urlparse

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-sync",
                 "--disable-background-networking", "--disable-component-update"]

PAGE_FACTS = """() => {
  const images = [...document.images].map(img => ({src: img.getAttribute('src'),
                                                    ok: img.complete && img.naturalWidth > 0}));
  const links = [...document.querySelectorAll('a[href]')].map(a => a.getAttribute('href'));
  const anchors = new Set([...document.querySelectorAll('[id]')].map(e => e.id));
  const prose = [...document.querySelectorAll('.jp-RenderedMarkdown, main.ebm-doc')]
    .map(e => { const c = e.cloneNode(true); c.querySelectorAll('pre, code, script').forEach(x => x.remove());
                return c.innerText; }).join('\\n');
  const mathErrors = document.querySelectorAll('.noError, .MathJax_Error, merror').length;
  const typeset = document.querySelectorAll('.MathJax, .MathJax_Display').length;
  return {images, links, anchors: [...anchors], prose, mathErrors, typeset,
          mathjax: document.documentElement.getAttribute('data-mathjax')};
}"""


def chromium_path() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def broken_link(page: Path, href: str, anchors: set[str]) -> str | None:
    """Why ``href`` on ``page`` is broken, or None. Web addresses are allowed as links (not loaded)."""
    parsed = urlparse(href)
    if parsed.scheme in ("http", "https", "mailto"):
        return None
    if parsed.scheme not in ("", "file"):
        return f"link {href}: unexpected scheme"
    target = page if not parsed.path else (page.parent / unquote(parsed.path)).resolve()
    if not target.exists():
        return f"link {href}: no such file"
    if parsed.fragment and target == page and parsed.fragment not in anchors:
        return f"link {href}: no such anchor"
    return None


def check_page(browser, page_path: Path, site: Path, screenshots: Path | None) -> list[str]:
    import re

    name = page_path.relative_to(site).as_posix()
    problems, requests = [], []
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    tab = context.new_page()

    def route(request_route):
        url = request_route.request.url
        if url.startswith(("file://", "data:")):
            request_route.continue_()
        else:
            requests.append(url)
            request_route.abort()

    tab.route("**/*", route)
    tab.on("requestfailed", lambda r: requests.append(f"failed: {r.url}") if r.url.startswith("file://") else None)
    tab.goto(page_path.resolve().as_uri(), wait_until="load")
    if "MathJax" in tab.content():
        try:
            tab.wait_for_function("document.documentElement.getAttribute('data-mathjax') === 'done'", timeout=60_000)
        except Exception:
            problems.append("MathJax did not finish within 60 s")
    facts = tab.evaluate(PAGE_FACTS)
    problems += [f"network request: {url}" for url in requests]
    problems += [f"image did not load: {img['src']}" for img in facts["images"] if not img["ok"]]
    anchors = set(facts["anchors"])
    problems += [p for p in (broken_link(page_path.resolve(), href, anchors) for href in facts["links"]) if p]
    if facts["mathErrors"]:
        problems.append(f"{facts['mathErrors']} MathJax errors")
    raw = re.search(r"(^|[^\\$])\$[^$\s][^$\n]*\$|\\\(|\\\[|\$\$", facts["prose"])
    if raw:
        start = max(0, raw.start() - 40)
        problems.append(f"untypeset maths: ...{facts['prose'][start:raw.end() + 40]!r}")
    if screenshots is not None:
        screenshots.mkdir(parents=True, exist_ok=True)
        shot = name.removesuffix(".html").replace("/", "__")
        tab.screenshot(path=str(screenshots / f"{shot}.png"), full_page=False)
        height = tab.evaluate("document.body.scrollHeight")
        if height > 2000:  # a second screen from the middle of the page: figures and output
            tab.evaluate(f"window.scrollTo(0, {height // 2})")
            tab.screenshot(path=str(screenshots / f"{shot}_middle.png"), full_page=False)
    context.close()
    return [f"{name}: {p}" for p in problems]


def check_site(site: Path, pages: list[str] | None = None, screenshots: Path | None = None) -> list[str]:
    """Every problem found on the pages (all .html under ``site`` by default); empty when the site is fine."""
    from playwright.sync_api import sync_playwright

    chosen = [site / p for p in pages] if pages else sorted(p for p in site.rglob("*.html") if "_static" not in p.parts)
    problems = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        for page in chosen:
            problems += check_page(browser, page, site, screenshots)
        browser.close()
    return problems


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--site", default=str(ROOT / "site"))
    parser.add_argument("--pages", nargs="*", help="pages relative to the site folder (default: all)")
    parser.add_argument("--no-screenshots", action="store_true")
    args = parser.parse_args(argv)
    if chromium_path() is None:
        print("check_site.py: error: no chromium here (Debian: apt-get install chromium)", file=sys.stderr)
        return 2
    site = Path(args.site)
    shots = None if args.no_screenshots else site / "_screenshots"
    problems = check_site(site, args.pages, shots)
    for line in problems:
        print(line)
    checked = len(args.pages) if args.pages else len([p for p in site.rglob("*.html") if "_static" not in p.parts])
    print(f"{checked} pages checked, {len(problems)} problems" + (f"; screenshots in {shots}" if shots else ""))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
