"""The exact, loop-free small-K solvers (`camegrad_jax._solvers._enumeration`).

Spec §4: for K ≤ 8 stage 1 is exact (enumeration of supports, no iteration) and loop-free.
Checked against the float64 oracle (Clarabel + exact polish), brute force on a grid, and the
compiled program of the jitted weighting.
"""

from __future__ import annotations

import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import reference as ref
from helpers import came_np, update_distance
from stage1_cases import (
    KINK_TOL,
    assert_no_worse_than_grid,
    at_kink,
    normalised_problem,
    objective_scale,
    stage1_gap,
)

import camegrad_jax as cg
from camegrad_jax._numerics import psd_sqrt
from camegrad_jax._solvers._conflict_dual import DualSolver
from camegrad_jax._solvers._enumeration import (
    conflict_dual,
    min_norm,
    nonneg_qp,
    support_masks,
)

pytestmark = pytest.mark.filterwarnings("ignore:Solution may be inaccurate")


def _k8_cases():
    rng = np.random.default_rng(8)
    yield "rank3", ref.sample_jacobian(rng, 8, 20, 3), np.ones(8)
    yield "conflict", ref.conflicting_jacobian(rng, 8, 20), rng.uniform(0, 4, 8)
    yield "pareto", ref.pareto_stationary_jacobian(rng, 8, 20), np.ones(8)
    yield "pareto-face", ref.pareto_stationary_jacobian(rng, 8, 20, on_face=True), np.ones(8)
    near = ref.conflicting_jacobian(rng, 8, 20)
    near[1] = near[0] + 1e-3 * rng.standard_normal(20)  # near-duplicate conflicting pair
    yield "near-duplicate", near, np.ones(8)


K8 = list(_k8_cases())


@pytest.mark.parametrize("rho", (0.5, 2.0))
@pytest.mark.parametrize(("name", "jac", "weights"), K8, ids=[c[0] for c in K8])
def test_stage1_exact_at_k8(name, jac, weights, rho):
    """The largest enumerated K: within 1e-5 of the oracle away from the kink, 3e-5 at it."""
    gap, kink = stage1_gap(*normalised_problem(jac, weights), rho)
    assert gap <= (KINK_TOL if kink else 1e-5), (name, gap, kink)


def test_stage1_k3_beats_a_fine_grid():
    """Brute force, independent of any solver: no lattice point of the simplex does better."""
    rng = np.random.default_rng(4)
    for _ in range(4):
        jac = ref.sample_jacobian(rng, 3, 6, rng.integers(1, 4))
        jac[2] *= -rng.uniform(0.2, 2.0)
        weights = rng.uniform(0.2, 3.0, 3)
        assert_no_worse_than_grid(*normalised_problem(jac, weights), 600)


def test_support_masks_enumerate_every_non_empty_subset():
    masks = support_masks(4)
    assert masks.shape == (15, 4)
    assert len({tuple(m) for m in masks}) == 15 and masks.sum(axis=1).min() == 1


def _loop_in_jaxpr(fn, *args) -> bool:
    """Whether the jaxpr holds a loop primitive (``fori_loop`` traces to ``scan`` or ``while``)."""
    return re.search(r"\b(while|scan)\[", str(jax.make_jaxpr(fn)(*args))) is not None


def _while_loops(fn, *args) -> int:
    """While loops in the optimised HLO that XLA compiles for ``fn`` on this backend."""
    text = jax.jit(fn).lower(*args).compile().as_text()
    return text.count(" while(")


@functools.cache
def _weigh(name: str, k: int):
    weighting = {
        "came": cg.weightings.came(),
        "cagrad": cg.weightings.cagrad(),
        "upgrad": cg.weightings.upgrad(),
        "dualproj": cg.weightings.dualproj(),
        "mgda": cg.weightings.mgda(),
    }[name]
    return weighting.weigh, weighting.init(k)


@pytest.mark.parametrize("name", ["came", "cagrad", "upgrad", "dualproj", "mgda"])
def test_small_k_compiles_to_no_while_loop(name):
    """K ≤ 8 has no loop in the compiled program (jaxpr and HLO); K = 9 has the iterative one,
    which shows that the check can fail."""
    for k, loops in ((3, False), (8, False), (9, True)):
        weigh, state = _weigh(name, k)
        gram = jnp.eye(k)
        assert _loop_in_jaxpr(weigh, gram, state) == loops, (name, k)
        assert (_while_loops(weigh, gram, state) > 0) == loops, (name, k)


def test_vmap_over_gram_matrices_and_hyperparameters():
    """A batch of problems (with per-problem ρ) gives the per-problem answers."""
    rng = np.random.default_rng(6)
    jacs = [ref.conflicting_jacobian(rng, 5, 12), ref.pareto_stationary_jacobian(rng, 5, 12)]
    grams = jnp.asarray(np.stack([j @ j.T for j in jacs]) / 10.0, jnp.float32)
    rhos = jnp.array([0.5, 2.0], jnp.float32)

    def solve(gram, rho):
        gram = gram / jnp.trace(gram)
        factor = psd_sqrt(gram)
        radius = rho * jnp.linalg.norm(factor @ jnp.ones(5))
        return conflict_dual(gram, factor, gram @ jnp.ones(5), radius)[0]

    batched = jax.jit(jax.vmap(solve))(grams, rhos)
    for i in range(2):
        np.testing.assert_allclose(batched[i], jax.jit(solve)(grams[i], rhos[i]), atol=1e-6)


