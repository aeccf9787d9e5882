"""GradVac and Nash-MTL against float64 references, published values and the contract."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from contract import (
    Subject,
    jitted,
    run_contract,
)
from helpers import J_BASE, full_rank_jacobian
from references import gradvac_np, nash_np, nash_residual

import camegrad_jax as cg
from camegrad_jax.weightings._gradvac import GradVacState, gradvac, vaccinate
from camegrad_jax.weightings._nash_mtl import nash_mtl

# --------------------------------------------------------------------------------------------
# GradVac
# --------------------------------------------------------------------------------------------


@jax.jit
def _gradvac_step(gram, state, beta):
    return gradvac(beta=beta).weigh(gram, state)


def gradvac_step(gram, state, beta):
    """One GradVac step; ``beta`` is traced, so each K compiles once (``seed`` only acts in
    ``init``)."""
    return _gradvac_step(jnp.asarray(gram, jnp.float32), state, jnp.float32(beta))


@jax.jit
def vaccinate_jit(gram_hat, targets, order, beta):
    return vaccinate(gram_hat, targets, order, beta)


@pytest.mark.parametrize("k", [2, 3, 5])
def test_gradvac_matches_float64_reference_over_steps(k):
    """Three steps, same visiting orders (read from the state), float64 explicit gradients."""
    rng = np.random.default_rng(k)
    beta = 0.3
    state = gradvac(beta=beta).init(k)
    # Start from non-trivial targets so that both branches (below / above target) occur.
    start = rng.uniform(-0.3, 0.6, (k, k))
    state = state._replace(targets=jnp.asarray(start, jnp.float32))
    ref_targets = start.copy()
    worst = 0.0
    for _ in range(3):
        jac = full_rank_jacobian(rng, k)
        coeffs, state = gradvac_step(jnp.asarray(jac @ jac.T, jnp.float32), state, beta)
        orders = np.asarray(state.order)
        expected, ref_targets = gradvac_np(jac, ref_targets, orders, beta)
        update = jac.T @ np.asarray(coeffs, np.float64)
        worst = max(worst, np.linalg.norm(update - expected) / np.linalg.norm(expected))
        off = ~np.eye(k, dtype=bool)
        np.testing.assert_allclose(np.asarray(state.targets)[off], ref_targets[off], atol=2e-6)
    assert worst < 1e-5, worst


def test_gradvac_orders_are_random_permutations_of_the_others():
    k = 5
    weighting = gradvac()
    state = weighting.init(k)
    gram = jnp.asarray(np.eye(k) + 0.1, jnp.float32)
    orders = []
    for _ in range(4):
        _, state = gradvac_step(gram, state, 0.01)
        order = np.asarray(state.order)
        for i in range(k):
            assert sorted(order[i].tolist()) == [j for j in range(k) if j != i]
        orders.append(order)
    assert any(not np.array_equal(orders[0], o) for o in orders[1:])
    # Reproducible from the seed; another seed draws other orders.
    _, again = gradvac_step(gram, weighting.init(k), 0.01)
    np.testing.assert_array_equal(again.order, orders[0])
    _, other = gradvac_step(gram, gradvac(seed=7).init(k), 0.01)
    assert not np.array_equal(other.order, orders[0])


@pytest.mark.parametrize("target", [-0.5, 0.0, 0.3, 0.9, 0.99])
def test_gradvac_cosine_reaches_the_target_when_below(target):
    """K = 2: after vaccination cos(g_1^PC, g_2) is the target (or unchanged if above it)."""
    rng = np.random.default_rng(3)
    for _ in range(5):
        jac = rng.standard_normal((2, 6))
        gram = jac @ jac.T
        gram_hat = gram / (np.trace(gram) / 2)
        targets = np.full((2, 2), target)
        order = np.array([[1], [0]], np.int32)
        rows, new_targets = vaccinate_jit(
            jnp.asarray(gram_hat, jnp.float32),
            jnp.asarray(targets, jnp.float32),
            jnp.asarray(order),
            jnp.asarray(0.25, jnp.float32),
        )
        rows = np.asarray(rows, np.float64)
        cos = gram[0, 1] / np.sqrt(gram[0, 0] * gram[1, 1])
        for i, j in [(0, 1), (1, 0)]:
            corrected = rows[i] @ jac
            new_cos = corrected @ jac[j] / (np.linalg.norm(corrected) * np.linalg.norm(jac[j]))
            assert new_cos == pytest.approx(max(cos, target), abs=1e-5)
            # The EMA uses the cosine measured before the correction.
            assert float(new_targets[i, j]) == pytest.approx(0.75 * target + 0.25 * cos, abs=1e-6)


def test_gradvac_first_step_is_pcgrad_torchjd_values():
    """Zero initial targets: TorchJD's GradVac (= PCGrad here) weights [2.2222, 1.5789]."""
    coeffs, _ = gradvac_step(jnp.asarray(J_BASE @ J_BASE.T, jnp.float32), gradvac().init(2), 0.01)
    np.testing.assert_allclose(np.asarray(coeffs), [2.2222, 1.5789], atol=1e-4)


