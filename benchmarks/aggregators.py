"""Cost of one aggregation step for every weighting, against a plain sum and against TorchJD.

For every weighting of the library (the transformations ``cg.<name>(num_tasks=K)``, and ``mean``
= ``cg.aggregate(cg.weightings.mean())``), K tasks and P parameters, a synthetic stacked
Jacobian of three leaves (a ``(r, 64)`` kernel, a vector and a bias; half the tasks conflict
with the other half, magnitudes spread over two decades; see ``benchmarks/_timing.py``) goes
through the jitted ``tx.update(jac, state)``: Gram matrix, K×K weighting, combination Jᵀc.
Reported, as the median of repeated calls after compilation (``block_until_ready``):

* ``update``: the whole step, and its ratio to a plain sum over tasks (the baseline: a jitted
  ``tensordot(ones(K), leaf)`` per leaf; the literal ``leaf.sum(0)`` lowers to a much slower
  XLA:CPU reduction and is shown as ``sum_reduce`` where K·P ≤ 1e7) and the overhead
  ``update − sum``;
* ``weigh``: the jitted ``weighting.weigh(gram, state)`` alone on the K×K Gram matrix, and its
  share of the update (the cost of the K×K solve);
* with TorchJD installed (``pip install "torchjd[full]==0.18.0" torch==2.13.0``; CPU, 2
  threads): the TorchJD aggregator on the same Jacobian as a ``(K, P)`` tensor, and the ratio
  ours / theirs. CAME-Grad has no TorchJD counterpart. An aggregator that fails records its
  error. LibMTL is not compared: its weightings are methods of a training-loop class that takes
  a model and computes the gradients itself, so they cannot be timed on a given Jacobian.

All callables of one (K, P) are timed round-robin, one call each per round, so that load from
other processes on a shared machine falls on all of them alike; compare the ratios rather than
the absolute times. ``OMP_WAIT_POLICY=PASSIVE`` is set before torch loads (unless already set):
with spinning OpenMP workers, torch slows down by up to 30x on an oversubscribed machine, and
interleaved XLA calls suffer too. The default sweep is K in {2, 4, 8, 16, 32} x P in
{1e5, 1e6, 1e7} less K·P > 1e8 (``--max-elements``), about 6 min on a 2-core AMD EPYC, mostly
compilation. Writes the JSON and two plots next to it. Run::

    python -m benchmarks.aggregators [--quick] [--out outputs/benchmarks/aggregators.json]
        [--no-torch]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import importlib.metadata
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import numpy as np

import camegrad_jax as cg
from benchmarks import _timing as timing

#: name -> (transformation factory ``f(num_tasks=K)``, weighting factory); default arguments
#: throughout (CAGrad c = 0.5, FairGrad alpha = 1, Nash-MTL max_norm = 1: as TorchJD's).
METHODS: dict[str, tuple[Callable[..., Any], Callable[[], cg.Weighting]]] = {
    "came_grad": (cg.came_grad, cg.weightings.came),
    "mean": (
        lambda num_tasks: cg.aggregate(cg.weightings.mean(), num_tasks=num_tasks),
        cg.weightings.mean,
    ),
    "mgda": (cg.mgda, cg.weightings.mgda),
    "upgrad": (cg.upgrad, cg.weightings.upgrad),
    "dualproj": (cg.dualproj, cg.weightings.dualproj),
    "cagrad": (cg.cagrad, cg.weightings.cagrad),
    "pcgrad": (cg.pcgrad, cg.weightings.pcgrad),
    "gradvac": (cg.gradvac, cg.weightings.gradvac),
    "nash_mtl": (cg.nash_mtl, cg.weightings.nash_mtl),
    "fairgrad": (cg.fairgrad, cg.weightings.fairgrad),
    "imtl_g": (cg.imtl_g, cg.weightings.imtl_g),
    "aligned_mtl": (cg.aligned_mtl, cg.weightings.aligned_mtl),
    "config": (cg.config, cg.weightings.config),
    "rlw": (cg.rlw, cg.weightings.rlw),
}

#: name -> TorchJD aggregator constructor (class name, keyword arguments; K is passed as
#: ``n_tasks`` where the constructor needs it).
TORCHJD: dict[str, tuple[str, dict[str, Any]]] = {
    "mean": ("Mean", {}),
    "mgda": ("MGDA", {}),
    "upgrad": ("UPGrad", {}),
    "dualproj": ("DualProj", {}),
    "cagrad": ("CAGrad", {"c": 0.5}),
    "pcgrad": ("PCGrad", {}),
    "gradvac": ("GradVac", {}),
    "nash_mtl": ("NashMTL", {"n_tasks": None}),
    "fairgrad": ("FairGrad", {"alpha": 1.0}),
    "imtl_g": ("IMTLG", {}),
    "aligned_mtl": ("AlignedMTL", {}),
    "config": ("ConFIG", {}),
    "rlw": ("Random", {}),
}

#: Weightings whose TorchJD version solves its K×K problem on the host (numpy, quadprog,
#: cvxpy, scipy): targets ours ≤ 1/5 of theirs at P = 1e5 and ≤ 1/3 at P = 1e6.
HOST_SOLVED = ("mgda", "upgrad", "dualproj", "cagrad", "nash_mtl", "fairgrad")
HOST_TARGET = {100_000: 1 / 5, 1_000_000: 1 / 3}

#: The default sweep: K in {2, 4, 8, 16, 32} x P in {1e5, 1e6, 1e7}, less K·P > 1e8 (K = 16 and
#: 32 at P = 1e7).
FULL = {"ks": (2, 4, 8, 16, 32), "ps": (100_000, 1_000_000, 10_000_000)}
QUICK = {"ks": (2, 8), "ps": (100_000,), "methods": ("came_grad", "mean", "mgda", "upgrad")}
TORCH_GRID = {"ks": (2, 8), "ps": (100_000, 1_000_000)}


def load_torchjd(num_threads: int) -> tuple[Any, Any, dict[str, str]] | None:
    """(torch, torchjd.aggregation, versions), or None when TorchJD is not importable."""
    try:
        import torch
        from torchjd import aggregation
    except ImportError:
        return None
    torch.set_num_threads(num_threads)
    versions = {"torch": torch.__version__, "torchjd": importlib.metadata.version("torchjd")}
    return torch, aggregation, versions


def torchjd_fns(
    torch_mods: tuple[Any, Any, dict[str, str]], methods: list[str], jac: Any
) -> tuple[dict[str, Callable[[], Any]], dict[str, str]]:
    """Zero-argument callables running each TorchJD aggregator on the Jacobian as (K, P)."""
    torch, aggregation, _ = torch_mods
    k, _ = timing.jacobian_size(jac)
    matrix = torch.from_numpy(timing.jacobian_matrix(jac))
    fns, errors = {}, {}
    for name in methods:
        if name not in TORCHJD:
            continue
        cls_name, kwargs = TORCHJD[name]
        kwargs = {key: (k if key == "n_tasks" else value) for key, value in kwargs.items()}
        try:
            aggregator = getattr(aggregation, cls_name)(**kwargs)
        except Exception as error:  # recorded, e.g. a missing optional solver
            errors[name] = f"{type(error).__name__}: {error}"[:500]
            continue
        fns[name] = lambda aggregator=aggregator: aggregator(matrix)
    return fns, errors


def measure(
    k: int,
    p: int,
    methods: list[str],
    weigh_fns: dict[tuple[str, int], Callable[[Any], Any]],
    torch_mods: Any,
    budget_s: float,
    reduce_limit: int,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Times every method at one (K, P), interleaved with the baselines and TorchJD."""
    jac = jax.block_until_ready(timing.make_jacobian(k, p))
    gram = jax.block_until_ready(cg.gramian(jac))
    fns: dict[str, Callable[[], Any]] = {"sum": timing.plain_sum_fn(jac)}
    if k * p <= reduce_limit:
        fns["sum_reduce"] = timing.plain_sum_fn(jac, reduce=True)
    for name in methods:
        transform, weighting = METHODS[name]
        fns[f"update/{name}"] = timing.update_fn(transform(num_tasks=k), jac)
        if (name, k) not in weigh_fns:
            weigh_fns[name, k] = timing.weigh_fn(weighting(), k)
        fns[f"weigh/{name}"] = lambda f=weigh_fns[name, k]: f(gram)
    theirs_errors: dict[str, str] = {}
    if torch_mods is not None:
        theirs, theirs_errors = torchjd_fns(torch_mods, methods, jac)
        fns.update({f"torchjd/{name}": fn for name, fn in theirs.items()})
    times = timing.interleaved_times(fns, budget_s=budget_s)
    base = times["sum"]
    rows = []
    for name in methods:
        update, weigh = times[f"update/{name}"], times[f"weigh/{name}"]
        row: dict[str, Any] = {"method": name, "k": k, "p": p, "update": update, "weigh": weigh}
        if "median_ms" in update:
            row["ratio_to_sum"] = update["median_ms"] / base["median_ms"]
            row["overhead_ms"] = update["median_ms"] - base["median_ms"]
            if "median_ms" in weigh:
                row["solve_share"] = weigh["median_ms"] / update["median_ms"]
        if torch_mods is not None and name in TORCHJD:
            theirs = times.get(f"torchjd/{name}", {"error": theirs_errors.get(name, "not run")})
            row["torchjd"] = theirs
            if "median_ms" in theirs and "median_ms" in update:
                row["ours_over_torchjd"] = update["median_ms"] / theirs["median_ms"]
                row["ours_over_torchjd_min"] = update["min_ms"] / theirs["min_ms"]
                row["overhead_over_torchjd"] = row["overhead_ms"] / theirs["median_ms"]
        rows.append(row)
    baselines = {"k": k, "p": p, "sum": base}
    if "sum_reduce" in times:
        baselines["sum_reduce"] = times["sum_reduce"]
    return rows, baselines


