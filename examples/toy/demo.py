"""CAGrad's two-objective toy problem, solved with camegrad_jax aggregators.

The problem, the optimiser settings (Adam, lr 1e-3, 100 000 steps) and the three start points follow
the toy experiment of Liu et al., "Conflict-Averse Gradient Descent for Multi-task Learning"
(NeurIPS 2021). Both losses are built from a log/tanh "valley" on the upper half plane (x2 > 0) and
a tanh-weighted quadratic bowl on the lower half plane, where the two minimisers sit at
(+7, ~-8.36) for f1 and (-7, ~-8.36) for f2. The Pareto set is the curve between them.

Each method is an ``optax.chain(<aggregator>, optax.adam(lr))`` that receives the stacked (2, 2)
Jacobian of the two losses. All start points are optimised at once (``jax.vmap``), and the steps
run inside a jitted ``lax.scan`` over chunks of steps, compiled once per method.

Run ``python -m examples.toy --help`` for the options.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

import camegrad_jax as cg

# --------------------------------------------------------------------------------------------------
# The problem
# --------------------------------------------------------------------------------------------------

#: Floor on the argument of the log terms (keeps the log finite at its singularity).
LOG_FLOOR = 5e-6
#: Adam learning rate and step count of the reference experiment.
LR = 1e-3
DEFAULT_STEPS = 100_000
#: The three start points of the reference experiment.
STARTS: tuple[tuple[float, float], ...] = ((-8.5, 7.5), (-8.5, -5.0), (9.0, 9.0))
#: The reference plot draws the Pareto set as the segment x1 in [-7, 7] at this height (the exact
#: set, see :func:`pareto_set`, is a slightly curved arc through (0, -8.3551)).
REFERENCE_PARETO_X2 = -8.3552
#: A final point counts as "on the Pareto set" when it is this close (Euclidean) to it.
PARETO_TOL = 0.05
#: Trajectory panels per row of the figure.
PANELS_PER_ROW = 4


def toy_losses(x: jax.Array) -> jax.Array:
    """Both task losses at ``x = (x1, x2)``; returns a ``(2,)`` vector ``(f1, f2)``."""
    x1, x2 = x[0], x[1]
    t = jnp.tanh(-x2)
    # Upper half plane: log-shaped valleys, switched on by tanh(x2 / 2) > 0.
    up1 = jnp.log(jnp.maximum(jnp.abs(-0.5 * (x1 + 7.0) - t), LOG_FLOOR)) + 6.0
    up2 = jnp.log(jnp.maximum(jnp.abs(0.5 * (3.0 - x1) + t + 2.0), LOG_FLOOR)) + 6.0
    w_up = jnp.maximum(jnp.tanh(0.5 * x2), 0.0)
    # Lower half plane: shallow quadratic bowls centred at x1 = +7 (f1) and x1 = -7 (f2).
    bowl = 0.01 * (x2 + 8.0) ** 2 - 20.0
    low1 = 0.1 * (x1 - 7.0) ** 2 + bowl
    low2 = 0.1 * (x1 + 7.0) ** 2 + bowl
    w_low = jnp.maximum(jnp.tanh(-0.5 * x2), 0.0)
    return jnp.stack([up1 * w_up + low1 * w_low, up2 * w_up + low2 * w_low])


def pareto_set(num: int = 2001) -> np.ndarray:
    """The Pareto set as a ``(num, 2)`` polyline, computed numerically in float64.

    Below the x1 axis both losses read ``f_i = (q_i(x1) + b(x2)) * c(x2)`` with
    ``q_1 = (x1 - 7)^2 / 10``, ``q_2 = (x1 + 7)^2 / 10``, ``b = (x2 + 8)^2 / 100 - 20`` and
    ``c = tanh(-x2 / 2)``. A point is Pareto-stationary when ``w grad f1 + (1 - w) grad f2 = 0`` for
    some ``w`` in [0, 1]. The x1-component gives ``x1 = 14 w - 7``; the x2-component gives
    ``b'(x2) c + (q_w + b) c'(x2) = 0`` with ``q_w = w q_1 + (1 - w) q_2``, which is solved by
    bisection for every ``x1`` in [-7, 7]. (The reference code draws this curve as the straight
    segment ``x2 = -8.3552``, its height at ``x1 = 0``; the exact curve dips to ``x2 = -8.434`` at
    the two ends, the minimisers of f1 and f2.)
    """
    x1 = np.linspace(-7.0, 7.0, num)
    w = (x1 + 7.0) / 14.0
    q_w = w * 0.1 * (x1 - 7.0) ** 2 + (1.0 - w) * 0.1 * (x1 + 7.0) ** 2

    def stationarity(x2: np.ndarray) -> np.ndarray:
        c = np.tanh(-0.5 * x2)
        dc = -0.5 * (1.0 - c**2)
        b = 0.01 * (x2 + 8.0) ** 2 - 20.0
        return 0.02 * (x2 + 8.0) * c + (q_w + b) * dc

    lo = np.full_like(x1, -10.0)  # stationarity < 0 here
    hi = np.full_like(x1, -8.0)  # stationarity > 0 here
    assert np.all(stationarity(lo) < 0) and np.all(stationarity(hi) > 0)
    for _ in range(80):
        mid = 0.5 * (lo + hi)
        neg = stationarity(mid) < 0
        lo = np.where(neg, mid, lo)
        hi = np.where(neg, hi, mid)
    return np.stack([x1, 0.5 * (lo + hi)], axis=1)


def distance_to_set(points: np.ndarray, curve: np.ndarray) -> np.ndarray:
    """Euclidean distance from each of ``points`` (N, 2) to the polyline ``curve`` (M, 2)."""
    a, b = curve[:-1], curve[1:]  # segments (M-1, 2)
    ab = b - a
    ap = points[:, None, :] - a[None]
    t = np.clip(np.sum(ap * ab, -1) / np.maximum(np.sum(ab * ab, -1), 1e-300), 0.0, 1.0)
    closest = a[None] + t[..., None] * ab[None]
    return np.min(np.linalg.norm(points[:, None, :] - closest, axis=-1), axis=1)


def gradient_cosine(x: np.ndarray) -> np.ndarray:
    """Cosine between the two task gradients at each of ``x`` (N, 2); NaN if one of them is 0."""
    jac = np.asarray(jax.vmap(jax.jacrev(toy_losses))(jnp.asarray(x, jnp.float32)), np.float64)
    g1, g2 = jac[:, 0], jac[:, 1]
    denom = np.linalg.norm(g1, axis=-1) * np.linalg.norm(g2, axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, np.sum(g1 * g2, -1) / denom, np.nan)


# --------------------------------------------------------------------------------------------------
# Methods and the optimisation loop
# --------------------------------------------------------------------------------------------------


def default_methods() -> dict[str, optax.GradientTransformationExtraArgs]:
    """The aggregators compared in the demo (each is chained with Adam in :func:`run_method`)."""
    return {
        "LS (mean)": cg.aggregate(cg.weightings.mean(), num_tasks=2),
        "CAGrad (came κ=None, ν=0)": cg.came_grad(kappa=None, nu=0.0, num_tasks=2),
        "CAME-Grad": cg.came_grad(num_tasks=2),
    }


#: Display name -> ``cg.weightings`` factory for ``--methods all`` (each with its defaults).
GRAM_WEIGHTINGS: dict[str, str] = {
    "LS (mean)": "mean",
    "RLW": "rlw",
    "MGDA": "mgda",
    "PCGrad": "pcgrad",
    "GradVac": "gradvac",
    "IMTL-G": "imtl_g",
    "Aligned-MTL": "aligned_mtl",
    "CAGrad (c=0.5)": "cagrad",
    "Nash-MTL": "nash_mtl",
    "UPGrad": "upgrad",
    "DualProj": "dualproj",
    "ConFIG": "config",
    "FairGrad": "fairgrad",
}


def all_methods() -> dict[str, optax.GradientTransformationExtraArgs]:
    """Every Gram weighting of ``cg.weightings`` with its documented defaults, CAME-Grad last.

    ``summed`` and ``linear`` are left out: under Adam they follow LS's path (Adam is invariant to a
    constant rescaling of the update). The loss-based weightings (famo, dwa, uncertainty) are left
    out because the toy's losses are negative and they need positive losses.
    """
    methods = {
        label: cg.aggregate(getattr(cg.weightings, name)(), num_tasks=2)
        for label, name in GRAM_WEIGHTINGS.items()
    }
    methods["CAGrad (came κ=None, ν=0)"] = cg.came_grad(kappa=None, nu=0.0, num_tasks=2)
    methods["CAME-Grad"] = cg.came_grad(num_tasks=2)
    return methods


#: Method sets selectable with ``--methods``.
METHOD_SETS: dict[str, Callable[[], dict[str, optax.GradientTransformationExtraArgs]]] = {
    "default": default_methods,
    "all": all_methods,
}


def _make_chunk_runner(
    optimizer: optax.GradientTransformation, total_steps: int, chunk: int
) -> Callable[..., Any]:
    """A jitted function running ``chunk`` optimiser steps for all starts at once.

    Steps whose global index is ``>= total_steps`` leave the state unchanged, so every call has the
    same shapes and the function compiles once.
    """
    value_and_jac = cg.value_and_jacobian(toy_losses)

    def one_start(params, opt_state):
        _, jac = value_and_jac(params)  # jac: (2 tasks, 2 coordinates)
        updates, opt_state = optimizer.update(jac, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    step_all = jax.vmap(one_start)

    @jax.jit
    def run_chunk(params, opt_state, first_step):
        def body(carry, i):
            params, opt_state = carry
            new_params, new_state = step_all(params, opt_state)
            active = first_step + i < total_steps
            keep = lambda new, old: jnp.where(active, new, old)  # noqa: E731
            params = jax.tree.map(keep, new_params, params)
            opt_state = jax.tree.map(keep, new_state, opt_state)
            return (params, opt_state), params

        (params, opt_state), traj = jax.lax.scan(body, (params, opt_state), jnp.arange(chunk))
        return params, opt_state, traj

    return run_chunk


def run_method(
    name: str,
    aggregator: optax.GradientTransformation,
    starts: np.ndarray,
    steps: int,
    *,
    lr: float = LR,
    chunk: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Optimise from every start with ``chain(aggregator, adam(lr))``.

    Returns the trajectories ``traj`` (steps + 1, S, 2) (start included), the final points, the
    final losses, the optimiser state and the wall time (compilation included).
    """
    from tqdm.auto import tqdm

    if chunk is None:
        chunk = max(1, min(1000, math.ceil(steps / 100)))
    chunk = max(1, min(chunk, steps))
    optimizer = optax.chain(aggregator, optax.adam(lr))
    runner = _make_chunk_runner(optimizer, steps, chunk)

    params = jnp.asarray(starts, jnp.float32)
    opt_state = jax.vmap(optimizer.init)(params)
    pieces = [np.asarray(starts, np.float32)[None]]
    t0 = time.perf_counter()
    with tqdm(total=steps, desc=f"{name:<28}", unit="step", disable=not progress) as bar:
        for first in range(0, steps, chunk):
            params, opt_state, traj = runner(params, opt_state, first)
            n = min(chunk, steps - first)
            pieces.append(np.asarray(traj[:n]))
            bar.update(n)
    seconds = time.perf_counter() - t0
    traj = np.concatenate(pieces, axis=0)
    final = np.asarray(params, np.float64)
    final_losses = np.asarray(jax.vmap(toy_losses)(jnp.asarray(final, jnp.float32)), np.float64)
    return {
        "traj": traj,
        "final": final,
        "final_losses": final_losses,
        "opt_state": opt_state,
        "seconds": seconds,
    }


