"""FairGrad against a float64 reference, published values and the contract."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from contract import Subject, run_contract
from helpers import J_BASE, full_rank_jacobian
from references import fairgrad_np, fairgrad_residual

import camegrad_jax as cg
from camegrad_jax._solvers._newton import NewtonSolver
from camegrad_jax.weightings._fairgrad import FairGradState, fairgrad


@jax.jit
def _fairgrad_step(gram, state, alpha):
    return fairgrad(alpha=alpha).weigh(gram, state)


def fairgrad_step(gram, state, alpha=1.0):
    """One FairGrad step with a traced alpha: each K compiles once."""
    return _fairgrad_step(jnp.asarray(gram, jnp.float32), state, jnp.float32(alpha))


def test_fairgrad_torchjd_value():
    weights, state = fairgrad_step(J_BASE @ J_BASE.T, fairgrad().init(2))
    np.testing.assert_allclose(np.asarray(weights), [0.5915, 0.4071], atol=1e-4)
    np.testing.assert_array_equal(state.weights, weights)


@pytest.mark.parametrize("k", [2, 3, 8])
def test_fairgrad_fixed_point_and_float64_reference(k):
    rng = np.random.default_rng(20 + k)
    worst_residual, worst_error = 0.0, 0.0
    for alpha in (0.5, 1.0, 2.0, 5.0):
        for _ in range(3):
            jac = full_rank_jacobian(rng, k)
            gram = jac @ jac.T
            weights, state = fairgrad_step(gram, fairgrad().init(k), alpha)
            weights = np.asarray(weights, np.float64)
            assert np.all(weights > 0)
            worst_residual = max(worst_residual, fairgrad_residual(gram, weights, alpha))
            expected = fairgrad_np(gram, alpha)
            worst_error = max(worst_error, np.max(np.abs(weights - expected) / expected))
            assert float(state.residual) < 1e-3  # per task, so larger than the norm's
    assert worst_residual < 1e-4, worst_residual
    assert worst_error < 1e-3, worst_error


def test_fairgrad_scale_alpha_zero_and_warm_start():
    rng = np.random.default_rng(9)
    k = 3
    jac = full_rank_jacobian(rng, k)
    for alpha in (0.5, 1.0, 2.0):
        base, state = fairgrad_step(jac @ jac.T, fairgrad().init(k), alpha)
        base = np.asarray(base, np.float64)
        for s in (1e-3, 7.0, 1e3):
            scaled, _ = fairgrad_step((s * jac) @ (s * jac).T, fairgrad().init(k), alpha)
            expected = base * s ** (-2 * alpha / (1 + alpha))
            np.testing.assert_allclose(np.asarray(scaled, np.float64), expected, rtol=2e-4)
        # From its own solution the solver stays there; from another scale it gets back.
        again, _ = fairgrad_step(jac @ jac.T, state, alpha)
        np.testing.assert_allclose(np.asarray(again, np.float64), base, rtol=1e-5)
        far = state._replace(weights=state.weights * 1e4)
        again, _ = fairgrad_step(jac @ jac.T, far, alpha)
        np.testing.assert_allclose(np.asarray(again, np.float64), base, rtol=1e-4)
    uniform, _ = fairgrad_step(jac @ jac.T, fairgrad().init(k), 0.0)
    np.testing.assert_allclose(np.asarray(uniform), np.full(k, 1 / k), rtol=1e-6)


def test_fairgrad_rank_deficient_and_zero_grams_are_finite():
    rng = np.random.default_rng(10)
    g, h = rng.standard_normal(8), rng.standard_normal(8)
    opposite = np.stack([g, -g, h])
    weights, state = fairgrad_step(opposite @ opposite.T, fairgrad().init(3))
    weights = np.asarray(weights, np.float64)
    assert np.all(np.isfinite(weights)) and np.all(weights > 0)
    assert float(state.residual) > 1e-2  # flagged: the unregularised equation has no solution
    # As the ridge vanishes the update is w_3 h_perp, h_perp the part of h orthogonal to g
    # (the pair's weights balance the g-component out), with w_3 = 1 / |h_perp|.
    h_perp = h - (h @ g) / (g @ g) * g
    update = opposite.T @ weights
    assert abs(g @ update) < 1e-2 * np.linalg.norm(g) * np.linalg.norm(update)
    np.testing.assert_allclose(weights[2], 1 / np.linalg.norm(h_perp), rtol=1e-2)
    previous = fairgrad().init(3)._replace(weights=jnp.array([0.5, 2.0, 1.0]))
    weights, _ = fairgrad_step(np.zeros((3, 3)), previous)
    np.testing.assert_array_equal(weights, previous.weights)


def test_fairgrad_rejects_bad_arguments():
    with pytest.raises(ValueError, match="alpha"):
        fairgrad(alpha=-1.0)
    with pytest.raises(ValueError, match="newton_iters"):
        fairgrad(solver=NewtonSolver(newton_iters=0))
    with pytest.raises(ValueError, match="ridge"):
        fairgrad(solver=NewtonSolver(ridge=-1.0))
    assert isinstance(fairgrad().init(2), FairGradState)


# --------------------------------------------------------------------------------------------
# Contract
# --------------------------------------------------------------------------------------------

SUBJECTS = [
    Subject("fairgrad-K2", cg.transformation(fairgrad), {"alpha": 1.0}, {"num_tasks": 2}, 2)
]


@pytest.mark.parametrize("subject", SUBJECTS, ids=[s.name for s in SUBJECTS])
def test_contract(subject):
    # Op-by-op execution would re-trace the solver's loops at every call: jitted runs only.
    run_contract(subject, {"alpha": 2.0})
