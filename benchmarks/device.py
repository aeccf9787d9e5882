"""What a training step costs on whatever backend JAX finds (CPU, GPU or TPU), in one command.

Four tables, each with the sequential kernel launches and while loops of the compiled program
(``benchmarks/_hlo.py``: an estimate read from XLA's optimised HLO, the number that matters on
an accelerator, where every launch costs microseconds; ``launches`` counts each conditional's
costliest branch, ``fewest_launches`` its cheapest, the path of a step with no rare branch
taken):

1. **stage 1**: the jitted CAME-Grad weighting per K with the iterative solver (primal–dual
   splitting and active set, ``DualSolver(enumerate_up_to=2)``, the only one before support
   enumeration) and the exact one (``DualSolver()``, support enumeration for K ≤ 8), side by
   side: launches, while loops, µs per call, and the worst relative stage-1 gap against the
   float64 oracle (``tests/reference.py``), away from and at the dual's kink;
2. **solve**: every weighting's K×K solve (``weigh`` on the Gram matrix) for K = 2, 4, 8;
3. **RRG step**: the RRG demo model's jitted train step (``benchmarks/train_step.py``) with
   LS, the full Jacobian + weighted sum, the same sum made to wait for the whole Jacobian
   (``jacobian_sum_synced``), and the full Jacobian + CAME-Grad, for K = 2, 4, 8 (task 0 the
   report loss, the 14-observation classification loss split into K − 1 groups of
   observations, task weights (1, 4/(K − 1), ...)); with the time to trace and compile it;
4. **MLP step**: the same four steps on a plain-JAX dense MLP (256→1024→1024→256 tanh, two
   256×1 regression heads, batch 512, 1.57M parameters, Adam after the aggregation; K = 2).

``over_sum`` is a step's time over the plain sum's and ``over_synced`` over the synced sum's.
Any weighting whose coefficients depend on the whole Gram matrix has the synced sum's
barrier: no leaf's update, nor the optimizer's work on it, can start before the backward
pass has computed every leaf. The plain sum's can, and XLA overlaps them with the backward
pass where it runs independent kernels concurrently (on CPU); ``over_synced`` is what the
weighting adds beyond that barrier.

Timings are medians of calls interleaved round-robin after compilation. ``--quick`` (CI) runs
tiny sizes and few K. Run::

    python -m benchmarks.device [--quick] [--out outputs/benchmarks/device.json]
"""

from __future__ import annotations

import argparse
import functools
import itertools
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import reference as ref

import camegrad_jax as cg
from benchmarks import _stage1, aggregators, train_step
from benchmarks import _timing as timing
from benchmarks._hlo import compiled_counts, launch_counts
from examples.rrg.objectives import example_losses

SOLVERS = {"iterative": cg.DualSolver(enumerate_up_to=2), "enumeration": cg.DualSolver()}
STEP_METHODS = ("ls", "jacobian_sum", "jacobian_sum_synced", "jacobian_came")


# --- 1. stage 1 ------------------------------------------------------------------------------


