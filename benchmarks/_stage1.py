"""Stage 1 as the benchmarks measure it: the jitted dual solve and its gap to the float64 oracle.

The gap of a solution $w$ is $(f(w) - f^\\star) / s$: the dual objective
$f(w) = b^\\top w + r\\|Lw\\|$ evaluated in float64, minus the oracle's optimum
(``tests/reference.py``: Clarabel, polished), over an upper bound $s$ on $|f|$ over the
simplex (``tests/stage1_cases.py``).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import reference as ref
from stage1_cases import at_kink, normalised_problem, objective_scale

import camegrad_jax as cg
from camegrad_jax._numerics import psd_sqrt
from camegrad_jax._precision import float32_products
from camegrad_jax._solvers._conflict_dual import solve_conflict_dual


class Problem(NamedTuple):
    """A normalised stage-1 problem, the oracle's optimum and where it lies ("smooth"/"kink")."""

    gram_hat: np.ndarray
    weights: np.ndarray
    rho: float
    best: float
    kind: str


def problems(
    cases: Iterable[tuple[np.ndarray, np.ndarray]], rhos: Iterable[float]
) -> list[Problem]:
    """Every ``(jacobian, task_weights)`` case at every ρ, solved by the float64 oracle."""
    out = []
    for jac, task_weights in cases:
        for rho in rhos:
            gram_hat, weights = normalised_problem(jac, task_weights)
            w_ref, best = ref.solve_dual(gram_hat, weights, rho)
            kind = "kink" if at_kink(gram_hat, w_ref) else "smooth"
            out.append(Problem(gram_hat, weights, rho, best, kind))
    return out


def dual(solver: cg.DualSolver, *, float32: bool = True) -> Callable[..., jax.Array]:
    """Jitted ``(gram_hat, weights, rho) -> w``: stage 1's solution from uniform weights.

    Its products are float32 as `Weighting.weigh` runs them; ``float32=False`` leaves them at
    the backend's default (`benchmarks.product_precision`).
    """

    def solve(gram_hat: jax.Array, weights: jax.Array, rho: jax.Array) -> jax.Array:
        factor = psd_sqrt(gram_hat)
        radius = rho * jnp.linalg.norm(factor @ weights)
        w0 = jnp.full(weights.shape, 1.0 / weights.shape[0], gram_hat.dtype)
        return solve_conflict_dual(gram_hat, factor, gram_hat @ weights, radius, w0, solver)[0]

    return jax.jit(float32_products(solve) if float32 else solve)


def worst_gaps(solve: Callable[..., jax.Array], cases: Iterable[Problem]) -> dict[str, float]:
    """The worst gap of ``solve`` (as `dual`'s) away from the kink and at it."""
    gaps = {"smooth": 0.0, "kink": 0.0}
    for p in cases:
        args = (jnp.asarray(p.gram_hat, jnp.float32), jnp.asarray(p.weights, jnp.float32))
        w = np.asarray(solve(*args, jnp.float32(p.rho)), np.float64)
        scale = objective_scale(p.gram_hat, p.weights, p.rho)
        gap = (ref.dual_objective(p.gram_hat, p.weights, p.rho, w) - p.best) / scale
        gaps[p.kind] = max(gaps[p.kind], gap)
    return gaps
