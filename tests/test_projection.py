"""UPGrad, DualProj and their QP solver (`_solvers._nonneg_qp`) against float64 references.

The reference projection is a float64 cvxpy (Clarabel) solve of min ‖Lv‖² s.t. v ≥ u, with
LᵀL the Gram matrix the solver saw (rounded to float32, negative round-off eigenvalues dropped).
Published values are TorchJD's on J = [[-4, 1, 1], [6, 1, 1]].
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import reference as ref
from contract import (
    Subject,
    run_contract,
)
from references import gram_factor, project_ref, upgrad_ref

import camegrad_jax as cg
from camegrad_jax._solvers._nonneg_qp import kkt_residual, project_to_dual_cone, solve_nonneg_qp
from camegrad_jax.weightings._projection import dualproj, upgrad

# The reference's Clarabel runs at 1e-10 and may report "inaccurate" there; its answer is still
# far below the tolerances asserted.
pytestmark = pytest.mark.filterwarnings("ignore:Solution may be inaccurate")

TORCHJD_JAC = np.array([[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]])


# --- jitted entry points (one compilation per shape) -----------------------------------------


@jax.jit
def project_all(gram):
    """The K UPGrad projections v^(i) (rows) and the DualProj one, for the mean."""
    k = gram.shape[0]
    rows, _ = jax.vmap(lambda u: project_to_dual_cone(gram, u))(jnp.eye(k, dtype=gram.dtype))
    mean, _ = project_to_dual_cone(gram, jnp.full((k,), 1.0 / k, gram.dtype))
    return rows, mean


@jax.jit
def upgrad_jit(gram, prefs):
    w = upgrad(prefs)
    return w.weigh(gram, w.init(gram.shape[0]))[0]


@jax.jit
def dualproj_jit(gram, prefs):
    w = dualproj(prefs)
    return w.weigh(gram, w.init(gram.shape[0]))[0]


def _gram32(jac: np.ndarray) -> np.ndarray:
    """The normalised Gram matrix as the solver sees it (float32), as float64."""
    gram = jac @ jac.T
    return (gram / np.trace(gram)).astype(np.float32).astype(np.float64)


def _cases(seed: int = 0):
    rng = np.random.default_rng(seed)
    for k in (3, 5, 16):
        dim = 2 * k + 4
        for rank in sorted({1, 2, max(1, k // 2), k}):
            if rank <= k:
                yield f"K{k}-rank{rank}", ref.sample_jacobian(rng, k, dim, rank)
        yield f"K{k}-conflict", ref.conflicting_jacobian(rng, k, dim)
        yield f"K{k}-pareto", ref.pareto_stationary_jacobian(rng, k, dim)
        yield f"K{k}-face", ref.pareto_stationary_jacobian(rng, k, dim, on_face=True)


CASES = list(_cases())
IDS = [name for name, _ in CASES]

# Worst values measured in float32 over K = 2, 3, 5, 8, 16 and these families: gap 3.7e-7
# (floor-relative 6e-8), conflict 2.4e-7, update 7.3e-5. The update error is the square root of
# the objective gap (‖d − d*‖² ≤ ‖d‖² − ‖d*‖² for a min-norm point), so ~sqrt(eps32) at worst.
GAP_TOL = 1e-5
FLOOR_GAP_TOL = 1e-6
CONFLICT_TOL = 1e-6
UPDATE_TOL = 5e-4


def _qp_errors(gram: np.ndarray, anchor: np.ndarray, ours: np.ndarray) -> dict[str, float]:
    """Our float32 projection against the float64 one on the same (rounded) Gram matrix.

    ``floor_gap``: objective gap over |v|ᵀ|G||v|, the size of the terms of the quadratic form,
    whose float32 rounding (eps·|v|ᵀ|G||v|) no float32 method can get below. ``gap``: over
    uᵀGu, the squared length of the projected vector. ``update``: ‖L(v − v_ref)‖ over the
    reach Σ|v_j|‖g_j‖. ``conflict``: the worst −(Gv)_i / (‖g_i‖ · reach).
    """
    best = project_ref(gram, anchor)
    factor = gram_factor(gram)
    f_ours, f_best = np.sum((factor @ ours) ** 2), np.sum((factor @ best) ** 2)
    terms = np.abs(ours) @ np.abs(gram) @ np.abs(ours)
    norms = np.sqrt(np.diag(gram))
    reach = max(np.abs(ours) @ norms, np.abs(best) @ norms)
    return {
        "floor_gap": (f_ours - f_best) / terms,
        "gap": (f_ours - f_best) / (anchor @ gram @ anchor),
        "update": np.linalg.norm(factor @ (ours - best)) / reach,
        "conflict": float(np.max(-(gram @ ours) / (np.maximum(norms, 1e-30) * reach))),
    }


@pytest.mark.parametrize("jac", [c[1] for c in CASES], ids=IDS)
def test_qp_matches_float64_reference(jac):
    """Every UPGrad projection and the DualProj one: optimal to float32 round-off, feasible."""
    gram = _gram32(jac)
    rows, mean = project_all(jnp.asarray(gram, jnp.float32))
    rows, mean = np.asarray(rows, np.float64), np.asarray(mean, np.float64)
    k = len(gram)
    anchors = [*np.eye(k), np.full(k, 1.0 / k)]
    for anchor, ours in zip(anchors, [*rows, mean], strict=True):
        assert np.all(ours >= anchor)  # feasible exactly: v = u + max(x, 0)
        errors = _qp_errors(gram, anchor, ours)
        assert errors["gap"] <= GAP_TOL, errors
        assert errors["floor_gap"] <= FLOOR_GAP_TOL, errors
        assert errors["update"] <= UPDATE_TOL, errors
        assert errors["conflict"] <= CONFLICT_TOL, errors


def test_qp_in_float64_is_exact():
    """Under x64 the same solver meets the float64 reference to ~1e-9 on every family."""
    with jax.enable_x64(True):
        for name, jac in CASES:
            if not name.startswith("K5"):
                continue
            gram = jac @ jac.T / np.trace(jac @ jac.T)
            rows, mean = project_all(jnp.asarray(gram, jnp.float64))
            k = len(gram)
            for anchor, ours in zip([*np.eye(k), np.full(k, 1.0 / k)], [*rows, mean], strict=True):
                errors = _qp_errors(gram, anchor, np.asarray(ours))
                assert errors["floor_gap"] <= 1e-12 and errors["update"] <= 1e-6, (name, errors)


def test_qp_general_linear_term_and_kkt():
    """A strictly convex NNQP with a known solution, and the KKT residual as a certificate."""
    gram = jnp.array([[4.0, 1.0, 0.0], [1.0, 3.0, 1.0], [0.0, 1.0, 2.0]])
    linear = jnp.array([-1.0, 2.0, -4.0])
    x, residual = jax.jit(solve_nonneg_qp)(gram, linear)
    # Support {0, 2}: G_SS x_S = -q_S, gradient of coordinate 1 = 1/4 + 2 + 2 > 0.
    np.testing.assert_allclose(np.asarray(x), [0.25, 0.0, 2.0], atol=1e-6)
    assert float(residual) == pytest.approx(float(kkt_residual(gram, linear, x)), abs=1e-7)
    assert float(residual) < 1e-6
    assert float(kkt_residual(gram, linear, jnp.zeros(3))) == pytest.approx(4.0)


def test_qp_under_vmap():
    """vmap over Gram matrices equals a loop."""
    jacs = [ref.conflicting_jacobian(np.random.default_rng(s), 5, 14) for s in range(3)]
    grams = jnp.asarray(np.stack([_gram32(j) for j in jacs]), jnp.float32)
    batched = jax.jit(jax.vmap(project_all))(grams)
    for i in range(3):
        single = project_all(grams[i])
        np.testing.assert_allclose(batched[0][i], single[0], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(batched[1][i], single[1], rtol=1e-5, atol=1e-6)


# --- UPGrad and DualProj -----------------------------------------------------------------------


def test_torchjd_values_and_normalisation():
    """TorchJD's weights are ours on its regularised Gram matrix Ĝ + 1e-4·I (its QP's ``reg_eps``).

    On the exact Gram matrix G = [[18, -22], [-22, 38]] the projections are closed-form:
    π(g_1) = g_1 + (22/38) g_2, π(g_2) = (22/18) g_1 + g_2, so UPGrad (mean) is
    ((1 + 11/9)/2, (1 + 11/19)/2) = (1.1111, 0.7895) and DualProj moves the mean (1/2, 1/2) to
    (11/18, 1/2) = (0.6111, 0.5). TorchJD's published 1.1109, 0.7894, 0.6109 are those of
    Ĝ + 1e-4·I; its default preference is the mean, as ours.
    """
    gram = jnp.asarray(TORCHJD_JAC @ TORCHJD_JAC.T, jnp.float32)
    mean = jnp.full((2,), 0.5)
    np.testing.assert_allclose(upgrad_jit(gram, mean), [10 / 9, 15 / 19], rtol=1e-6)
    np.testing.assert_allclose(dualproj_jit(gram, mean), [11 / 18, 0.5], rtol=1e-6)
    regularised = gram / jnp.trace(gram) + 1e-4 * jnp.eye(2)
    np.testing.assert_allclose(upgrad_jit(regularised, mean), [1.1109, 0.7894], atol=5e-5)
    np.testing.assert_allclose(dualproj_jit(regularised, mean), [0.6109, 0.5], atol=5e-5)
    # Unit preferences sum the projections: K times the mean's weights.
    np.testing.assert_allclose(upgrad_jit(gram, jnp.ones(2)), [20 / 9, 30 / 19], rtol=1e-6)


def _sampled(seed: int = 1):
    rng = np.random.default_rng(seed)
    for rank in (1, 2, 3, 5):
        yield f"K5-rank{rank}", ref.sample_jacobian(rng, 5, 14, rank)
    yield "K5-conflict", ref.conflicting_jacobian(rng, 5, 14)
    yield "K5-pareto", ref.pareto_stationary_jacobian(rng, 5, 14)


SAMPLED = list(_sampled())


@pytest.mark.parametrize("jac", [c[1] for c in SAMPLED], ids=[c[0] for c in SAMPLED])
def test_non_conflicting_and_matches_reference(jac):
    """Jd ≥ 0 (to round-off) for both, and the coefficients' update matches float64 cvxpy."""
    k = jac.shape[0]
    prefs = np.random.default_rng(k).uniform(0.2, 2.0, k)
    gram = _gram32(jac)
    norms = np.linalg.norm(jac, axis=1)
    for method, oracle in ((upgrad_jit, upgrad_ref), (dualproj_jit, project_ref)):
        coeffs = np.asarray(method(jnp.asarray(gram, jnp.float32), jnp.asarray(prefs)), np.float64)
        reach = np.abs(coeffs) @ norms
        assert np.all(jac @ (jac.T @ coeffs) >= -CONFLICT_TOL * norms * reach)
        expected = oracle(gram, prefs)
        assert np.linalg.norm(jac.T @ (coeffs - expected)) <= UPDATE_TOL * reach


