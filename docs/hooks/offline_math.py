"""MkDocs hook: serve MathJax from the site itself, so formulas render without a network.

MathJax comes from PyPI's ``django-static-mathjax`` (MathJax 3.2.2, Apache-2.0, no Django needed
to read its files), installed with the ``dev`` extra. The hook adds the few files a page needs
(the TeX-to-SVG bundle, which carries its own glyphs, and the TeX extensions it may load on
demand) to
the site under ``javascripts/mathjax/``, where ``mkdocs.yml`` points. Nothing is downloaded at
build time or when a page is read.
"""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File, Files

DISTRIBUTION = "django-static-mathjax"
SITE_DIR = "javascripts/mathjax"
# Paths inside MathJax's es5/ folder; MathJax finds the others relative to the bundle's URL.
BUNDLE = "tex-svg.js"
FOLDERS = ("input/tex/extensions",)


def mathjax_root() -> Path:
    """The installed MathJax ``es5`` folder, or a clear error saying what to install."""
    try:
        dist = metadata.distribution(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        raise PluginError(
            f"offline math needs the {DISTRIBUTION} package: pip install -e '.[dev]'"
        ) from None
    root = Path(str(dist.locate_file("mathjax/static/mathjax/es5")))
    if not (root / BUNDLE).is_file():
        raise PluginError(f"{DISTRIBUTION} holds no {BUNDLE} under {root}")
    return root


def mathjax_files(root: Path) -> list[Path]:
    """The bundle, MathJax's licence and every file of the folders it loads from."""
    paths = [root / BUNDLE, root.parent / "LICENSE"]
    for folder in FOLDERS:
        paths += sorted(p for p in (root / folder).rglob("*") if p.is_file())
    return paths


def on_files(files: Files, config: MkDocsConfig) -> Files:
    root = mathjax_root()
    for path in mathjax_files(root):
        rel = "LICENSE" if path.name == "LICENSE" else path.relative_to(root).as_posix()
        files.append(File.generated(config, f"{SITE_DIR}/{rel}", abs_src_path=str(path)))
    return files
