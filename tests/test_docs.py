"""Every ```python block of the README and the docs runs, page by page, top to bottom; the
site's figures and MathJax need nothing generated and no network."""

from __future__ import annotations

import importlib.util
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml

from examples import docs_figures

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)


def blocks(page: Path) -> list[str]:
    return BLOCK.findall(page.read_text(encoding="utf-8"))


def test_the_pages_have_code():
    """The pattern finds the blocks (a broken pattern would make every page test pass)."""
    assert sum(len(blocks(p)) for p in PAGES) >= 10


@pytest.mark.slow
@pytest.mark.parametrize("page", [p for p in PAGES if blocks(p)], ids=lambda p: p.name)
def test_code_blocks_run(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # blocks that write files write them here
    namespace: dict = {"__name__": f"docs_{page.stem}"}
    for i, code in enumerate(blocks(page)):
        try:
            exec(compile(code, f"{page.name}[block {i}]", "exec"), namespace)
        except Exception as error:
            raise AssertionError(f"{page.name}, block {i} failed:\n{code}") from error


# --------------------------------------------------------------------------------------------------
# The site builds from a fresh clone: committed figures, MathJax served locally
# --------------------------------------------------------------------------------------------------

IMG = ROOT / "docs" / "img"
IMAGE_LINK = re.compile(r"\]\((img/[^)\s]+)\)")


def _image_links() -> set[str]:
    return {link for page in PAGES for link in IMAGE_LINK.findall(page.read_text("utf-8"))}


def test_the_figures_are_committed_small_and_used():
    figures = {f"img/{p.name}" for p in IMG.glob("*.png")}
    assert figures, "no figures under docs/img"
    assert _image_links() == figures  # every linked figure exists, every figure is linked
    for path in IMG.glob("*.png"):
        assert path.stat().st_size < 100_000, f"{path.name} is {path.stat().st_size} bytes"
    if (ROOT / ".git").exists():  # a figure that git ignores would be missing from a clone
        ignored = subprocess.run(
            ["git", "check-ignore", *map(str, IMG.glob("*.png"))], cwd=ROOT, capture_output=True
        )
        assert ignored.stdout == b""


def pixel_difference(a: Path, b: Path) -> float:
    """The fraction of pixels that differ visibly (by more than 48 of 255 in a channel)."""
    from PIL import Image

    x, y = (np.asarray(Image.open(p).convert("RGB"), np.int16) for p in (a, b))
    assert x.shape == y.shape, f"{a.name}: {x.shape} against {y.shape}"
    return float((np.abs(x - y).max(-1) > 48).mean())


@pytest.mark.parametrize(
    "name",
    [pytest.param(n, marks=pytest.mark.slow) if n == "toy" else n for n in docs_figures.FIGURES],
)
def test_each_figure_is_regenerated_by_its_command(name, tmp_path):
    """``python -m examples.docs_figures NAME`` redraws the committed figure (pixels, not bytes:
    fonts' antialiasing may move between matplotlib versions)."""
    docs_figures.main([name, "--out", str(tmp_path)])
    assert pixel_difference(tmp_path / f"{name}.png", IMG / f"{name}.png") < 0.01


def test_pixel_difference_sees_a_changed_figure(tmp_path):
    from PIL import Image

    image = Image.open(IMG / "stages.png").convert("RGB")
    image.save(tmp_path / "same.png")
    shifted = Image.new("RGB", image.size, "white")
    shifted.paste(image, (0, 12))
    shifted.save(tmp_path / "shifted.png")
    assert pixel_difference(tmp_path / "same.png", IMG / "stages.png") == 0.0
    assert pixel_difference(tmp_path / "shifted.png", IMG / "stages.png") > 0.01


def test_the_benchmark_tables_are_found():
    text = (ROOT / "docs" / "benchmarks.md").read_text("utf-8")
    header, *rows = docs_figures.markdown_tables(text, "ZDT1")[0]
    assert header[:2] == ["#", "method"] and len(rows) == 21
    assert docs_figures.mean_and_std("-7.52 ± 2.82") == (-7.52, 2.82)
    assert len(docs_figures.markdown_tables(text, "Jitted update, median ms")) == 3
    with pytest.raises(ValueError, match="no heading"):
        docs_figures.markdown_tables(text, "no such section")


def _hook():
    path = ROOT / "docs" / "hooks" / "offline_math.py"
    spec = importlib.util.spec_from_file_location("offline_math", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_mathjax_is_served_from_the_site():
    """No script comes from another host; the one MathJax bundle the pages load is installed,
    and the hook puts it where mkdocs.yml points."""
    hook = _hook()
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text("utf-8"))
    scripts = config["extra_javascript"] + config.get("extra_css", [])
    assert not [s for s in scripts if "//" in s], scripts
    assert f"{hook.SITE_DIR}/{hook.BUNDLE}" in scripts
    assert "docs/hooks/offline_math.py" in config["hooks"]
    files = hook.mathjax_files(hook.mathjax_root())
    assert files[0].name == hook.BUNDLE and files[0].stat().st_size > 1_000_000
    assert any(p.name == "ams.js" for p in files)  # an extension MathJax may load on demand


def test_the_citations_agree():
    """CITATION.cff (CFF 1.2.0) and the BibTeX on the home page name the same paper and the
    library's current version."""
    import camegrad_jax

    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text("utf-8"))
    assert cff["cff-version"] == "1.2.0"
    assert {"message", "title", "authors", "version", "references"} <= set(cff)
    assert str(cff["version"]) == camegrad_jax.__version__
    home = (ROOT / "docs" / "index.md").read_text("utf-8")
    bibtex = re.search(r"```bibtex\n(.*?)```", home, re.DOTALL)
    assert bibtex is not None
    paper, software = (
        dict(re.findall(r"^\s*(\w+)\s*=\s*\{(.*)\},?$", entry, re.MULTILINE))
        for entry in bibtex.group(1).split("\n@")
    )
    reference = cff["references"][0]
    assert paper["title"] == " ".join(reference["title"].split())
    assert paper["author"] == " and ".join(a["family-names"] for a in reference["authors"])
    assert software["version"] == camegrad_jax.__version__
