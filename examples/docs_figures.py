"""The figures of the documentation, drawn into ``docs/img/`` (committed, so that a bare
``mkdocs build`` needs nothing generated).

``python -m examples.docs_figures`` redraws all of them; ``python -m examples.docs_figures stages``
only the named ones. Each is drawn from data in the repository: the library itself (stages), the
tables of ``docs/benchmarks.md`` (benchmarks-*), ``docs/results/rrg-sweep.json`` (rrg-sweep) or a
full run of the toy demo (toy, about 30 s). ``tests/test_docs.py`` redraws them and compares the
pixels with the committed files.
"""

from __future__ import annotations

import argparse
import json
import re
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import BinaryIO

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
OUT = DOCS / "img"
PALETTE_COLORS = 64  # PNGs are palette-quantised: a few tens of kB instead of hundreds

CAME_COLOR, LS_COLOR, OTHER_COLOR = "tab:orange", "0.35", "#9ecae1"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_png(fig, path: Path, dpi: int = 90) -> None:
    """Save ``fig`` as a palette PNG (small and deterministic for a given matplotlib)."""
    import io

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    _pyplot().close(fig)
    buffer.seek(0)
    requantise(buffer, path)


def requantise(source: Path | BinaryIO, path: Path) -> None:
    """Write the PNG ``source`` to ``path`` with a palette of ``PALETTE_COLORS`` colours."""
    from PIL import Image

    image = Image.open(source).convert("RGB").quantize(PALETTE_COLORS, dither=Image.Dither.NONE)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, optimize=True)


# --------------------------------------------------------------------------------------------------
# The three stages of CAME-Grad, K = 2 in the plane
# --------------------------------------------------------------------------------------------------


def stage_coefficients(jac: np.ndarray, task_weights: np.ndarray) -> dict[str, np.ndarray]:
    """Coefficients after each stage, from the library's weighting with later stages off."""
    import jax.numpy as jnp

    import camegrad_jax as cg

    gram = jnp.asarray(jac @ jac.T, jnp.float32)
    lam = jnp.asarray(task_weights, jnp.float32)
    out = {"LS": np.asarray(task_weights, np.float64)}
    for name, kwargs in [
        ("stage 1", {"kappa": None, "nu": 0.0}),
        ("stage 2", {"nu": 0.0}),
        ("stage 3", {}),
    ]:
        weighting = cg.weightings.came(lam, **kwargs)
        coeffs, _ = weighting.weigh(gram, weighting.init(len(task_weights)))
        out[name] = np.asarray(coeffs, np.float64)
    return out