def _diagnostic(opt_state: Any, key: str, num_starts: int) -> list[float] | None:
    """Read a scalar diagnostic (e.g. ``"gain"``) per start from the optimiser state, if present."""
    try:
        value = optax.tree.get(opt_state, key)
    except KeyError:  # several entries with that name: not a diagnostic we can show
        return None
    if value is None:
        return None
    value = np.asarray(value, np.float64)
    if value.shape != (num_starts,):
        return None
    return [_num(v) for v in value]


# --------------------------------------------------------------------------------------------------
# Plot, table, entry point
# --------------------------------------------------------------------------------------------------


def _plot(
    results: Mapping[str, Mapping[str, Any]],
    starts: np.ndarray,
    pareto: np.ndarray,
    path: Path,
    steps: int,
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lim = 11.0
    grid = np.linspace(-lim, lim, 301)
    xx, yy = np.meshgrid(grid, grid)
    pts = jnp.asarray(np.stack([xx.ravel(), yy.ravel()], 1), jnp.float32)
    mean_loss = np.asarray(jax.vmap(toy_losses)(pts)).mean(1).reshape(xx.shape)

    levels = np.linspace(-15.0, 7.5, 19)
    colors = ["tab:red", "tab:orange", "tab:cyan"]
    n = len(results)
    ncols = min(n, PANELS_PER_ROW)
    nrows = -(-n // ncols)
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(5.0 * ncols + 1.0, 6.0 * nrows), squeeze=False, layout="constrained"
    )
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    for ax, (name, res) in zip(axes.flat, results.items(), strict=False):
        cs = ax.contour(xx, yy, mean_loss, levels=levels, cmap="viridis", linewidths=1.0)
        ax.plot(pareto[:, 0], pareto[:, 1], color="0.45", lw=6, alpha=0.7, zorder=1)
        ax.plot([], [], color="0.45", lw=6, alpha=0.7, label="Pareto set")
        traj = res["traj"]
        stride = max(1, traj.shape[0] // 4000)
        for s in range(traj.shape[1]):
            path_s = np.concatenate([traj[::stride, s], traj[-1:, s]])
            verdict = "Pareto" if res["rows"][s]["reached_pareto"] else "not Pareto"
            ax.plot(path_s[:, 0], path_s[:, 1], "-", color=colors[s % 3], lw=1.6, zorder=3)
            ax.plot(*starts[s], "o", color="k", ms=7, zorder=4)
            finite = np.flatnonzero(np.isfinite(traj[:, s]).all(-1))
            ax.plot(
                *traj[finite[-1], s],
                "*",
                ms=15,
                mec="k",
                color=colors[s % 3],
                zorder=5,
                label=f"start ({starts[s][0]:g}, {starts[s][1]:g}) -> {verdict}",
            )
        ax.set_title(name)
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
        ax.set_aspect("equal")
        ax.set_xlabel("$x_1$")
        ax.set_ylabel("$x_2$")
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.11), fontsize=8, frameon=False)
    fig.suptitle(
        f"CAGrad toy: contours of (f1 + f2) / 2, Adam lr={LR:g}, {steps} steps "
        "(o = start, * = end)",
        fontsize=11,
    )
    fig.colorbar(cs, ax=axes.ravel().tolist(), shrink=0.75 / nrows, label="(f1 + f2) / 2")
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _num(v: float) -> float | None:
    """A float for JSON: NaN and infinities become ``None`` (JSON has no such numbers)."""
    v = float(v)
    return v if math.isfinite(v) else None