def _stage1_cases(k: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """A conflicting, a rank-deficient and a Pareto-stationary (kink) problem with K tasks."""
    rng = np.random.default_rng(k)
    dim = 2 * k + 4
    return [
        (ref.conflicting_jacobian(rng, k, dim), rng.uniform(0.0, 4.0, k)),
        (ref.sample_jacobian(rng, k, dim, max(1, k // 2)), np.ones(k)),
        (ref.pareto_stationary_jacobian(rng, k, dim, on_face=True), np.ones(k)),
    ]


@functools.cache
def stage1_problems(k: int) -> list[_stage1.Problem]:
    """`_stage1_cases` at ρ = 0.5 and 2, solved by the float64 oracle."""
    return _stage1.problems(_stage1_cases(k), (0.5, 2.0))


def stage1(ks: Sequence[int], budget: float) -> list[dict[str, Any]]:
    rows = []
    for k in ks:
        solvers = dict(SOLVERS)
        if k > SOLVERS["enumeration"].enumerate_up_to:  # past the default: the crossover
            solvers["enumeration"] = cg.DualSolver(enumerate_up_to=k)
        gaps = {
            name: _stage1.worst_gaps(_stage1.dual(solver), stage1_problems(k))
            for name, solver in solvers.items()
        }
        jac = timing.jacobian_matrix(timing.make_jacobian(k, 4 * k))
        gram = jnp.asarray(jac @ jac.T, jnp.float32)
        fns, counts = {}, {}
        for name, solver in solvers.items():
            weighting = cg.weightings.came(solver=solver)
            counts[name] = compiled_counts(weighting.weigh, gram, weighting.init(k))
            weigh = timing.weigh_fn(weighting, k)
            fns[name] = lambda weigh=weigh, gram=gram: weigh(gram)
        times = timing.interleaved_times(fns, budget_s=budget)
        for name in solvers:
            rows.append({"k": k, "solver": name, **counts[name], **times[name], "gap": gaps[name]})
    return rows


# --- 2. every weighting's K×K solve ------------------------------------------------------------


def solves(ks: Sequence[int], methods: Sequence[str], budget: float) -> list[dict[str, Any]]:
    rows = []
    for k in ks:
        jac = timing.jacobian_matrix(timing.make_jacobian(k, 4 * k))
        gram = jnp.asarray(jac @ jac.T, jnp.float32)
        fns, counts = {}, {}
        for method in methods:
            weighting = aggregators.METHODS[method][1]()
            counts[method] = compiled_counts(
                lambda g, s, w=weighting: w.weigh(g, s, jacobian_scale=jnp.ones((), g.dtype)),
                gram,
                weighting.init(k),
            )
            weigh = timing.weigh_fn(weighting, k)
            fns[method] = lambda weigh=weigh, gram=gram: weigh(gram)
        times = timing.interleaved_times(fns, budget_s=budget)
        rows += [{"k": k, "method": m, **counts[m], **times[m]} for m in methods]
    return rows


# --- 3. the RRG model's train step -----------------------------------------------------------


def split_losses(num_tasks: int) -> Callable[..., Any]:
    """The report loss and the classification loss split into ``num_tasks - 1`` groups of
    observations (each the mean cross-entropy of its group), as ``(K,)`` task losses."""
    groups = np.array_split(np.arange(14), num_tasks - 1)

    def losses(model: Any, batch: dict) -> tuple[jax.Array, dict[str, Any]]:
        lm_sum, count, _, cls_logits = example_losses(model, batch)
        lm = jnp.sum(lm_sum) / jnp.maximum(jnp.sum(count), 1.0)
        ce = optax.softmax_cross_entropy_with_integer_labels(cls_logits, batch["labels"])
        cls = [jnp.mean(ce[:, group]) for group in groups]
        return jnp.stack([lm, *cls]), {}

    return losses


def rrg_steps(ks: Sequence[int], size: dict[str, int], budget: float) -> list[dict[str, Any]]:
    rows = []
    for k in ks:
        weights = (1.0, *[4.0 / (k - 1)] * (k - 1))
        fns, counts = {}, {}
        for method in STEP_METHODS:
            start = time.perf_counter()
            fns[method], compiled = train_step.make_step(method, size, split_losses(k), weights)
            counts[method] = {
                **launch_counts(compiled.as_text()),
                "compile_s": time.perf_counter() - start,
            }
        rows += _step_rows(fns, counts, budget, k=k, model="rrg")
    return rows


def _step_rows(
    fns: dict[str, Callable[[], Any]], counts: dict[str, dict], budget: float, **labels: Any
) -> list[dict[str, Any]]:
    times = timing.interleaved_times(fns, budget_s=budget)
    summed = times["jacobian_sum"]["median_ms"]
    synced = times["jacobian_sum_synced"]["median_ms"]
    return [
        {
            **labels,
            "method": m,
            **counts[m],
            **times[m],
            "over_sum": times[m]["median_ms"] / summed,
            "over_synced": times[m]["median_ms"] / synced,
        }
        for m in fns
    ]


# --- 4. a dense MLP ---------------------------------------------------------------------------


def mlp_steps(widths: Sequence[int], batch: int, budget: float) -> list[dict[str, Any]]:
    """LS and the Jacobian + sum (plain, synced) or + CAME-Grad on a tanh MLP with 2 heads."""
    rng = np.random.default_rng(0)
    layers = []
    for fan_in, fan_out in itertools.pairwise(widths):
        kernel = rng.standard_normal((fan_in, fan_out)) / np.sqrt(fan_in)
        layers.append({"w": jnp.asarray(kernel, jnp.float32), "b": jnp.zeros(fan_out)})
    heads = rng.standard_normal((2, widths[-1])) / np.sqrt(widths[-1])
    params = {"layers": layers, "heads": jnp.asarray(heads, jnp.float32)}
    x = jnp.asarray(rng.standard_normal((batch, widths[0])), jnp.float32)
    y = jnp.asarray(rng.standard_normal((batch, 2)), jnp.float32)

    def losses(p: Any) -> jax.Array:
        h = x
        for layer in p["layers"]:
            h = jnp.tanh(h @ layer["w"] + layer["b"][None])
        return jnp.mean((h @ p["heads"].T - y) ** 2, axis=0)

    weights = jnp.ones(2, jnp.float32)
    value_and_jac = cg.value_and_jacobian(losses)
    transforms = {
        "ls": optax.adam(1e-3),
        "jacobian_sum": optax.chain(train_step.weighted_sum((1.0, 1.0)), optax.adam(1e-3)),
        "jacobian_sum_synced": optax.chain(
            train_step.weighted_sum((1.0, 1.0), wait_for_all=True), optax.adam(1e-3)
        ),
        "jacobian_came": optax.chain(cg.came_grad(task_weights=weights), optax.adam(1e-3)),
    }
    fns, counts = {}, {}
    for method, tx in transforms.items():

        def step(p: Any, s: Any, tx: Any = tx, method: str = method) -> tuple[Any, Any]:
            if method == "ls":
                grads = jax.grad(lambda q: weights @ losses(q))(p)
            else:
                grads = value_and_jac(p)[1]
            updates, s = tx.update(grads, s, p)
            return optax.apply_updates(p, updates), s

        state = tx.init(params)
        jitted = jax.jit(step)
        start = time.perf_counter()
        compiled = jitted.lower(params, state).compile()
        counts[method] = {
            **launch_counts(compiled.as_text()),
            "compile_s": time.perf_counter() - start,
        }
        fns[method] = lambda jitted=jitted, state=state: jitted(params, state)
    size = sum(leaf.size for leaf in jax.tree.leaves(params))
    return _step_rows(fns, counts, budget, k=2, model="mlp", parameters=int(size))


# --- the command -------------------------------------------------------------------------------


def _print(title: str, rows: list[dict[str, Any]], columns: Sequence[str]) -> None:
    print(f"\n{title}")
    print("  ".join(f"{c:>14s}" for c in columns))
    for row in rows:
        cells = []
        for c in columns:
            value = row.get(c, "")
            if isinstance(value, float):
                cells.append(f"{value:>14.3g}")
            elif isinstance(value, dict):
                cells.append(f"{value['smooth']:>6.1e}/{value['kink']:<7.1e}")
            else:
                cells.append(f"{value!s:>14s}")
        print("  ".join(cells))


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.device", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes, few K (CI)")
    parser.add_argument(
        "--out",
        default="outputs/benchmarks/device.json",
        help="JSON results (default outputs/benchmarks/device.json)",
    )
    parser.add_argument("--budget", type=float, default=None, help="timing seconds per table row")
    args = parser.parse_args(argv)
    quick = args.quick
    budget = args.budget if args.budget is not None else (0.05 if quick else 2.0)
    step_ks = (2, 4) if quick else (2, 4, 8)
    stage1_ks = (3,) if quick else (3, 4, 6, 8, 10)
    solve_ks = (2, 4) if quick else (2, 4, 8)
    methods = ("came_grad", "mgda", "dualproj") if quick else tuple(aggregators.METHODS)
    size = train_step.SIZES["quick" if quick else "default"]
    widths, batch = ((64, 128, 128, 64), 64) if quick else ((256, 1024, 1024, 256), 512)

    payload: dict[str, Any] = {"meta": {**timing.machine(), "quick": quick}}
    payload["stage1"] = stage1(stage1_ks, budget)
    columns = (
        "k",
        "solver",
        "launches",
        "fewest_launches",
        "while_loops",
        "median_ms",
        "first_call_s",
        "gap",
    )
    _print("stage 1 (CAME-Grad weigh; gap smooth/kink)", payload["stage1"], columns)
    payload["solve"] = solves(solve_ks, methods, budget)
    columns = ("k", "method", "launches", "fewest_launches", "while_loops", "median_ms")
    _print("K×K solve (weigh)", payload["solve"], columns)
    payload["rrg_step"] = rrg_steps(step_ks, size, 4 * budget)
    columns = (
        "k",
        "method",
        "launches",
        "fewest_launches",
        "while_loops",
        "median_ms",
        "over_sum",
        "over_synced",
        "compile_s",
    )
    _print("RRG train step", payload["rrg_step"], columns)
    payload["mlp_step"] = mlp_steps(widths, batch, 4 * budget)
    _print(f"MLP train step {widths}, batch {batch}", payload["mlp_step"], columns)
    print(f"\n{payload['meta']['device']}; wrote {timing.write_json(args.out, payload)}")
    return payload


if __name__ == "__main__":
    main()