def test_nonneg_qp_matches_the_float64_projection():
    """The dual-cone projection of g_λ (K = 8, rank-deficient and Pareto-stationary Jacobians):
    the update Jᵀ(λ + x) of the oracle's, and the KKT residual at round-off."""
    rng = np.random.default_rng(9)
    for jac in (ref.sample_jacobian(rng, 8, 20, 3), ref.pareto_stationary_jacobian(rng, 8, 20)):
        gram_hat, lam = normalised_problem(jac, rng.uniform(0.5, 2.0, 8))
        gram32 = jnp.asarray(gram_hat, jnp.float32)
        x, residual = jax.jit(nonneg_qp)(gram32, psd_sqrt(gram32), jnones(lam))
        ours = lam + np.asarray(x, np.float64)
        assert np.all(x >= 0.0) and float(residual) <= 1e-5
        oracle = ref.dual_cone_projection(gram_hat, lam)
        assert update_distance(jac, ours, oracle) <= 1e-3


def jnones(x):
    return jnp.asarray(x, jnp.float32)


def test_min_norm_matches_clarabel_at_k8():
    """MGDA's minimum-norm point of the hull (K = 8, rank 3 and Pareto-stationary): its squared
    norm within float32 round-off of a float64 Clarabel solve."""
    import cvxpy as cp

    rng = np.random.default_rng(10)
    for jac in (ref.sample_jacobian(rng, 8, 20, 3), ref.conflicting_jacobian(rng, 8, 20)):
        gram_hat, _ = normalised_problem(jac, np.ones(8))
        gram32 = jnp.asarray(gram_hat, jnp.float32)
        w, _ = jax.jit(min_norm)(gram32, psd_sqrt(gram32))
        w = np.asarray(w, np.float64)
        assert np.all(w >= 0) and w.sum() == pytest.approx(1.0, abs=1e-6)
        var = cp.Variable(8, nonneg=True)
        eigvals, eigvecs = np.linalg.eigh(gram_hat)
        factor = np.sqrt(np.clip(eigvals, 0.0, None))[:, None] * eigvecs.T
        cp.Problem(cp.Minimize(cp.sum_squares(factor @ var)), [cp.sum(var) == 1]).solve(
            solver=cp.CLARABEL, tol_gap_abs=1e-12, tol_gap_rel=1e-12, tol_feas=1e-12
        )
        assert w @ gram_hat @ w <= var.value @ gram_hat @ var.value + 1e-6


def test_ties_keep_permutation_equivariance_of_the_coefficients():
    """Duplicate tasks make whole faces tie; the duplicates get equal coefficients whatever their
    order, and every order of the tasks gives the same update."""
    rng = np.random.default_rng(12)
    base = ref.conflicting_jacobian(rng, 4, 9)
    jac = np.concatenate([base, base[:1], base[3:]])  # tasks 0 = 4 and 3 = 5
    for _ in range(6):
        perm = rng.permutation(6)
        coeffs = came_np(jac[perm])["coeffs"][np.argsort(perm)]
        assert coeffs[0] == pytest.approx(coeffs[4], rel=1e-5)
        assert coeffs[3] == pytest.approx(coeffs[5], rel=1e-5)
        assert update_distance(jac, coeffs, came_np(jac)["coeffs"]) < 1e-5


def test_enumeration_and_iterations_agree_below_k0():
    """The iterative solver (enumeration switched off) reaches the same optimum at K = 5."""
    rng = np.random.default_rng(13)
    jac = ref.conflicting_jacobian(rng, 5, 14)
    gram_hat, lam = normalised_problem(jac, np.ones(5))
    gram32 = jnp.asarray(gram_hat, jnp.float32)

    @functools.partial(jax.jit, static_argnames="solver")
    def solve(gram, solver):
        from camegrad_jax._solvers._conflict_dual import solve_conflict_dual

        factor = psd_sqrt(gram)
        radius = 0.5 * jnp.linalg.norm(factor @ jnp.ones(5))
        linear, w0 = gram @ jnp.ones(5), jnp.full(5, 0.2)
        return solve_conflict_dual(gram, factor, linear, radius, w0, solver)[0]

    exact = np.asarray(solve(gram32, DualSolver()), np.float64)
    iterative = np.asarray(solve(gram32, DualSolver(enumerate_up_to=2)), np.float64)
    values = [ref.dual_objective(gram_hat, lam, 0.5, w) for w in (exact, iterative)]
    assert values[0] <= values[1] + 1e-6 * objective_scale(gram_hat, lam, 0.5)
    assert not at_kink(gram_hat, exact)
