"""GradVac against a float64 reference, published values and the contract."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from contract import Subject, jitted, run_contract
from helpers import J_BASE, full_rank_jacobian
from references import gradvac_np

import camegrad_jax as cg
from camegrad_jax.weightings._gradvac import GradVacState, gradvac, vaccinate


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
# Contract
# --------------------------------------------------------------------------------------------

SUBJECTS = [Subject("gradvac-K3", cg.transformation(gradvac), {"beta": 0.5}, {"num_tasks": 3}, 3)]


@pytest.mark.parametrize("subject", SUBJECTS, ids=[s.name for s in SUBJECTS])
def test_contract(subject):
    # Op-by-op execution would re-trace the solver's loops at every call: jitted runs only.
    run_contract(subject, {"beta": 0.1})