def draw_stages(path: Path) -> None:
    """Two conflicting gradients in the plane, the update after each stage, and the Gram
    quantities every stage works with: each task's first-order change (Gc)_i and ||d||."""
    plt = _pyplot()
    from matplotlib.patches import Circle

    jac = np.array([[3.0, 0.3], [-1.2, 0.8]])
    lam = np.array([1.0, 1.0])
    rho, kappa = 0.5, 1.5
    gram = jac @ jac.T
    coeffs = stage_coefficients(jac, lam)
    d = {k: c @ jac for k, c in coeffs.items()}
    energy = float(lam @ np.sqrt(np.diag(gram)))
    colors = {"LS": "0.3", "stage 1": "tab:blue", "stage 2": "tab:green", "stage 3": "tab:red"}
    labels = {
        "LS": r"$g_\lambda$ (LS)",
        "stage 1": r"$d_{CA}$: 1. rectified in the ball",
        "stage 2": r"$d_{ME} = \gamma d_{CA}$: 2. energy injected",
        "stage 3": r"$d$: 3. fused with $g_\lambda$",
    }

    fig, (ax, bx) = plt.subplots(
        1, 2, figsize=(11, 4.8), layout="constrained", gridspec_kw={"width_ratios": [1.25, 1]}
    )
    # Left: the directions. With K = 2 in two dimensions, lengths and angles are the Gram's.
    lim_x, lim_y = (-2.2, 5.6), (-0.9, 4.2)
    xs = np.linspace(*lim_x, 2)
    g2 = jac[1]
    ax.fill_between(xs, g2[0] / g2[1] * -xs, lim_y[0], color="tab:purple", alpha=0.08, lw=0)
    ax.text(0.9, -0.7, r"task 2 gets worse: $\langle g_2, d\rangle < 0$", color="tab:purple")
    g_lam = d["LS"]
    ax.add_patch(Circle(g_lam, rho * np.linalg.norm(g_lam), fill=False, ls="--", color="0.5", lw=1))
    ax.text(2.9, 1.35, r"ball $\rho\|g_\lambda\|$", color="0.4", fontsize=9)
    ax.add_patch(Circle((0, 0), energy, fill=False, ls=":", color="tab:green", lw=1.2))
    ax.text(3.0, 3.45, r"energy $E = \sum_i \lambda_i\|g_i\|$", color="tab:green", fontsize=9)
    for i, g in enumerate(jac, start=1):
        ax.annotate("", g, (0, 0), arrowprops={"arrowstyle": "->", "color": "k", "lw": 1.2})
        ax.text(*(g + 0.08), f"$g_{i}$", fontsize=12)
    ax.plot(*np.stack([d["stage 2"], g_lam]).T, ":", color="tab:red", lw=1)
    for key, vec in sorted(d.items(), key=lambda kv: -np.linalg.norm(kv[1])):  # short on top
        ax.annotate(
            "", vec, (0, 0), arrowprops={"arrowstyle": "-|>", "color": colors[key], "lw": 2.2}
        )
    for key in d:
        ax.plot([], [], color=colors[key], lw=2.2, label=labels[key])
    ax.set_xlim(*lim_x)
    ax.set_ylim(*lim_y)
    ax.set_aspect("equal")
    ax.legend(loc="upper left", fontsize=8.5, framealpha=0.95)
    ax.set_title(rf"$K = 2$, $\lambda = (1, 1)$, $\rho = {rho}$, $\kappa = {kappa}$, $\nu = 0.2$")

    # Right: what the stages see, computed from G alone.
    keys = list(coeffs)
    x = np.arange(len(keys))
    changes = np.array([gram @ coeffs[k] for k in keys])
    lengths = np.array([np.sqrt(coeffs[k] @ gram @ coeffs[k]) for k in keys])
    width = 0.27
    bx.bar(x - width, changes[:, 0], width, color="0.65", label=r"$(Gc)_1 = \langle g_1, d\rangle$")
    bx.bar(x, changes[:, 1], width, color="tab:purple", label=r"$(Gc)_2 = \langle g_2, d\rangle$")
    bx.bar(x + width, lengths, width, color=[colors[k] for k in keys], label=r"$\sqrt{c^\top Gc}$")
    bx.axhline(energy, color="tab:green", ls=":", lw=1.2)
    bx.text(3.45, energy + 0.12, "E", color="tab:green")
    bx.axhline(0, color="k", lw=0.8)
    bx.set_xticks(x, ["LS", "stage 1\nrectify", "stage 2\ninject", "stage 3\nfuse"])
    bx.legend(loc="upper left", fontsize=8.5)
    bx.set_title(r"Gram quantities of $d = J^\top c$")
    fig.suptitle("CAME-Grad's three stages: only the Gram matrix $G = JJ^\\top$ is needed")
    save_png(fig, path)


# --------------------------------------------------------------------------------------------------
# The benchmark tables of docs/benchmarks.md
# --------------------------------------------------------------------------------------------------


def markdown_tables(text: str, heading: str) -> list[list[list[str]]]:
    """The tables (rows of cells, header first, separator dropped) of the section whose
    heading contains ``heading``, up to the next heading."""
    lines = text.splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith("#") and heading in line]
    if not starts:
        raise ValueError(f"no heading containing {heading!r}")
    tables: list[list[list[str]]] = []
    current: list[list[str]] | None = None
    for line in lines[starts[0] + 1 :]:
        if line.startswith("#"):
            break
        if not line.startswith("|"):
            current = None
            continue
        if current is None:
            current = []
            tables.append(current)
        if not set(line) <= set("|-: "):
            current.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    return tables


def leading_number(cell: str) -> float:
    """The first number of a cell: ``"0.82 ± 0.01"`` -> 0.82, ``"2.01 (×2.3)"`` -> 2.01."""
    match = re.match(r"\s*(-?\d+(?:\.\d+)?(?:e-?\d+)?)", cell)
    if match is None:
        raise ValueError(f"no number in {cell!r}")
    return float(match.group(1))


def mean_and_std(cell: str) -> tuple[float, float]:
    mean, _, std = cell.partition("±")
    return leading_number(mean), leading_number(std) if std else 0.0


def method_color(name: str) -> str:
    return CAME_COLOR if name.startswith("CAME") else LS_COLOR if name == "LS" else OTHER_COLOR


MTL_PANELS = [  # (section heading, column, title, symlog scale)
    ("MultiDigits", "Δm%", "MultiDigits: Δm% vs LS ↑", False),
    ("ZDT1", "Δm%", "ZDT1: Δm% vs LS ↑ (symlog)", True),
    ("CAGrad's toy", "reached Pareto set", "CAGrad's toy: starts reaching the Pareto set ↑", False),
    ("Synthetic RRG", "Δm%", "Synthetic RRG: Δm% vs LS ↑", False),
]


