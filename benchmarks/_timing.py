"""Shared helpers of the timing benchmarks: synthetic Jacobians, interleaved timing, metadata.

Used by ``benchmarks/aggregators.py`` and ``benchmarks/scaling.py``:

* [`make_jacobian`][] builds a stacked Jacobian of exactly K tasks and P parameters in three
  leaves of different shapes (a kernel, a vector, a small bias), with conflicting tasks;
* [`interleaved_times`][] times several zero-argument callables round-robin (one call of each
  per round, so that load from other processes on a shared machine hits all of them alike) and
  returns per-call seconds, from which medians and ratios are taken;
* [`update_fn`][], [`weigh_fn`][] and [`plain_sum_fn`][] are the jitted callables timed;
* [`machine`][] describes the host, [`fit_slope`][] fits a log-log slope and [`write_json`][]
  writes the results.
"""

from __future__ import annotations

import gc
import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import camegrad_jax as cg

#: Share of P in the kernel and vector leaves; the bias leaf gets the rest.
_KERNEL_SHARE, _VECTOR_SHARE = 0.6, 0.35
_KERNEL_COLUMNS = 64


def leaf_shapes(p: int) -> dict[str, tuple[int, ...]]:
    """Per-task shapes of the three leaves (kernel ``(r, 64)``, vector, bias) summing to ``p``."""
    if p < 3:
        raise ValueError(f"P must be at least 3 (one entry per leaf), got {p}.")
    cols = _KERNEL_COLUMNS if p >= 4 * _KERNEL_COLUMNS else 1
    kernel = max(1, int(_KERNEL_SHARE * p) // cols) * cols
    vector = max(1, int(_VECTOR_SHARE * p))
    bias = p - kernel - vector
    if bias < 1:
        vector += bias - 1
        bias = 1
    return {"kernel": (kernel // cols, cols), "vector": (vector,), "bias": (bias,)}


def make_jacobian(k: int, p: int, *, seed: int = 0, dtype: Any = jnp.float32) -> dict[str, Any]:
    r"""A stacked Jacobian with K tasks and P parameters in total, with conflicting tasks.

    Row k is $g_k = s_k (\sigma_k u + v_k)$: a direction $u$ shared by all tasks with sign
    $\sigma_k = \pm 1$ alternating (so that half the tasks conflict with the other half), a
    task-specific part $v_k$ (independent standard normal), and magnitudes $s_k$ spread
    log-uniformly over [0.1, 10]. Drawn with numpy on the host (no compilation) and put on the
    default device.
    """
    if k < 1:
        raise ValueError(f"K must be at least 1, got {k}.")
    rng = np.random.default_rng(seed)
    signs = np.where(np.arange(k) % 2 == 0, 1.0, -1.0).astype(np.float32)
    scales = np.logspace(-1.0, 1.0, k).astype(np.float32) if k > 1 else np.ones(1, np.float32)
    jac = {}
    for name, shape in leaf_shapes(p).items():
        bcast = (k,) + (1,) * len(shape)
        leaf = rng.standard_normal((k, *shape), dtype=np.float32)
        leaf += signs.reshape(bcast) * rng.standard_normal(shape, dtype=np.float32)[None]
        leaf *= scales.reshape(bcast)
        jac[name] = jax.device_put(leaf.astype(dtype, copy=False))
    return jac


def jacobian_size(jac: Any) -> tuple[int, int]:
    """(K, P) of a stacked Jacobian."""
    leaves = jax.tree.leaves(jac)
    return int(leaves[0].shape[0]), sum(int(np.prod(leaf.shape[1:])) for leaf in leaves)


def jacobian_matrix(jac: Any) -> np.ndarray:
    """The Jacobian as one ``(K, P)`` host array (row k is task k's flattened gradient)."""
    k, _ = jacobian_size(jac)
    return np.concatenate([np.asarray(leaf).reshape(k, -1) for leaf in jax.tree.leaves(jac)], 1)


def update_fn(tx: Any, jac: Any) -> Callable[[], Any]:
    """The jitted ``tx.update(jac, state)`` of a transformation such as ``cg.mgda(num_tasks=K)``.

    For the library's transformations this is the whole data path: Gram matrix, weighting,
    combination.
    """
    state = tx.init(None)
    step = jax.jit(tx.update)
    return lambda: step(jac, state)


def weigh_fn(weighting: cg.Weighting, k: int) -> Callable[[Any], Any]:
    """The jitted ``weighting.weigh(gram, state)`` alone, as a function of the Gram matrix.

    Compiled once per K (the Gram matrix's shape), whatever P.
    """
    state = weighting.init(k)
    step = jax.jit(lambda g, s: weighting.weigh(g, s, jacobian_scale=jnp.ones((), g.dtype)))
    return lambda gram: step(gram, state)


@jax.jit
def _ones_sum(jac: Any) -> Any:
    ones = jnp.ones((jacobian_size(jac)[0],), jnp.float32)
    return jax.tree.map(lambda leaf: jnp.tensordot(ones, leaf, axes=1), jac)


@jax.jit
def _reduce_sum(jac: Any) -> Any:
    return jax.tree.map(lambda leaf: leaf.sum(0), jac)


def plain_sum_fn(jac: Any, *, reduce: bool = False) -> Callable[[], Any]:
    """The baseline: a jitted plain sum over the task axis, with no Gram matrix and no solve.

    By default written ``tensordot(ones(K), leaf, axes=1)``, the fastest plain sum on XLA:CPU.
    With ``reduce=True`` it is ``jax.tree.map(lambda l: l.sum(0), jac)``, which XLA:CPU lowers
    to a reduction over the leading (major) axis that is 10-60x slower on this JAX version, so
    that it is reported next to the baseline but never used as one.
    """
    fn = _reduce_sum if reduce else _ones_sum
    return lambda: fn(jac)


def interleaved_times(
    fns: dict[str, Callable[[], Any]],
    *,
    budget_s: float = 1.0,
    min_repeats: int = 5,
    max_repeats: int = 200,
) -> dict[str, dict[str, Any]]:
    """Times the callables round-robin and returns, per name, the per-call seconds and summary.

    Each callable is first called once (compilation; its time is reported as
    ``first_call_s``) and once more to estimate its cost; then rounds of one call of each are
    timed (``jax.block_until_ready`` on the result) until ``budget_s`` is spent, with at least
    ``min_repeats`` and at most ``max_repeats`` rounds. A callable that raises gets an
    ``error`` string instead of times. Python's garbage collector is off while timing.
    """
    results: dict[str, dict[str, Any]] = {}
    live: dict[str, Callable[[], Any]] = {}
    for name, fn in fns.items():
        try:
            t0 = time.perf_counter()
            jax.block_until_ready(fn())
            first = time.perf_counter() - t0
            t0 = time.perf_counter()
            jax.block_until_ready(fn())
            results[name] = {"first_call_s": first, "estimate_s": time.perf_counter() - t0}
            live[name] = fn
        except Exception as error:  # recorded, e.g. a missing optional solver
            results[name] = {"error": f"{type(error).__name__}: {error}"[:500]}
    per_round = sum(results[name]["estimate_s"] for name in live)
    repeats = int(min(max_repeats, max(min_repeats, budget_s // max(per_round, 1e-9))))
    times: dict[str, list[float]] = {name: [] for name in live}
    gc.collect()
    gc.disable()
    try:
        for _ in range(repeats):
            for name, fn in live.items():
                t0 = time.perf_counter()
                jax.block_until_ready(fn())
                times[name].append(time.perf_counter() - t0)
    finally:
        gc.enable()
    for name, ts in times.items():
        results[name].pop("estimate_s")
        results[name].update(
            median_ms=1e3 * statistics.median(ts),
            min_ms=1e3 * min(ts),
            iqr_ms=1e3 * float(np.subtract(*np.percentile(ts, [75, 25]))),
            repeats=len(ts),
        )
    for name in results:
        results[name].pop("estimate_s", None)
    return results


def fit_slope(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Least-squares slope of ``log y`` against ``log x``."""
    slope, _ = np.polyfit(np.log(np.asarray(xs, float)), np.log(np.asarray(ys, float)), 1)
    return float(slope)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict[str, Any]:
    """The host and library versions, recorded with every result."""
    return {
        "device": str(jax.devices()[0]),
        "platform": jax.devices()[0].platform,
        "cpu_model": cpu_model(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "load_average": os.getloadavg(),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "camegrad_jax": cg.__version__,
    }


def write_json(path: str | Path, payload: dict[str, Any]) -> Path:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    return out


def fmt_p(p: int) -> str:
    """1e+05-style label of a parameter count."""
    return f"{p:.0e}".replace("e+0", "e")