def test_agreeing_gradients_are_left_alone():
    """With no conflict (G ≥ 0 entrywise) every projection is the identity: c = λ for both."""
    rng = np.random.default_rng(3)
    jac = np.abs(rng.standard_normal((5, 10)))
    prefs = jnp.array([0.5, 1.0, 2.0, 0.0, 1.0])
    gram = jnp.asarray(jac @ jac.T, jnp.float32)
    np.testing.assert_allclose(upgrad_jit(gram, prefs), prefs, rtol=1e-6)
    np.testing.assert_allclose(dualproj_jit(gram, prefs), prefs, rtol=1e-6)


@pytest.mark.parametrize("method", [upgrad_jit, dualproj_jit], ids=["upgrad", "dualproj"])
def test_permutation_invariance_and_scaling(method):
    """Permuting tasks (and preferences) permutes c; J → sJ gives d → s·d (c unchanged)."""
    rng = np.random.default_rng(4)
    jac = ref.conflicting_jacobian(rng, 5, 14)
    prefs = rng.uniform(0.5, 2.0, 5)
    coeffs = np.asarray(method(jnp.asarray(jac @ jac.T, jnp.float32), jnp.asarray(prefs)))
    perm = rng.permutation(5)
    permuted = np.asarray(
        method(jnp.asarray(jac[perm] @ jac[perm].T, jnp.float32), jnp.asarray(prefs[perm]))
    )
    np.testing.assert_allclose(permuted, coeffs[perm], rtol=1e-4, atol=1e-6)
    for scale in (2.0**-20, 3.7, 2.0**15):
        scaled = jac * scale
        c_scaled = np.asarray(method(jnp.asarray(scaled @ scaled.T, jnp.float32), prefs))
        np.testing.assert_allclose(
            scaled.T @ c_scaled, scale * (jac.T @ coeffs), rtol=1e-4, atol=1e-6 * scale
        )


