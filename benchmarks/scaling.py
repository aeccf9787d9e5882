"""How the cost of the CAME-Grad update grows with the number of tasks K and of parameters P.

Two sweeps of the jitted ``tx.update(jac, state)`` on the synthetic Jacobian of
``benchmarks/_timing.py`` (three leaves, conflicting tasks), each timed round-robin with a plain
sum over tasks (``tensordot(ones(K), leaf)``), its two passes over the Jacobian taken apart
(``gram``: ``cg.gramian``; ``combine``: ``cg.combine`` with fixed coefficients), the K×K solve
alone (``weigh``: the jitted ``weightings.came().weigh`` on the Gram matrix), the same update
with a weighting that reads the Gram matrix and solves nothing (``no_solve``: every pass of
CAME-Grad's update, the overflow-safe Gram included, but the K×K solve) and, by default, MGDA
and UPGrad for comparison:

* against K at P = 1e6, K in {2, 4, 8, 16, 32};
* against P at K = 4, P from 1e4 to 1e7.

The slope of ``log t`` against ``log P`` is fitted by least squares on the points with
P ≥ 1e5, where the passes over the Jacobian dominate (below, the fixed cost of a call does);
the slope against K is fitted on all K. Targets of the issue: CAME-Grad linear in P (slope
1.0 ± 0.1) and the K×K solve under 5% of the update at P = 1e6, at K = 4 (the loop-free
solver's target) and, the older goal, for every K ≤ 32. The solve's
share is given two ways: ``in update``, (CAME-Grad − no_solve) / CAME-Grad, what the solve
adds to the fused update, which the target is judged on; and ``alone``, ``weigh`` / CAME-Grad, a
separate jitted call that also pays a call's dispatch (tens of µs on a CPU). Writes the JSON
and a PNG with both panels next to it. Run::

    python -m benchmarks.scaling [--quick] [--out outputs/benchmarks/scaling.json]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import optax

import camegrad_jax as cg
from benchmarks import _timing as timing

#: name -> transformation factory ``f(num_tasks=K)``.
METHODS: dict[str, Callable[..., Any]] = {
    "came_grad": cg.came_grad,
    "mgda": cg.mgda,
    "upgrad": cg.upgrad,
}
#: Everything timed per point besides the methods' updates.
PARTS = ("sum", "gram", "combine", "weigh", "no_solve")


def no_solve_weighting() -> cg.Weighting:
    """Reads the Gram matrix (so that XLA cannot drop it) and returns the mean: CAME-Grad's
    update without its K×K solve. Scale invariant like CAME-Grad, so it takes the same path."""

    def weigh(gram: Any, state: Any, **extra_args: Any) -> tuple[Any, Any]:
        del extra_args
        k = gram.shape[-1]
        return jnp.where(jnp.trace(gram) > 0.0, 1.0 / k, 0.0) * jnp.ones(k, gram.dtype), state

    return cg.Weighting(lambda k: optax.EmptyState(), weigh, scale_invariant=True)


FULL = {
    "ks": (2, 4, 8, 16, 32),
    "k_p": 1_000_000,
    "ps": (10_000, 30_000, 100_000, 300_000, 1_000_000, 3_000_000, 10_000_000),
    "p_k": 4,
    "methods": tuple(METHODS),
}
QUICK = {
    "ks": (2, 4),
    "k_p": 100_000,
    "ps": (10_000, 100_000, 300_000),
    "p_k": 2,
    "methods": ("came_grad",),
}
FIT_MIN_P = 100_000
SLOPE_TARGET, SLOPE_TOL = 1.0, 0.1
SHARE_TARGET, SHARE_P, SHARE_K, SHARE_MAX_K = 0.05, 1_000_000, 4, 32


def share_target(points: list[dict[str, Any]], min_k: int, max_k: int) -> dict[str, Any]:
    """The worst solve share in the update at P = 1e6 over ``min_k <= K <= max_k``."""
    chosen = [pt for pt in points if pt["p"] == SHARE_P and min_k <= pt["k"] <= max_k]
    worst = max(chosen, key=lambda pt: pt["solve_share"], default=None)
    ks = f"K = {min_k}" if min_k == max_k else f"K <= {max_k}"
    return {
        "value": None if worst is None else worst["solve_share"],
        "worst_k": None if worst is None else worst["k"],
        "target": f"< {SHARE_TARGET:.0%} at P = 1e6, {ks} ((came_grad - no_solve) / came_grad)",
        "met": None if worst is None else worst["solve_share"] < SHARE_TARGET,
    }


def measure(
    k: int,
    p: int,
    methods: tuple[str, ...],
    weigh_fns: dict[int, Callable[[Any], Any]],
    budget_s: float,
) -> dict[str, Any]:
    """Times the updates and the parts at one (K, P), interleaved."""
    jac = jax.block_until_ready(timing.make_jacobian(k, p))
    gram = jax.block_until_ready(cg.gramian(jac))
    coeffs = jnp.linspace(0.5, 1.5, k)
    gram_fn, combine_fn = jax.jit(cg.gramian), jax.jit(cg.combine)
    if k not in weigh_fns:
        weigh_fns[k] = timing.weigh_fn(cg.weightings.came(), k)
    fns: dict[str, Callable[[], Any]] = {
        "sum": timing.plain_sum_fn(jac),
        "gram": lambda: gram_fn(jac),
        "combine": lambda: combine_fn(jac, coeffs),
        "weigh": lambda: weigh_fns[k](gram),
        "no_solve": timing.update_fn(cg.aggregate(no_solve_weighting(), num_tasks=k), jac),
    }
    for name in methods:
        fns[name] = timing.update_fn(METHODS[name](num_tasks=k), jac)
    times = timing.interleaved_times(fns, budget_s=budget_s)
    point: dict[str, Any] = {"k": k, "p": p, "times": times}
    update = times["came_grad"]["median_ms"] if "came_grad" in times else None
    if update:
        point["solve_share"] = (update - times["no_solve"]["median_ms"]) / update
        point["solve_share_alone"] = times["weigh"]["median_ms"] / update
        point["ratio_to_sum"] = update / times["sum"]["median_ms"]
    return point


def fit(points: list[dict[str, Any]], axis: str, names: list[str], min_x: int) -> dict[str, Any]:
    """Fitted log-log slope per timed name, on the points with ``axis`` ≥ ``min_x``."""
    slopes = {}
    for name in names:
        pts = [
            (pt[axis], pt["times"][name]["median_ms"])
            for pt in points
            if pt[axis] >= min_x and "median_ms" in pt["times"].get(name, {})
        ]
        if len(pts) >= 2:
            slopes[name] = timing.fit_slope(*zip(*pts, strict=True))
    return slopes


def print_points(title: str, points: list[dict[str, Any]], names: list[str]) -> None:
    print(f"\n{title} (median ms)")
    header = " ".join(f"{n:>10}" for n in names)
    print(f"{'K':>3} {'P':>6} {header} {'share in update':>16} {'alone':>6}")
    for pt in points:
        cells = " ".join(f"{pt['times'][n].get('median_ms', float('nan')):>10.3f}" for n in names)
        shares = [pt.get("solve_share"), pt.get("solve_share_alone")]
        print(
            f"{pt['k']:>3} {timing.fmt_p(pt['p']):>6} {cells} "
            + " ".join(
                f"{100 * s:>{w - 1}.1f}%" if s is not None else f"{'-':>{w}}"
                for s, w in zip(shares, (16, 6), strict=True)
            )
        )


def plot(payload: dict[str, Any], names: list[str], out: Path) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_k, ax_p) = plt.subplots(1, 2, figsize=(11, 4.2))
    styles = {"sum": "k--", "gram": "c:", "combine": "m:", "weigh": "r-."}
    for ax, key, axis in ((ax_k, "vs_k", "k"), (ax_p, "vs_p", "p")):
        points = payload[key]["points"]
        slopes = payload[key]["slopes"]
        for name in names:
            pts = [(pt[axis], pt["times"][name]["median_ms"]) for pt in points]
            label = name + (f" (slope {slopes[name]:.2f})" if name in slopes else "")
            ax.loglog(*zip(*pts, strict=True), styles.get(name, "o-"), label=label, ms=4)
        ax.grid(True, which="both", alpha=0.3)
        ax.set_ylabel("median ms")
        ax.legend(fontsize=7)
    ks = [pt["k"] for pt in payload["vs_k"]["points"]]
    ax_k.set_xticks(ks, [str(k) for k in ks])
    ax_k.minorticks_off()
    ax_k.set_xlabel("K (tasks)")
    ax_k.set_title(f"P = {timing.fmt_p(payload['vs_k']['p'])}")
    ax_p.set_xlabel("P (parameters)")
    fit_min = timing.fmt_p(payload["vs_p"]["fit_min_p"])
    ax_p.set_title(f"K = {payload['vs_p']['k']}; slopes fitted on P ≥ {fit_min}")
    fig.tight_layout()
    path = out.with_suffix(".png")
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return str(path)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scaling", description=__doc__)
    parser.add_argument(
        "--quick",
        action="store_true",
        help="K in {2, 4} at P = 1e5, P up to 3e5 at K = 2, CAME-Grad only (CI)",
    )
    parser.add_argument(
        "--out",
        default="outputs/benchmarks/scaling.json",
        help="JSON results (default outputs/benchmarks/scaling.json)",
    )
    parser.add_argument("--ks", nargs="*", type=int, default=None, help="override the K sweep")
    parser.add_argument("--ps", nargs="*", type=int, default=None, help="override the P sweep")
    parser.add_argument("--k-p", type=int, default=None, help="P of the K sweep")
    parser.add_argument("--p-k", type=int, default=None, help="K of the P sweep")
    parser.add_argument(
        "--methods", nargs="*", choices=list(METHODS), default=None, help="weightings to time"
    )
    parser.add_argument("--budget", type=float, default=None, help="timing seconds per point")
    parser.add_argument("--no-plot", action="store_true", help="write no PNG plot")
    args = parser.parse_args(argv)
    grid = QUICK if args.quick else FULL
    ks, ps = tuple(args.ks or grid["ks"]), tuple(args.ps or grid["ps"])
    k_p, p_k = args.k_p or grid["k_p"], args.p_k or grid["p_k"]
    methods = tuple(args.methods or grid["methods"])
    if "came_grad" not in methods:
        methods = ("came_grad", *methods)
    budget = args.budget if args.budget is not None else (0.5 if args.quick else 3.0)
    names = [*methods, *PARTS]
    t_start = time.perf_counter()
    meta = timing.machine() | {"budget_s_per_point": budget, "methods": methods}
    print(f"{meta['cpu_model']}, {meta['cpu_count']} cores, load {meta['load_average'][0]:.1f}")
    weigh_fns: dict[int, Callable[[Any], Any]] = {}
    done: dict[tuple[int, int], dict[str, Any]] = {}

    def point(k: int, p: int) -> dict[str, Any]:  # a point shared by both sweeps runs once
        if (k, p) not in done:
            done[k, p] = measure(k, p, methods, weigh_fns, budget)
        return done[k, p]

    vs_k = [point(k, k_p) for k in ks]
    print_points(f"against K, P = {timing.fmt_p(k_p)}", vs_k, names)
    vs_p = [point(p_k, p) for p in ps]
    print_points(f"against P, K = {p_k}", vs_p, names)
    slopes_k = fit(vs_k, "k", names, 0)
    slopes_p = fit(vs_p, "p", names, FIT_MIN_P)
    came_slope = slopes_p.get("came_grad")
    targets = {
        "slope_in_p": {
            "value": came_slope,
            "target": f"{SLOPE_TARGET} ± {SLOPE_TOL}",
            "fitted_on": f"P >= {FIT_MIN_P}, K = {p_k}",
            "met": None if came_slope is None else abs(came_slope - SLOPE_TARGET) <= SLOPE_TOL,
        },
        "solve_share_k4": share_target(vs_k, SHARE_K, SHARE_K),
        "solve_share": share_target(vs_k, min(ks), SHARE_MAX_K),
    }
    print(
        "\nslopes against P (P >= 1e5): "
        + ", ".join(f"{n} {s:.2f}" for n, s in slopes_p.items())
        + "\nslopes against K: "
        + ", ".join(f"{n} {s:.2f}" for n, s in slopes_k.items())
    )
    for name, t in targets.items():
        value = "n/a" if t["value"] is None else f"{t['value']:.3f}"
        state = {True: "met", False: "MISSED", None: "not measured"}[t["met"]]
        print(f"target {name}: {value} (target {t['target']}): {state}")
    meta["total_s"] = time.perf_counter() - t_start
    payload = {
        "meta": meta,
        "vs_k": {"p": k_p, "points": vs_k, "slopes": slopes_k},
        "vs_p": {"k": p_k, "fit_min_p": FIT_MIN_P, "points": vs_p, "slopes": slopes_p},
        "targets": targets,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if not args.no_plot:
        payload["plot"] = plot(payload, names, out)
    timing.write_json(out, payload)
    print(f"wrote {out} ({meta['total_s']:.0f} s)")
    if "plot" in payload:
        print(f"wrote {payload['plot']}")
    return payload


if __name__ == "__main__":
    main()
