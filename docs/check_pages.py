"""Check the built site in headless Chromium: the formulas are typeset offline, the figures load.

    mkdocs build --strict && python docs/check_pages.py [--site site] [--out outputs/docs-check]

Serves ``site/`` on 127.0.0.1, opens a few pages in Debian's ``chromium`` with every other host
unresolvable (so a renderer fetched from the network would fail), and asserts, from the DOM
after MathJax ran, that every formula became a MathJax element with no error and no raw TeX
left (the table of contents included),
and that every image of the page has loaded. A screenshot of each page goes to ``--out``.
Needs ``chromium`` (``apt-get install chromium``); not part of CI, which does not install it.
"""

from __future__ import annotations

import argparse
import functools
import http.server
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path

# Pages with the most formulas and every figure.
PAGES = ("concepts/", "benchmarks/", "index/", "rrg/", "failure-modes/")
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    # Nothing but this machine resolves: a page that needs the network shows raw TeX.
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
    "--virtual-time-budget=15000",
)
# Appended to the page by the check: records which images failed to load.
IMAGE_PROBE = "data-check-broken-images"


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    sys.exit("docs/check_pages.py needs chromium on PATH (apt-get install -y chromium)")


def serve(site: Path) -> tuple[http.server.ThreadingHTTPServer, str]:
    handler = functools.partial(_QuietHandler, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/"


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def run_chromium(browser: str, args: Sequence[str], url: str) -> str:
    with tempfile.TemporaryDirectory() as profile:
        result = subprocess.run(
            [browser, *FLAGS, f"--user-data-dir={profile}", *args, url],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    if result.returncode != 0:
        raise RuntimeError(f"chromium failed on {url}:\n{result.stderr[-2000:]}")
    return result.stdout


def problems(page: str, html: str, dom: str) -> list[str]:
    """What is wrong with a page, given its built HTML and Chromium's DOM after scripts ran."""
    found = []
    formulas = len(re.findall(r'class="arithmatex"', html))
    typeset = len(re.findall(r"<mjx-container", dom))
    if formulas and typeset < formulas:
        found.append(f"{page}: {typeset} of {formulas} formulas typeset by MathJax")
    if "<mjx-merror" in dom:
        found.append(f"{page}: MathJax reported a TeX error")
    text = re.sub(r"<script.*?</script>", "", dom, flags=re.DOTALL)
    raw = re.findall(r"\\[(\[].{0,40}", text)  # \( or \[ left anywhere, the TOC included
    if raw:
        found.append(f"{page}: raw TeX left, e.g. {raw[0]!r}")
    broken = re.search(rf'{IMAGE_PROBE}="([^"]*)"', dom)
    if broken is None:
        found.append(f"{page}: the image probe did not run")
    elif broken.group(1):
        found.append(f"{page}: images not loaded: {broken.group(1)}")
    return found


def add_image_probe(site: Path) -> None:
    """Make every checked page record its broken images on <body> once it has loaded."""
    script = (
        "<script>addEventListener('load', () => document.body.setAttribute("
        f"'{IMAGE_PROBE}', [...document.images].filter(i => !i.complete || !i.naturalWidth)"
        ".map(i => i.getAttribute('src')).join(' ')));</script></body>"
    )
    for page in PAGES:
        path = page_file(site, page)
        path.write_text(path.read_text(encoding="utf-8").replace("</body>", script, 1))


def page_file(site: Path, page: str) -> Path:
    return site / "index.html" if page == "index/" else site / page / "index.html"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python docs/check_pages.py", description=__doc__)
    parser.add_argument(
        "--site", type=Path, default=Path("site"), help="the built site (default site/)"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("outputs/docs-check"),
        help="folder for the screenshots (default outputs/docs-check)",
    )
    args = parser.parse_args(argv)
    if not (args.site / "index.html").is_file():
        parser.error(f"--site {args.site} holds no index.html: run mkdocs build first")
    browser = chromium()
    args.out.mkdir(parents=True, exist_ok=True)
    found: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        site = Path(tmp) / "site"
        shutil.copytree(args.site, site)  # the probe is added to a copy, never to the build
        html = {p: page_file(site, p).read_text(encoding="utf-8") for p in PAGES}
        add_image_probe(site)
        server, root = serve(site)
        try:
            for page in PAGES:
                url = root + page_file(Path(), page).parent.as_posix().removeprefix(".") + "/"
                dom = run_chromium(browser, ["--dump-dom"], url)
                shot = args.out / f"{page.strip('/')}.png"
                run_chromium(browser, ["--window-size=1280,2400", f"--screenshot={shot}"], url)
                page_problems = problems(page, html[page], dom)
                found += page_problems
                typeset = dom.count("<mjx-container")
                print(f"{page:<16} {typeset:>4} formulas typeset, screenshot {shot}", end="")
                print("" if not page_problems else "  FAILED")
        finally:
            server.shutdown()
    for line in found:
        print(line, file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