def test_bad_preferences_raise():
    with pytest.raises(ValueError, match="pref_vector"):
        upgrad(jnp.array([1.0, -1.0]))
    with pytest.raises(ValueError, match="pref_vector"):
        dualproj(jnp.ones((2, 2)))
    with pytest.raises(ValueError, match="pref_vector"):
        upgrad(jnp.ones(3)).init(2)
    with pytest.raises(ValueError, match="pref_vector"):
        dualproj(jnp.ones(3)).weigh(jnp.eye(2), None)


# --- the contract ------------------------------------------------------------------------------

upgrad_tx = cg.transformation(upgrad)
dualproj_tx = cg.transformation(dualproj)

SUBJECTS = [
    Subject(
        "upgrad-K3", upgrad_tx, {"pref_vector": jnp.array([1.0, 4.0, 2.0])}, {"num_tasks": 3}, 3
    ),
    Subject("dualproj-K3", dualproj_tx, {"pref_vector": jnp.ones(3)}, {"num_tasks": 3}, 3),
]
CHANGED = {
    "upgrad-K3": {"pref_vector": jnp.array([2.0, 0.5, 1.0])},
    "dualproj-K3": {"pref_vector": jnp.array([0.1, 3.0, 0.5])},
}


@pytest.mark.parametrize("subject", SUBJECTS, ids=[s.name for s in SUBJECTS])
def test_contract(subject):
    """The contract suite; op-by-op (eager) runs are left out, as for every iterative solver."""
    run_contract(subject, CHANGED[subject.name])


