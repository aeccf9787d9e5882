"""How much slower an un-jitted aggregation step is than the same step under ``jax.jit``.

Eager JAX dispatches every small K×K operation of the weighting (the stage-1 solver's
iterations, the three stages) one by one from Python; under ``jax.jit`` they are one compiled
program. Timed: ``optax.chain(cg.came_grad(num_tasks=K), optax.adam(1e-3)).update`` on a
synthetic Jacobian, eager and jitted, round-robin; reported: the medians and their ratio.
Run::

    python -m benchmarks.eager [--ks 2 8] [--p 100000] [--budget 2]
                               [--out outputs/benchmarks/eager.json]
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

import jax
import optax

import camegrad_jax as cg
from benchmarks._timing import interleaved_times, machine, make_jacobian, write_json


def measure(k: int, p: int, budget_s: float = 2.0) -> dict[str, Any]:
    """Median eager and jitted step times (ms) for K tasks and P parameters, and their ratio."""
    jac = make_jacobian(k, p)
    params = jax.tree.map(lambda leaf: leaf[0], jac)
    tx = optax.chain(cg.came_grad(num_tasks=k), optax.adam(1e-3))
    state = tx.init(params)
    jitted = jax.jit(tx.update)
    times = interleaved_times(
        {
            "eager": lambda: tx.update(jac, state, params),
            "jit": lambda: jitted(jac, state, params),
        },
        budget_s=budget_s,
        min_repeats=3,
    )
    eager, jit = times["eager"]["median_ms"], times["jit"]["median_ms"]
    return {"k": k, "p": p, "eager_ms": eager, "jit_ms": jit, "ratio": eager / jit}


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ks", type=int, nargs="+", default=[2, 8], help="numbers of tasks K")
    parser.add_argument("--p", type=int, default=100_000, help="parameters P of the Jacobian")
    parser.add_argument("--budget", type=float, default=2.0, help="timing seconds per K")
    parser.add_argument(
        "--out",
        default="outputs/benchmarks/eager.json",
        help="JSON results (default outputs/benchmarks/eager.json)",
    )
    args = parser.parse_args(argv)
    rows = [measure(k, args.p, args.budget) for k in args.ks]
    for row in rows:
        print(
            f"K={row['k']:3d} P={row['p']}: eager {row['eager_ms']:9.2f} ms, "
            f"jit {row['jit_ms']:7.3f} ms, ratio {row['ratio']:7.0f}x"
        )
    payload = {"machine": machine(), "rows": rows}
    write_json(args.out, payload)
    return payload


if __name__ == "__main__":
    main()