def _fmt(v: float | None, spec: str) -> str:
    return "nan" if v is None else format(v, spec)


def _format_table(rows: Sequence[Mapping[str, Any]], tol: float) -> str:
    head = (
        f"{'method':<28} {'start':<13} {'on Pareto':<9} {'dist':>8} {'cos(g1,g2)':>10} "
        f"{'final f1':>9} {'final f2':>9} {'final x':>18}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        start = f"({r['start'][0]:g}, {r['start'][1]:g})"
        fx = f"({_fmt(r['final_x'][0], '.3f')}, {_fmt(r['final_x'][1], '.3f')})"
        lines.append(
            f"{r['method']:<28} {start:<13} {'yes' if r['reached_pareto'] else 'no':<9} "
            f"{_fmt(r['dist_to_pareto'], '.4f'):>8} {_fmt(r['cos_g1_g2'], '.4f'):>10} "
            f"{_fmt(r['final_f1'], '.4f'):>9} {_fmt(r['final_f2'], '.4f'):>9} {fx:>18}"
        )
    lines.append(f"on Pareto: Euclidean distance to the (numerical) Pareto set < {tol:g}")
    return "\n".join(lines)


def run_demo(
    out: str | Path = "outputs/toy",
    steps: int = DEFAULT_STEPS,
    *,
    seed: int = 0,
    start_noise: float = 0.0,
    chunk: int | None = None,
    tol: float = PARETO_TOL,
    methods: Mapping[str, optax.GradientTransformation] | None = None,
    progress: bool = True,
    verbose: bool = True,
) -> dict[str, Any]:
    """Run every method from the three start points; write the PNG and JSON into ``out``.

    ``start_noise`` > 0 perturbs the start points with Gaussian noise of that standard deviation
    drawn from ``seed`` (0, the default, reproduces the reference starts exactly). Returns the
    summary written to JSON, with the paths of both files under ``"png"`` and ``"json"``.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    starts = np.asarray(STARTS, np.float64)
    if start_noise > 0:
        noise = jax.random.normal(jax.random.key(seed), starts.shape, jnp.float32)
        starts = starts + start_noise * np.asarray(noise, np.float64)
    methods = default_methods() if methods is None else methods
    pareto = pareto_set()

    results: dict[str, dict[str, Any]] = {}
    rows: list[dict[str, Any]] = []
    for name, aggregator in methods.items():
        res = run_method(name, aggregator, starts, steps, chunk=chunk, progress=progress)
        dist = distance_to_set(res["final"], pareto)
        cos = gradient_cosine(res["final"])
        gains = _diagnostic(res["opt_state"], "gain", len(starts))
        fusions = _diagnostic(res["opt_state"], "fusion", len(starts))
        res["rows"] = []
        for s in range(len(starts)):
            row = {
                "method": name,
                "start": [float(v) for v in starts[s]],
                "reached_pareto": bool(np.isfinite(dist[s]) and dist[s] < tol),
                "dist_to_pareto": _num(dist[s]),
                "cos_g1_g2": _num(cos[s]),
                "final_f1": _num(res["final_losses"][s, 0]),
                "final_f2": _num(res["final_losses"][s, 1]),
                "final_x": [_num(v) for v in res["final"][s]],
                "last_gain": None if gains is None else gains[s],
                "last_fusion": None if fusions is None else fusions[s],
                "seconds_all_starts": res["seconds"],
            }
            res["rows"].append(row)
            rows.append(row)
        results[name] = res

    png = out / "toy_trajectories.png"
    js = out / "toy_results.json"
    _plot(results, starts, pareto, png, steps)
    summary = {
        "problem": "CAGrad two-objective toy (Liu et al., NeurIPS 2021)",
        "optimizer": {"name": "adam", "lr": LR},
        "steps": steps,
        "seed": seed,
        "start_noise": start_noise,
        "pareto_criterion": f"Euclidean distance to the numerical Pareto set < {tol:g}",
        "pareto_x2_range": [float(pareto[:, 1].min()), float(pareto[:, 1].max())],
        "rows": rows,
        "png": str(png),
        "json": str(js),
    }
    js.write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    if verbose:
        print(_format_table(rows, tol))
        print(f"wrote {png}\nwrote {js}")
    return summary


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        prog="python -m examples.toy",
        description="CAGrad's two-objective toy: multi-task aggregators, each chained with Adam.",
    )
    parser.add_argument("--steps", type=int, default=None, help=f"default {DEFAULT_STEPS}")
    parser.add_argument("--quick", action="store_true", help="2000 steps (for CI / smoke tests)")
    parser.add_argument("--out", default="outputs/toy", help="output folder (default outputs/toy)")
    parser.add_argument("--seed", type=int, default=0, help="seed for --start-noise")
    parser.add_argument(
        "--start-noise", type=float, default=0.0, help="std of Gaussian jitter on the starts"
    )
    parser.add_argument("--chunk", type=int, default=None, help="steps per jitted call")
    parser.add_argument("--tol", type=float, default=PARETO_TOL, help="Pareto distance tolerance")
    parser.add_argument(
        "--methods",
        choices=sorted(METHOD_SETS),
        default="default",
        help="default: LS, CAGrad and CAME-Grad; all: every Gram weighting",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    args = parser.parse_args(argv)
    steps = args.steps if args.steps is not None else (2000 if args.quick else DEFAULT_STEPS)
    if steps < 1:
        parser.error("--steps must be >= 1")
    return run_demo(
        args.out,
        steps,
        seed=args.seed,
        start_noise=args.start_noise,
        chunk=args.chunk,
        tol=args.tol,
        methods=METHOD_SETS[args.methods](),
        progress=not args.no_progress,
    )