def _kkt_residual_np(gram_hat: np.ndarray, anchor: np.ndarray, v: np.ndarray) -> float:
    """max_i |min(v_i − u_i, (Ĝv)_i)| in float64: 0 exactly at the projection's weights."""
    return float(np.max(np.abs(np.minimum(v - anchor, gram_hat @ v))))


@pytest.mark.parametrize(
    "solver",
    [cg.weightings.QPSolver(), cg.weightings.QPSolver(pgd_iters=1, active_set_rounds=0)],
    ids=["default", "crippled"],
)
def test_state_reports_the_kkt_residual(solver):
    """DualProj's state holds the KKT residual of the coefficients it returned (recomputed here
    in float64 from them); UPGrad's is the largest of its K. Both are small with the default
    solver and large with a crippled one, so the diagnostic tells the two apart. K = 10 runs
    the iterative solver (enumeration stops at 8)."""
    jac = ref.conflicting_jacobian(np.random.default_rng(3), 10, 24)
    gram_hat = _gram32(jac)
    gram = jnp.asarray(jac @ jac.T, jnp.float32)
    prefs = np.full(10, 0.1)
    weighting = dualproj(solver=solver)
    coeffs, state = jax.jit(weighting.weigh)(gram, weighting.init(10))
    expected = _kkt_residual_np(gram_hat, prefs, np.asarray(coeffs, np.float64))
    assert float(state.residual) == pytest.approx(expected, abs=1e-6)
    weighting = upgrad(solver=solver)
    _, state = jax.jit(weighting.weigh)(gram, weighting.init(10))
    rows, _ = jax.vmap(
        lambda u: project_to_dual_cone(jnp.asarray(gram_hat, jnp.float32), u, solver)
    )(jnp.eye(10))
    worst = max(
        _kkt_residual_np(gram_hat, np.eye(10)[i], np.asarray(rows[i], np.float64))
        for i in range(10)
    )
    assert float(state.residual) == pytest.approx(worst, abs=1e-6)
    if solver.active_set_rounds == 0:
        assert float(state.residual) > 1e-3
    else:
        assert float(state.residual) < 1e-6


def test_default_preferences_are_the_mean():
    """``pref_vector=None`` (TorchJD's default) is 1/K, through the transformation too."""
    jac = {"w": jnp.asarray(TORCHJD_JAC, jnp.float32)}
    for factory, expected in ((upgrad_tx, [10 / 9, 15 / 19]), (dualproj_tx, [11 / 18, 0.5])):
        tx = factory(num_tasks=2)
        update, state = jax.jit(tx.update)(jac, tx.init(None))
        np.testing.assert_allclose(state.coefficients, expected, rtol=1e-6)
        np.testing.assert_allclose(update["w"], TORCHJD_JAC.T @ np.array(expected), rtol=1e-5)
