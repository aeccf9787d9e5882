"""Nash-MTL against a float64 reference, published values and the contract."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from contract import Subject, run_contract
from helpers import J_BASE, full_rank_jacobian
from references import nash_np, nash_residual

import camegrad_jax as cg
from camegrad_jax.weightings._nash_mtl import nash_mtl


@jax.jit
def _nash_step(gram, state, max_norm, every):
    return nash_mtl(max_norm=max_norm, update_weights_every=every).weigh(gram, state)


def nash_step(gram, state, max_norm=0.0, every=1):
    """One Nash-MTL step with traced hyperparameters: each K compiles once."""
    return _nash_step(
        jnp.asarray(gram, jnp.float32), state, jnp.float32(max_norm), jnp.int32(every)
    )


@pytest.mark.parametrize("k", [2, 3, 8])
def test_nash_fixed_point_and_float64_reference(k):
    rng = np.random.default_rng(10 + k)
    worst_residual, worst_error = 0.0, 0.0
    for _ in range(6):
        jac = full_rank_jacobian(rng, k)
        gram = jac @ jac.T
        alpha, state = nash_step(jnp.asarray(gram, jnp.float32), nash_mtl().init(k))
        alpha = np.asarray(alpha, np.float64)
        assert np.all(alpha > 0)
        worst_residual = max(worst_residual, nash_residual(gram, alpha))
        expected = nash_np(gram)
        worst_error = max(worst_error, np.max(np.abs(alpha - expected) / expected))
        assert float(state.residual) < 1e-4
    assert worst_residual < 1e-4, worst_residual
    assert worst_error < 1e-4, worst_error


def test_nash_torchjd_value():
    """TorchJD's NashMTL(n_tasks=2) (max_norm=1, update_weights_every=1, optim_niter=20)."""
    coeffs, state = nash_step(
        jnp.asarray(J_BASE @ J_BASE.T, jnp.float32), nash_mtl().init(2), max_norm=1.0
    )
    np.testing.assert_allclose(
        J_BASE.T @ np.asarray(coeffs, np.float64), [0.0542, 0.7061, 0.7061], atol=1e-4
    )
    # The unclipped update has length sqrt(K) = sqrt(2), so it was clipped by 1/sqrt(2).
    assert float(state.clip_scale) == pytest.approx(2**-0.5, rel=1e-5)


def test_nash_scale_behaviour():
    """alpha(sJ) = alpha(J)/s (not scale invariant); the unclipped update has length sqrt(K)."""
    rng = np.random.default_rng(4)
    k = 3
    jac = full_rank_jacobian(rng, k)
    base, _ = nash_step(jnp.asarray(jac @ jac.T, jnp.float32), nash_mtl().init(k))
    base = np.asarray(base, np.float64)
    assert np.linalg.norm(jac.T @ base) == pytest.approx(np.sqrt(k), rel=1e-4)
    for s in (1e-3, 0.5, 30.0, 1e4):
        gram = (s * jac) @ (s * jac).T
        alpha, _ = nash_step(jnp.asarray(gram, jnp.float32), nash_mtl().init(k))
        np.testing.assert_allclose(np.asarray(alpha, np.float64), base / s, rtol=1e-4)
        clipped, _ = nash_step(jnp.asarray(gram, jnp.float32), nash_mtl().init(k), max_norm=1.0)
        length = np.linalg.norm((s * jac).T @ np.asarray(clipped, np.float64))
        assert length == pytest.approx(1.0, rel=1e-4)


def test_nash_warm_start_and_update_weights_every():
    rng = np.random.default_rng(5)
    k = 3
    jac1, jac2 = full_rank_jacobian(rng, k), full_rank_jacobian(rng, k)
    gram1 = jnp.asarray(jac1 @ jac1.T, jnp.float32)
    gram2 = jnp.asarray(jac2 @ jac2.T, jnp.float32)
    alpha1, state = nash_step(gram1, nash_mtl().init(k), every=2)
    # Step 2 reuses alpha (only the clipping would be recomputed); step 3 solves again.
    alpha2, state2 = nash_step(gram2, state, every=2)
    np.testing.assert_array_equal(alpha2, alpha1)
    assert int(state2.step) == 2
    alpha3, _ = nash_step(gram2, state2, every=2)
    np.testing.assert_allclose(np.asarray(alpha3, np.float64), nash_np(jac2 @ jac2.T), rtol=1e-4)
    # Warm-started from the solution, the solver stays there.
    again, _ = nash_step(gram1, state)
    np.testing.assert_allclose(np.asarray(again), np.asarray(alpha1), rtol=1e-5)
    # Reused weights are still clipped against the current Jacobian.
    clipped, state4 = nash_step(gram2, state, max_norm=0.5, every=2)
    assert np.linalg.norm(jac2.T @ np.asarray(clipped, np.float64)) <= 0.5 * (1 + 1e-5)
    assert float(state4.clip_scale) < 1.0


def test_nash_rank_deficient_grams_are_regularised():
    """No positive solution: the ridge gives finite alpha; the update is what the ridge implies."""
    rng = np.random.default_rng(6)
    g, h = rng.standard_normal(6), rng.standard_normal(6)
    # Opposite gradients: Pareto stationary, the update vanishes.
    opposite = np.stack([g, -g])
    alpha, state = nash_step(jnp.asarray(opposite @ opposite.T, jnp.float32), nash_mtl().init(2))
    alpha = np.asarray(alpha, np.float64)
    assert np.all(np.isfinite(alpha)) and np.all(alpha > 0)
    assert np.linalg.norm(opposite.T @ alpha) < 1e-3 * np.abs(alpha) @ np.linalg.norm(
        opposite, axis=1
    )
    assert float(state.residual) > 1e-2  # flagged: no solution of the unregularised equation
    # A zero task: the others get the Nash solution of their own Gram matrix.
    with_zero = np.stack([0 * g, g, h])
    alpha, _ = nash_step(jnp.asarray(with_zero @ with_zero.T, jnp.float32), nash_mtl().init(3))
    alpha = np.asarray(alpha, np.float64)
    assert np.all(np.isfinite(alpha))
    rest = with_zero[1:] @ with_zero[1:].T
    np.testing.assert_allclose(alpha[1:], nash_np(rest), rtol=1e-4)
    # A zero Gram matrix keeps the previous alpha.
    previous = nash_mtl().init(3)._replace(alpha=jnp.array([0.5, 2.0, 1.0]))
    alpha, _ = nash_step(jnp.zeros((3, 3)), previous, max_norm=1.0)
    np.testing.assert_array_equal(alpha, previous.alpha)


def test_nash_rejects_bad_hyperparameters():
    with pytest.raises(ValueError, match="max_norm"):
        nash_mtl(max_norm=-1.0)
    with pytest.raises(ValueError, match="update_weights_every"):
        nash_mtl(update_weights_every=0)
    with pytest.raises(ValueError, match="update_weights_every"):
        nash_mtl(update_weights_every=1.5)


# --------------------------------------------------------------------------------------------
# Contract
# --------------------------------------------------------------------------------------------

SUBJECTS = [
    Subject(
        "nash-K2",
        cg.transformation(nash_mtl),
        {"max_norm": 1.0, "update_weights_every": 1},
        {"num_tasks": 2},
        2,
    ),
]


@pytest.mark.parametrize("subject", SUBJECTS, ids=[s.name for s in SUBJECTS])
def test_contract(subject):
    # Op-by-op execution would re-trace the solver's loops at every call: jitted runs only.
    run_contract(subject, {"max_norm": 0.3, "update_weights_every": 2})
