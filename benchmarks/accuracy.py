"""How far each Gram weighting's float32 update lies from an independent float64 solve.

For every weighting, sampled Jacobians (K in {2, 3, 5, 8, 16}; full-rank, conflicting and, where
the method is defined there, rank-deficient) go through the jitted weighting on the float32 Gram
matrix, and the update d = Jᵀc is compared with the one from the float64 references of the test
suite (``tests/references.py``: cvxpy/Clarabel QPs, scipy least squares polished by Newton,
explicit-gradient PCGrad/GradVac loops, SVD and pseudo-inverse closed forms), which share no code
with the library.

The error is ``‖d − d_ref‖ / ‖d_ref‖`` (with a floor of 1e-3 Σ|c_i|‖g_i‖ in the denominator, so
that complete cancellation does not divide by round-off), and also ``‖d − d_ref‖ / Σ|c_i|‖g_i‖``,
against the size of the terms that cancel, which float32 round-off is proportional to. Run::

    python -m benchmarks.accuracy [--quick] [--out outputs/benchmarks/accuracy.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import reference as ref
from helpers import full_rank_jacobian
from references import (
    aligned_reference,
    cagrad_ref,
    config_np,
    fairgrad_np,
    gradvac_np,
    imtl_paper,
    min_norm_reference,
    nash_np,
    pcgrad_ref,
    project_ref,
    upgrad_ref,
)

import camegrad_jax as cg

Reference = Callable[[np.ndarray, Any], np.ndarray]  # (J, our final state) -> d_ref


def _coeff_ref(solve: Callable[[np.ndarray], np.ndarray]) -> Reference:
    """A reference given as coefficients of the Gram matrix, turned into an update."""
    return lambda jac, state: jac.T @ solve(jac)


def _mean(k: int) -> np.ndarray:
    return np.full(k, 1.0 / k)


#: name -> (weighting, static solver description, reference, defined on rank-deficient J).
METHODS: dict[str, tuple[cg.Weighting, str, Reference, bool]] = {
    "came": (
        cg.weightings.came(),
        "K=2 closed form; K>2 PDHG 2000 it. + 8 active-set rounds",
        _coeff_ref(lambda j: ref.came_coefficients(j @ j.T)["coeffs"]),
        True,
    ),
    "mgda": (
        cg.weightings.mgda(),
        "Frank-Wolfe 250 it. + exact active-set finish",
        _coeff_ref(lambda j: min_norm_reference(j @ j.T)),
        True,
    ),
    "upgrad": (
        cg.weightings.upgrad(),
        "K projected-gradient QPs (100 it.) + active-set finish",
        _coeff_ref(lambda j: upgrad_ref(j @ j.T, _mean(len(j)))),
        True,
    ),
    "dualproj": (
        cg.weightings.dualproj(),
        "projected-gradient QP (100 it.) + active-set finish",
        _coeff_ref(lambda j: project_ref(j @ j.T, _mean(len(j)))),
        True,
    ),
    "cagrad": (
        cg.weightings.cagrad(),
        "as came (same dual on the simplex)",
        _coeff_ref(lambda j: cagrad_ref(j, 0.5, 1)),
        True,
    ),
    "pcgrad": (
        cg.weightings.pcgrad(),
        "K sequential projections in Gram space",
        lambda j, state: pcgrad_ref(j, np.asarray(state.orders)),
        True,
    ),
    "gradvac": (
        cg.weightings.gradvac(),
        "K sequential corrections in Gram space",
        lambda j, state: gradvac_np(j, np.zeros((len(j), len(j))), np.asarray(state.order), 0.01)[
            0
        ],
        True,
    ),
    "nash_mtl": (
        cg.weightings.nash_mtl(max_norm=0.0),
        "damped Newton, 20 it. x 8 backtracks",
        _coeff_ref(lambda j: nash_np(j @ j.T)),
        False,
    ),
    "fairgrad": (
        cg.weightings.fairgrad(),
        "damped Newton, 20 it. x 8 backtracks",
        _coeff_ref(lambda j: fairgrad_np(j @ j.T, 1.0)),
        False,
    ),
    "imtl_g": (cg.weightings.imtl_g(), "closed form", _coeff_ref(imtl_paper), False),
    "aligned_mtl": (
        cg.weightings.aligned_mtl(),
        "closed form (eigh)",
        _coeff_ref(lambda j: aligned_reference(j, "min")),
        False,
    ),
    "config": (
        cg.weightings.config(),
        "closed form (eigh pseudo-inverse)",
        lambda j, state: config_np(j),
        True,
    ),
}


def jacobians(k: int, seeds: int, rank_deficient: bool) -> list[tuple[str, np.ndarray]]:
    rng = np.random.default_rng(1000 + k)
    dim = 2 * k + 2
    cases = [(f"full-rank-{s}", full_rank_jacobian(rng, k)) for s in range(seeds)]
    cases += [(f"conflicting-{s}", ref.conflicting_jacobian(rng, k, dim)) for s in range(seeds)]
    if rank_deficient and k >= 3:
        cases += [
            (f"rank-{k // 2}-{s}", ref.sample_jacobian(rng, k, dim, k // 2)) for s in range(seeds)
        ]
    return cases


def measure(name: str, ks: tuple[int, ...], seeds: int) -> dict[str, Any]:
    weighting, solver, reference, rank_deficient = METHODS[name]
    step = jax.jit(weighting.weigh)
    worst, worst_case, count, worst_reach = 0.0, "", 0, 0.0
    t0 = time.perf_counter()
    for k in ks:
        for case, jac in jacobians(k, seeds, rank_deficient):
            gram = cg.gramian(jnp.asarray(jac, jnp.float32))
            coeffs, state = step(gram, weighting.init(k))
            ours = np.asarray(coeffs, np.float64)
            expected = reference(jac, state)
            reach = max(float(np.abs(ours) @ np.linalg.norm(jac, axis=1)), 1e-300)
            gap = float(np.linalg.norm(jac.T @ ours - expected))
            error = gap / max(float(np.linalg.norm(expected)), 1e-3 * reach)
            count += 1
            worst_reach = max(worst_reach, gap / reach)
            if not error <= worst:  # NaN counts as the worst
                worst, worst_case = error, f"K={k} {case}"
    return {
        "method": name,
        "solver": solver,
        "cases": count,
        "worst_relative_error": worst,
        "worst_case": worst_case,
        "worst_error_vs_reach": worst_reach,
        "seconds": time.perf_counter() - t0,
    }


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.accuracy", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="K in {2, 3}, one seed (CI)")
    parser.add_argument(
        "--out",
        default="outputs/benchmarks/accuracy.json",
        help="JSON results (default outputs/benchmarks/accuracy.json)",
    )
    parser.add_argument(
        "--methods",
        nargs="*",
        default=list(METHODS),
        choices=list(METHODS),
        help="weightings to check (default: all)",
    )
    args = parser.parse_args(argv)
    ks, seeds = ((2, 3), 1) if args.quick else ((2, 3, 5, 8, 16), 4)
    rows = []
    print(
        f"{'method':<12} {'cases':>5} {'vs |d_ref|':>11} {'vs reach':>9}  {'worst case':<22} solver"
    )
    for name in args.methods:
        row = measure(name, ks, seeds)
        rows.append(row)
        print(
            f"{name:<12} {row['cases']:>5} {row['worst_relative_error']:>11.2e} "
            f"{row['worst_error_vs_reach']:>9.2e}  "
            f"{row['worst_case']:<22} {row['solver']}"
        )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"device": str(jax.devices()[0]), "jax": jax.__version__, "ks": ks, "seeds": seeds}
    out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {out}")
    return rows


if __name__ == "__main__":
    main()