def test_gradvac_scale_invariant_and_finite_on_degenerate_grams():
    rng = np.random.default_rng(0)
    jac = full_rank_jacobian(rng, 5)
    state = gradvac().init(5)
    base, _ = gradvac_step(jnp.asarray(jac @ jac.T, jnp.float32), state, 0.01)
    for s in (1e-3, 1e4):
        scaled, _ = gradvac_step(jnp.asarray((s * jac) @ (s * jac).T, jnp.float32), state, 0.01)
        np.testing.assert_allclose(np.asarray(scaled), np.asarray(base), rtol=1e-4)
    g = rng.standard_normal(12)
    degenerate = [np.zeros((5, 12)), np.stack([g, -g, 0 * g, 2 * g, g]), np.stack([g] * 5)]
    targets = jnp.full((5, 5), 1.0, jnp.float32)  # a target of 1 needs the epsilon floor
    for jac in degenerate:
        coeffs, new = gradvac_step(jnp.asarray(jac @ jac.T, jnp.float32), state, 0.01)
        assert np.all(np.isfinite(np.asarray(coeffs))) and np.all(np.isfinite(new.targets))
        coeffs, new = gradvac_step(
            jnp.asarray(jac @ jac.T, jnp.float32), state._replace(targets=targets), 0.01
        )
        assert np.all(np.isfinite(np.asarray(coeffs))) and np.all(np.isfinite(new.targets))


def test_gradvac_state_diagnostics_readable():
    subject = SUBJECTS[0]  # gradvac, K = 3: reuses the contract's compiled update
    jac = {"w": jnp.asarray(full_rank_jacobian(np.random.default_rng(1), 3), jnp.float32)}
    _, state = jitted(subject)(jac, subject.make().init(None))
    assert optax.tree.get(state, "targets").shape == (3, 3)
    assert optax.tree.get(state, "order").shape == (3, 2)
    assert isinstance(state.weighting_state, GradVacState)


def test_gradvac_rejects_bad_hyperparameters():
    with pytest.raises(ValueError, match="beta"):
        gradvac(beta=1.5)
    with pytest.raises(ValueError, match="seed"):
        gradvac(seed=0.5)


# --------------------------------------------------------------------------------------------
# Nash-MTL
# --------------------------------------------------------------------------------------------


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
    Subject("gradvac-K3", cg.transformation(gradvac), {"beta": 0.5}, {"num_tasks": 3}, 3),
    Subject(
        "nash-K2",
        cg.transformation(nash_mtl),
        {"max_norm": 1.0, "update_weights_every": 1},
        {"num_tasks": 2},
        2,
    ),
]
IDS = [s.name for s in SUBJECTS]
CHANGED = {
    "gradvac-K3": {"beta": 0.1},
    "nash-K2": {"max_norm": 0.3, "update_weights_every": 2},
}


@pytest.mark.parametrize("subject", SUBJECTS, ids=IDS)
def test_contract(subject):
    # Op-by-op execution would re-trace the solvers' loops at every call: jitted runs only.
    run_contract(subject, CHANGED[subject.name])