def check_targets(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The issue's targets against TorchJD, one entry per compared (method, K, P)."""
    checks = []
    for row in rows:
        if "ours_over_torchjd" not in row:
            continue
        ratio = row["ours_over_torchjd"]
        bound = 1.0
        if row["method"] in HOST_SOLVED and row["p"] in HOST_TARGET:
            bound = HOST_TARGET[row["p"]]
        checks.append(
            {
                "method": row["method"],
                "k": row["k"],
                "p": row["p"],
                "ours_over_torchjd": ratio,
                "ours_over_torchjd_min": row["ours_over_torchjd_min"],
                "target": bound,
                "met": ratio <= bound,
            }
        )
    return checks


def _ms(entry: dict[str, Any] | None) -> str:
    if entry is None:
        return "-"
    if "median_ms" not in entry:
        return "error"
    return f"{entry['median_ms']:.3f}"


def print_config(rows: list[dict[str, Any]], baselines: dict[str, Any]) -> None:
    k, p = baselines["k"], baselines["p"]
    reduce = baselines.get("sum_reduce")
    print(
        f"\nK={k} P={timing.fmt_p(p)}: sum {_ms(baselines['sum'])} ms"
        + (f", sum(0) reduce {_ms(reduce)} ms" if reduce else "")
    )
    print(
        f"{'method':<12} {'update ms':>10} {'x sum':>7} {'overhead':>9} {'weigh ms':>9} "
        f"{'share':>6} {'TorchJD ms':>11} {'ours/TJD':>9}"
    )
    for row in rows:
        theirs = row.get("torchjd")
        ratio = row.get("ours_over_torchjd")
        print(
            f"{row['method']:<12} {_ms(row['update']):>10} {row.get('ratio_to_sum', 0):>7.2f} "
            f"{row.get('overhead_ms', 0):>9.3f} {_ms(row['weigh']):>9} "
            f"{100 * row.get('solve_share', 0):>5.1f}% {_ms(theirs):>11} "
            + (f"{ratio:>9.3f}" if ratio is not None else f"{'-':>9}")
        )


def plot(payload: dict[str, Any], out: Path) -> list[str]:
    """Time vs P per method (one panel per K) and ours vs TorchJD bars; returns the paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, baselines = payload["rows"], payload["baselines"]
    paths = []
    ks = sorted({row["k"] for row in rows})
    methods = list(dict.fromkeys(row["method"] for row in rows))
    fig, axes = plt.subplots(1, len(ks), figsize=(4 * len(ks), 4), sharey=True, squeeze=False)
    cmap = plt.get_cmap("tab20")
    for ax, k in zip(axes[0], ks, strict=True):
        for i, name in enumerate(methods):
            pts = [
                (r["p"], r["update"]["median_ms"])
                for r in rows
                if r["k"] == k and r["method"] == name and "median_ms" in r["update"]
            ]
            if pts:
                ax.loglog(*zip(*pts, strict=True), "o-", color=cmap(i), label=name, ms=3, lw=1)
        base = [(b["p"], b["sum"]["median_ms"]) for b in baselines if b["k"] == k]
        ax.loglog(*zip(*base, strict=True), "k--", label="plain sum", lw=1.5)
        ax.set_title(f"K = {k}")
        ax.set_xlabel("P (parameters)")
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].set_ylabel("jitted update, median ms")
    axes[0][-1].legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    path = out.with_name(out.stem + "_time_vs_p.png")
    fig.savefig(path, dpi=120)
    plt.close(fig)
    paths.append(str(path))

    compared = [r for r in rows if "ours_over_torchjd" in r]
    if compared:
        configs = list(dict.fromkeys((r["k"], r["p"]) for r in compared))
        fig, axes = plt.subplots(len(configs), 1, figsize=(10, 3 * len(configs)), squeeze=False)
        for ax, (k, p) in zip(axes[:, 0], configs, strict=True):
            sel = [r for r in compared if (r["k"], r["p"]) == (k, p)]
            x = np.arange(len(sel))
            ours = [r["update"]["median_ms"] for r in sel]
            theirs = [r["torchjd"]["median_ms"] for r in sel]
            ax.bar(x - 0.2, ours, 0.4, label="camegrad_jax (jitted update)")
            ax.bar(x + 0.2, theirs, 0.4, label="TorchJD 0.18 (CPU, 2 threads)")
            ax.set_xticks(x, [r["method"] for r in sel], fontsize=8)
            ax.set_yscale("log")
            ax.set_ylabel("median ms")
            ax.set_title(f"K = {k}, P = {timing.fmt_p(p)}")
            ax.grid(True, axis="y", which="both", alpha=0.3)
        axes[0][0].legend(fontsize=8)
        fig.tight_layout()
        path = out.with_name(out.stem + "_vs_torchjd.png")
        fig.savefig(path, dpi=120)
        plt.close(fig)
        paths.append(str(path))
    return paths


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.aggregators", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="K in {2, 8}, P = 1e5, 4 methods (CI)")
    parser.add_argument(
        "--out",
        default="outputs/benchmarks/aggregators.json",
        help="JSON results (default outputs/benchmarks/aggregators.json)",
    )
    parser.add_argument("--no-torch", action="store_true", help="skip the TorchJD comparison")
    parser.add_argument(
        "--methods", nargs="*", choices=list(METHODS), default=None, help="weightings to time"
    )
    parser.add_argument("--ks", nargs="*", type=int, default=None, help="override the K grid")
    parser.add_argument("--ps", nargs="*", type=int, default=None, help="override the P grid")
    parser.add_argument(
        "--torch-ks",
        nargs="*",
        type=int,
        default=list(TORCH_GRID["ks"]),
        help="K grid of the TorchJD comparison",
    )
    parser.add_argument(
        "--torch-ps",
        nargs="*",
        type=int,
        default=list(TORCH_GRID["ps"]),
        help="P grid of the TorchJD comparison",
    )
    parser.add_argument(
        "--max-elements", type=float, default=1e8, help="skip (K, P) with K·P above this"
    )
    parser.add_argument("--budget", type=float, default=None, help="timing seconds per (K, P)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--no-plot", action="store_true", help="write no PNG plots")
    args = parser.parse_args(argv)
    grid = QUICK if args.quick else FULL
    ks = tuple(args.ks or grid["ks"])
    ps = tuple(args.ps or grid["ps"])
    methods = list(args.methods or grid.get("methods", METHODS))
    budget = args.budget if args.budget is not None else (0.5 if args.quick else 3.0)
    torch_mods = None if args.no_torch else load_torchjd(args.threads)
    t_start = time.perf_counter()
    meta = timing.machine() | {
        "ks": ks,
        "ps": ps,
        "methods": methods,
        "budget_s_per_config": budget,
        "max_elements": args.max_elements,
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "torchjd": None if torch_mods is None else torch_mods[2] | {"threads": args.threads},
        "torch_grid": {"ks": args.torch_ks, "ps": args.torch_ps},
        "libmtl": "not compared (gradient weightings live inside its training loop)",
    }
    print(
        f"{meta['cpu_model']}, {meta['cpu_count']} cores, load {meta['load_average'][0]:.1f}; "
        f"jax {jax.__version__}; TorchJD: "
        + ("off" if torch_mods is None else f"{torch_mods[2]} ({args.threads} threads)")
    )
    rows: list[dict[str, Any]] = []
    baselines: list[dict[str, Any]] = []
    skipped = []
    weigh_fns: dict[tuple[str, int], Callable[[Any], Any]] = {}
    for p in ps:
        for k in ks:
            if k * p > args.max_elements:
                skipped.append({"k": k, "p": p, "why": f"K·P > {args.max_elements:.0e}"})
                continue
            compare = torch_mods is not None and k in args.torch_ks and p in args.torch_ps
            config_rows, base = measure(
                k,
                p,
                methods,
                weigh_fns,
                torch_mods if compare else None,
                budget,
                reduce_limit=10_000_000,
            )
            print_config(config_rows, base)
            rows += config_rows
            baselines.append(base)
    targets = check_targets(rows)
    if targets:
        missed = [t for t in targets if not t["met"]]
        print(f"\nTorchJD targets: {len(targets) - len(missed)}/{len(targets)} met")
        for t in missed:
            print(
                f"  missed: {t['method']} K={t['k']} P={timing.fmt_p(t['p'])}: "
                f"ours/TorchJD {t['ours_over_torchjd']:.2f} > {t['target']:.2f}"
            )
    for s in skipped:
        print(f"skipped K={s['k']} P={timing.fmt_p(s['p'])}: {s['why']}")
    meta["skipped"] = skipped
    meta["total_s"] = time.perf_counter() - t_start
    payload = {"meta": meta, "rows": rows, "baselines": baselines, "targets": targets}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if not args.no_plot:
        payload["plots"] = plot(payload, out)
    timing.write_json(out, payload)
    print(
        f"wrote {out} ({meta['total_s']:.0f} s)"
        + "".join(f"\nwrote {path}" for path in payload.get("plots", []))
    )
    return payload


if __name__ == "__main__":
    main()
