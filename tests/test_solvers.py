"""The solvers' one convention: validated settings, and a residual that certifies the solution.

Each K×K solve returns its solution and a residual; the states report it. The dual's and
MGDA's residual is a Frank–Wolfe gap, an upper bound on the suboptimality f(w) - f*: checked
here against the float64 oracle of the tests' reference module, both at the solver's answer
(small) and at perturbed points (it bounds f(w) - f*, and is large where w is wrong).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import reference as ref

import camegrad_jax as cg
from camegrad_jax._numerics import psd_sqrt
from camegrad_jax._solvers._optimality import conflict_dual_gap, min_norm_gap


def _gram_hat(jac: np.ndarray) -> np.ndarray:
    gram = jac @ jac.T
    return gram / np.trace(gram)


@jax.jit
def _dual_gap(gram_hat, weights, rho, w):
    factor = psd_sqrt(gram_hat)
    radius = rho * jnp.linalg.norm(factor @ weights)
    return conflict_dual_gap(gram_hat, factor, gram_hat @ weights, radius, w)


@pytest.mark.parametrize("k", [3, 5])
def test_dual_gap_bounds_the_suboptimality(k):
    """At any w of the simplex, 0 <= f(w) - f* <= gap(w) (float64 optimum from the oracle)."""
    rng = np.random.default_rng(k)
    jac = ref.conflicting_jacobian(rng, k, 12)
    gram_hat, weights = _gram_hat(jac), rng.uniform(0.5, 2.0, k)
    _, best = ref.solve_dual(gram_hat, weights, 0.5)
    with jax.enable_x64(True):
        for _ in range(5):
            w = rng.dirichlet(np.ones(k))
            gap = float(_dual_gap(gram_hat, weights, 0.5, w))
            excess = ref.dual_objective(gram_hat, weights, 0.5, w) - best
            assert -1e-12 <= excess <= gap + 1e-12


@pytest.mark.parametrize("k", [3, 6, 10])
def test_came_state_reports_a_small_residual_and_a_large_one_when_cut_short(k):
    """The exact paths (K <= 8) and the default iterations (K = 10) leave a residual at float32
    round-off (float32's, so possibly a hair below 0); 2 primal–dual iterations and no active
    set leave a visible one. Each K draws its own Jacobian, whatever ran before."""
    jac = {"w": jnp.asarray(ref.conflicting_jacobian(np.random.default_rng(k), k, 16), jnp.float32)}
    tx = cg.came_grad(num_tasks=k)
    _, state = jax.jit(tx.update)(jac, tx.init(None))
    residual = float(optax.tree.get(state, "residual"))
    assert -1e-7 <= residual < 1e-5
    if k > 8:
        rough = cg.came_grad(num_tasks=k, solver=cg.DualSolver(pdhg_iters=2, active_set_rounds=0))
        _, state = jax.jit(rough.update)(jac, rough.init(None))
        assert float(optax.tree.get(state, "residual")) > 1e-4


def test_mgda_residual_is_the_frank_wolfe_gap_of_its_answer():
    """MGDA's state holds gap(w*) of the normalised Gram matrix, recomputed here in float64."""
    jac = ref.conflicting_jacobian(np.random.default_rng(4), 4, 9)
    gram_hat = _gram_hat(jac)
    weighting = cg.weightings.mgda()
    w, state = jax.jit(weighting.weigh)(jnp.asarray(jac @ jac.T, jnp.float32), weighting.init(4))
    w = np.asarray(w, np.float64)
    grad = gram_hat @ w
    assert abs(float(state.residual) - (grad @ w - grad.min())) < 1e-6
    with jax.enable_x64(True):
        assert float(min_norm_gap(gram_hat, np.eye(4)[0])) > 1e-3  # a vertex is not optimal


@pytest.mark.parametrize(
    ("build", "solver", "field"),
    [
        (lambda s: cg.weightings.came(solver=s), cg.DualSolver(pdhg_iters=-1), "pdhg_iters"),
        (lambda s: cg.weightings.cagrad(solver=s), cg.DualSolver(enumerate_up_to=2.5), "enumerate"),
        (lambda s: cg.weightings.mgda(solver=s), cg.MgdaSolver(frank_wolfe_iters=True), "frank"),
        (lambda s: cg.weightings.mgda(solver=s), cg.DualSolver(), "MgdaSolver"),
        (lambda s: cg.weightings.nash_mtl(solver=s), cg.NewtonSolver(backtracks=0), "backtracks"),
    ],
)
def test_every_solver_is_validated_when_the_weighting_is_built(build, solver, field):
    with pytest.raises((ValueError, TypeError), match=field):
        build(solver)