def draw_benchmarks_mtl(path: Path, page: Path = DOCS / "benchmarks.md") -> None:
    """Every method of the multi-task suite, mean ± std over seeds, in its table's rank order."""
    plt = _pyplot()
    text = page.read_text(encoding="utf-8")
    fig, axes = plt.subplots(2, 2, figsize=(11, 10), layout="constrained")
    for ax, (heading, column, title, symlog) in zip(axes.flat, MTL_PANELS, strict=True):
        header, *rows = markdown_tables(text, heading)[0]
        col = next(j for j, name in enumerate(header) if name.startswith(column))
        names = [row[1] for row in rows]
        stats = np.array([mean_and_std(row[col]) for row in rows])
        y = np.arange(len(rows))[::-1]
        ax.barh(y, stats[:, 0], xerr=stats[:, 1], color=[method_color(n) for n in names])
        ax.set_yticks(y, names, fontsize=8)
        ax.axvline(0, color="k", lw=0.8)
        if symlog:
            ax.set_xscale("symlog", linthresh=10)
        ax.set_title(title, fontsize=10)
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle(
        "Multi-task suite (docs/benchmarks.md): mean ± std over seeds; "
        "CAME-Grad and its ablations in orange, LS in grey"
    )
    save_png(fig, path)


def draw_benchmarks_cost(path: Path, page: Path = DOCS / "benchmarks.md") -> None:
    """The jitted update's median time against K, one panel per parameter count."""
    plt = _pyplot()
    from matplotlib.ticker import FuncFormatter, NullFormatter

    tables = markdown_tables(page.read_text(encoding="utf-8"), "Jitted update, median ms")
    fig, axes = plt.subplots(1, len(tables), figsize=(12, 4.2), layout="constrained")
    for ax, table, p in zip(axes, tables, ["1e5", "1e6", "1e7"], strict=True):
        header, *rows = table
        ks = [int(h.removeprefix("K=")) for h in header[1:]]
        for row in rows:
            name = row[0]
            if name.startswith("`"):  # the literal leaf.sum(0), shown in the table only
                continue
            times = [leading_number(cell) for cell in row[1:]]
            style = {
                "came_grad": {"color": CAME_COLOR, "lw": 2.5, "label": "came_grad", "zorder": 3},
                "plain sum": {"color": "k", "ls": "--", "lw": 1.5, "label": "plain sum"},
                "mean": {"color": LS_COLOR, "lw": 1.5, "label": "mean (no Gram)"},
            }.get(name, {"color": OTHER_COLOR, "lw": 1})
            ax.plot(ks, times, marker="o", ms=3, **style)
        ax.plot([], [], color=OTHER_COLOR, label="other weightings")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.set_xticks(ks, [str(k) for k in ks])
        ax.set_xlabel("tasks K")
        ax.set_title(f"P = {p} parameters")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("jitted update, median ms")
    axes[0].legend(fontsize=8)
    fig.suptitle("Cost of the aggregation step on a 2-core CPU (docs/benchmarks.md)")
    save_png(fig, path)


# --------------------------------------------------------------------------------------------------
# Figures of the examples
# --------------------------------------------------------------------------------------------------


def draw_rrg_sweep(path: Path) -> None:
    """The RRG sensitivity sweep, from the recorded ``docs/results/rrg-sweep.json``."""
    from examples.rrg.plots import SWEEP_KEYS, plot_sweep

    summary = json.loads((DOCS / "results" / "rrg-sweep.json").read_text())["variants"]
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "sweep.png"
        plot_sweep(summary, raw, keys=SWEEP_KEYS)
        requantise(raw, path)


def draw_toy(path: Path) -> None:
    """LS, CAGrad and CAME-Grad on CAGrad's toy, 100 000 steps (``python -m examples.toy``)."""
    from examples.toy.demo import run_demo

    with tempfile.TemporaryDirectory() as tmp:
        summary = run_demo(tmp, progress=False, verbose=False)
        requantise(Path(summary["png"]), path)


FIGURES: dict[str, Callable[[Path], None]] = {
    "stages": draw_stages,
    "benchmarks-mtl": draw_benchmarks_mtl,
    "benchmarks-cost": draw_benchmarks_cost,
    "rrg-sweep": draw_rrg_sweep,
    "toy": draw_toy,
}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m examples.docs_figures",
        description="Redraw the documentation's figures into docs/img/ (committed files).",
    )
    parser.add_argument(
        "names",
        nargs="*",
        metavar="NAME",
        help=f"figures to draw, of {', '.join(FIGURES)} (default: all)",
    )
    parser.add_argument(
        "--out", type=Path, default=OUT, help="folder for the PNGs (default docs/img)"
    )
    args = parser.parse_args(argv)
    unknown = sorted(set(args.names) - set(FIGURES))
    if unknown:
        parser.error(f"unknown figure {', '.join(unknown)}; choose from {', '.join(FIGURES)}")
    for name in args.names or FIGURES:
        path = args.out / f"{name}.png"
        FIGURES[name](path)
        print(f"wrote {path} ({path.stat().st_size / 1024:.0f} kB)")


if __name__ == "__main__":
    main()
