"""What CAME-Grad's stage-1 primal–dual iterations buy: accuracy against cost, per iteration count.

Above ``DualSolver.enumerate_up_to`` (K > 8) the stage-1 dual is solved by
``DualSolver(pdhg_iters, active_set_rounds)``: primal–dual iterations, then exact active-set
rounds. Here that iterative path is forced for every K (``enumerate_up_to=2``; the exact
enumeration is compared with it by ``python -m benchmarks.device``). For each iteration count,
the float32 solver runs on
the test suite's stage-1 cases (``tests/stage1_cases.py``: K in {2, 3, 5, 16, 64}, every rank,
conflicting, Pareto-stationary and weighted Jacobians, ρ in {0.5, 2}); its dual objective is
compared with the float64 oracle (``tests/reference.py``, Clarabel, polished) as a relative gap.
Cases are split by where the optimum lies: at the dual's kink (g_w* = 0, which float32 resolves
only coarsely) or where it is smooth (the active set finishes those exactly). The cost is the
median time of the jitted ``weightings.came().weigh`` at K = 4 and K = 16 on the synthetic
conflicting Jacobian of ``benchmarks/_timing.py``, timed round-robin. Run::

    python -m benchmarks.stage1_iterations [--quick] [--budget S]
        [--out outputs/benchmarks/stage1_iterations.json]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import jax.numpy as jnp

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from stage1_cases import CASES, RHOS

import camegrad_jax as cg
from benchmarks import _stage1
from benchmarks import _timing as timing

ITERS = (250, 500, 1000, 2000)
TIMED_KS = (4, 16)


def _iterative(pdhg_iters: int) -> cg.DualSolver:
    """The iterative stage-1 solver with ``pdhg_iters`` iterations, for every K."""
    return cg.DualSolver(pdhg_iters=pdhg_iters, enumerate_up_to=2)


def worst_gaps(iters: tuple[int, ...], cases: list[Any]) -> dict[int, dict[str, float]]:
    """Per iteration count, the worst relative gap on smooth and on kink cases."""
    solved = _stage1.problems([(jac, weights) for _, jac, weights in cases], RHOS)
    return {n: _stage1.worst_gaps(_stage1.dual(_iterative(n)), solved) for n in iters}


def solve_times(iters: tuple[int, ...], ks: tuple[int, ...], budget: float) -> dict[int, dict]:
    """Median ms of the jitted CAME-Grad weigh per K and iteration count."""
    times = {}
    for k in ks:
        jac = timing.jacobian_matrix(timing.make_jacobian(k, 4 * k))
        gram = jnp.asarray(jac @ jac.T, jnp.float32)
        fns = {}
        for n in iters:
            weigh = timing.weigh_fn(cg.weightings.came(solver=_iterative(n)), k)
            fns[str(n)] = lambda weigh=weigh, gram=gram: weigh(gram)
        times[k] = timing.interleaved_times(fns, budget_s=budget)
    return times


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.stage1_iterations", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--quick", action="store_true", help="K ≤ 5 cases, two counts (CI)")
    parser.add_argument(
        "--out",
        default="outputs/benchmarks/stage1_iterations.json",
        help="JSON results (default outputs/benchmarks/stage1_iterations.json)",
    )
    parser.add_argument("--budget", type=float, default=2.0, help="timing seconds per K")
    args = parser.parse_args(argv)
    iters = (250, 2000) if args.quick else ITERS
    cases = [c for c in CASES if c[1].shape[0] <= 5] if args.quick else CASES
    gaps = worst_gaps(iters, cases)
    times = solve_times(iters, TIMED_KS, args.budget)
    print(timing.machine()["cpu_model"], f"{len(cases) * len(RHOS)} stage-1 problems")
    header = "".join(f"  weigh ms K={k:<3}" for k in TIMED_KS)
    print(f"{'pdhg_iters':>10}  {'worst gap smooth':>16}  {'worst gap kink':>14}{header}")
    for n in iters:
        cells = "".join(f"  {times[k][str(n)]['median_ms']:>14.3f}" for k in TIMED_KS)
        print(f"{n:>10}  {gaps[n]['smooth']:>16.2e}  {gaps[n]['kink']:>14.2e}{cells}")
    payload = {
        "meta": {**timing.machine(), "problems": len(cases) * len(RHOS), "timed_ks": TIMED_KS},
        "rows": [
            {
                "pdhg_iters": n,
                "worst_gap_smooth": gaps[n]["smooth"],
                "worst_gap_kink": gaps[n]["kink"],
                "weigh": {str(k): times[k][str(n)] for k in TIMED_KS},
            }
            for n in iters
        ],
    }
    print(f"wrote {timing.write_json(args.out, payload)}")
    return payload


if __name__ == "__main__":
    main()
