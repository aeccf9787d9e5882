"""Bad input (spec §5): clear errors at trace time, the NaN/Inf policy, readable diagnostics.

A K=3 CAME-Grad update costs seconds to compile (or to run eagerly) on CPU, so every numeric
check goes through two module-level jitted functions with one input shape each; the error
checks raise while tracing, before anything is computed.
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import camegrad_jax as cg

FACTORIES = {
    "came_grad": lambda **kw: cg.came_grad(num_tasks=2, **kw),
    "weightings.came": lambda **kw: cg.weightings.came(**kw),
}

PARAMS = {"w": jnp.zeros((2, 3), jnp.float32), "b": jnp.zeros((4,), jnp.float32)}


def make_jac(k: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    return jax.tree.map(
        lambda p: jnp.asarray(rng.standard_normal((k, *p.shape)), jnp.float32), PARAMS
    )


def init_state(tx):
    return tx.init(PARAMS)


# --- hyperparameters ------------------------------------------------------------------------


@pytest.mark.parametrize("factory", FACTORIES.values(), ids=FACTORIES.keys())
@pytest.mark.parametrize("rho", [-0.1, -np.inf, np.nan])
def test_rho_negative(factory, rho):
    with pytest.raises(ValueError, match=r"`rho` must be a finite number >= 0"):
        factory(rho=rho)


@pytest.mark.parametrize("factory", FACTORIES.values(), ids=FACTORIES.keys())
@pytest.mark.parametrize("kappa", [0.99, 0.0, -1.0])
def test_kappa_below_one(factory, kappa):
    with pytest.raises(ValueError, match=r"`kappa` must be a finite number >= 1"):
        factory(kappa=kappa)


@pytest.mark.parametrize("factory", FACTORIES.values(), ids=FACTORIES.keys())
def test_nu_negative(factory):
    with pytest.raises(ValueError, match=re.escape("`nu` must be in [0, 1]") + ".*-0.1"):
        factory(nu=-0.1)


@pytest.mark.parametrize("factory", FACTORIES.values(), ids=FACTORIES.keys())
def test_nu_above_one(factory):
    with pytest.raises(ValueError, match=re.escape("`nu` must be in [0, 1]") + ".*1.5"):
        factory(nu=1.5)


@pytest.mark.parametrize("factory", FACTORIES.values(), ids=FACTORIES.keys())
def test_boundary_hyperparameters_are_accepted(factory):
    factory(rho=0.0, kappa=1.0, nu=0.0)
    factory(nu=1.0, kappa=None)


# --- task weights ---------------------------------------------------------------------------


@pytest.mark.parametrize("factory", [cg.came_grad, cg.weightings.came], ids=FACTORIES.keys())
def test_task_weights_negative(factory):
    with pytest.raises(ValueError, match=r"`task_weights` must be finite and non-negative"):
        factory(task_weights=jnp.array([1.0, -0.5, 2.0]))


@pytest.mark.parametrize("factory", [cg.came_grad, cg.weightings.came], ids=FACTORIES.keys())
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_task_weights_non_finite(factory, bad):
    with pytest.raises(ValueError, match=r"`task_weights` must be finite and non-negative"):
        factory(task_weights=jnp.array([1.0, bad]))


@pytest.mark.parametrize("shape", [(0,), (2, 1), ()])
def test_task_weights_not_a_vector(shape):
    with pytest.raises(ValueError, match=r"`task_weights` must be a non-empty 1-D vector"):
        cg.came_grad(task_weights=jnp.ones(shape))


def test_task_weights_wrong_length_vs_num_tasks():
    msg = re.escape("`task_weights` has 3 entries but `num_tasks` is 2")
    with pytest.raises(ValueError, match=msg):
        cg.came_grad(task_weights=jnp.ones(3), num_tasks=2)


def test_num_tasks_and_task_weights_disagree_in_weighting_init():
    """The weighting's own check, reached through `aggregate` with a different `num_tasks`."""
    tx = cg.aggregate(cg.weightings.came(task_weights=jnp.ones(3)), num_tasks=2)
    with pytest.raises(ValueError, match=r"`task_weights` has 3 entries .* 2 tasks"):
        tx.init(PARAMS)


def test_task_weights_wrong_length_vs_jacobian_at_update():
    """Per-step weights of the wrong length; raised while tracing."""
    tx = cg.came_grad(num_tasks=3)
    msg = re.escape("`task_weights` has 2 entries but the Gram matrix is 3×3")
    with pytest.raises(ValueError, match=msg):
        jax.jit(tx.update)(make_jac(3), init_state(tx), task_weights=jnp.ones(2))


def test_task_weights_negative_at_update():
    """Per-step weights known at trace time are checked like the constructor's."""
    tx = cg.came_grad(num_tasks=3)
    weights = np.array([1.0, -1.0, 1.0], np.float32)
    with pytest.raises(ValueError, match=r"`task_weights` must be finite and non-negative"):
        jax.jit(lambda j, s: tx.update(j, s, task_weights=weights))(make_jac(3), init_state(tx))


def test_jacobian_num_tasks_differs_from_task_weights():
    tx = cg.came_grad(task_weights=jnp.ones(3))
    msg = r"`updates` \(the Jacobian\) has 2 tasks .* initialised for 3.*first transformation"
    with pytest.raises(ValueError, match=msg):
        tx.update(make_jac(2), init_state(tx))


# --- num_tasks ------------------------------------------------------------------------------


def test_init_without_task_weights_or_num_tasks():
    tx = cg.came_grad()
    with pytest.raises(ValueError, match=r"pass `num_tasks` \(or `task_weights`"):
        tx.init(PARAMS)


@pytest.mark.parametrize("num_tasks", [0, -1, 2.0])
def test_num_tasks_not_a_positive_integer(num_tasks):
    with pytest.raises(ValueError, match=r"`num_tasks` must be a positive integer"):
        cg.came_grad(num_tasks=num_tasks)


# --- the Jacobian at update -----------------------------------------------------------------


def test_integer_jacobian_leaf_at_update():
    tx = cg.came_grad(num_tasks=2)
    jac = {**make_jac(2), "b": jnp.ones((2, 4), jnp.int32)}
    msg = re.escape("`updates` leaf ['b'] has dtype int32") + ".*expected floating-point"
    with pytest.raises(TypeError, match=msg):
        tx.update(jac, init_state(tx))


def test_leading_axes_differ_at_update():
    tx = cg.came_grad(num_tasks=2)
    jac = {**make_jac(2), "w": jnp.ones((3, 2, 3))}
    msg = re.escape("`updates` leaves disagree on the number of tasks: ['b'] has leading axis 2")
    with pytest.raises(ValueError, match=msg + r".*\['w'\] has 3"):
        tx.update(jac, init_state(tx))


def test_plain_gradients_instead_of_jacobian():
    """The transformation not first in the chain: it receives one gradient, not K stacked."""
    tx = cg.came_grad(num_tasks=2)
    msg = (
        r"`updates` \(the Jacobian\) has 4 tasks .* initialised for 2"
        r".*first transformation.*\(K, \.\.\.\)"
    )
    with pytest.raises(ValueError, match=msg):
        tx.update({"b": jnp.ones(4)}, init_state(tx))
    with pytest.raises(ValueError, match=re.escape("`updates` leaf ['x'] is a scalar")):
        tx.update({"x": jnp.ones(())}, init_state(tx))


def test_plain_gradients_in_a_chain():
    tx = optax.chain(optax.scale(-1.0), cg.came_grad(num_tasks=2))
    with pytest.raises(ValueError, match=r"`updates` .* has 4 tasks .* first transformation"):
        tx.update({"b": jnp.ones(4)}, tx.init(PARAMS))


def test_empty_jacobian_at_update():
    tx = cg.came_grad(num_tasks=2)
    with pytest.raises(ValueError, match=r"`updates` has no array leaves"):
        tx.update({}, init_state(tx))


# --- NaN / Inf policy -----------------------------------------------------------------------

TX3 = cg.came_grad(num_tasks=3)
UPDATE3 = jax.jit(TX3.update)


def poisoned(jac, value):
    w = np.array(jac["w"])
    w[1, 0, 2] = value
    return {**jac, "w": jnp.asarray(w)}


def assert_trees_equal(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        assert x.dtype == y.dtype and x.shape == y.shape
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_non_finite_jacobian_skips_the_step_under_jit():
    state0 = init_state(TX3)
    update1, state1 = UPDATE3(make_jac(3, seed=1), state0)
    assert int(optax.tree.get(state1, "skipped_steps")) == 0
    assert all(np.any(np.asarray(u) != 0) for u in jax.tree.leaves(update1))

    state = state1
    for skipped, value in enumerate([np.nan, np.inf, -np.inf], start=1):
        update, new_state = UPDATE3(poisoned(make_jac(3, seed=2), value), state)
        for leaf, param in zip(jax.tree.leaves(update), jax.tree.leaves(PARAMS), strict=True):
            assert leaf.shape == param.shape and leaf.dtype == param.dtype
            np.testing.assert_array_equal(np.asarray(leaf), 0.0)
        assert int(optax.tree.get(new_state, "skipped_steps")) == skipped
        # Every other leaf of the state is exactly the previous one.
        assert_trees_equal(new_state._replace(skipped_steps=state.skipped_steps), state)
        assert_trees_equal(new_state._replace(skipped_steps=state1.skipped_steps), state1)
        state = new_state

    # The next finite step works as if the skipped ones had never happened.
    jac = make_jac(3, seed=2)
    update, after = UPDATE3(jac, state)
    expected_update, expected_state = UPDATE3(jac, state1)
    assert_trees_equal(update, expected_update)
    assert all(np.all(np.isfinite(np.asarray(u))) for u in jax.tree.leaves(update))
    assert any(np.any(np.asarray(u) != 0) for u in jax.tree.leaves(update))
    assert int(optax.tree.get(after, "skipped_steps")) == 3
    assert_trees_equal(after._replace(skipped_steps=expected_state.skipped_steps), expected_state)


def test_non_finite_jacobian_at_the_first_step():
    state0 = init_state(TX3)
    update, state = UPDATE3(poisoned(make_jac(3), np.nan), state0)
    assert all(not np.any(np.asarray(u)) for u in jax.tree.leaves(update))
    assert int(optax.tree.get(state, "skipped_steps")) == 1
    assert_trees_equal(state._replace(skipped_steps=state0.skipped_steps), state0)


def test_non_finite_jacobian_with_finite_gram_entries():
    """A NaN in one leaf and an Inf in another: the step is still skipped."""
    state0 = init_state(TX3)
    jac = poisoned(make_jac(3), np.nan)
    b = np.array(jac["b"])
    b[0, 0] = np.inf
    update, state = UPDATE3({**jac, "b": jnp.asarray(b)}, state0)
    assert all(not np.any(np.asarray(u)) for u in jax.tree.leaves(update))
    assert int(optax.tree.get(state, "skipped_steps")) == 1


@pytest.mark.parametrize(
    "weighting",
    [cg.weightings.linear(jnp.array([1.0, 0.0, 2.0])), cg.weightings.rlw(seed=3)],
    ids=["linear-zero-weight", "rlw"],
)
@pytest.mark.parametrize("value", [np.nan, np.inf], ids=["nan", "inf"])
def test_gram_free_weightings_skip_non_finite_steps(weighting, value):
    """Without a Gram matrix the NaN/Inf is found in J^T c, even under a zero coefficient."""
    assert not weighting.uses_gram
    tx = cg.aggregate(weighting, num_tasks=3)
    state0 = init_state(tx)
    update, state = jax.jit(tx.update)(poisoned(make_jac(3), value), state0)
    assert all(not np.any(np.asarray(u)) for u in jax.tree.leaves(update))
    assert int(optax.tree.get(state, "skipped_steps")) == 1
    assert_trees_equal(state._replace(skipped_steps=state0.skipped_steps), state0)


# --- diagnostics in a chained state ---------------------------------------------------------

CHAIN = optax.chain(cg.came_grad(num_tasks=2), optax.adamw(1e-3))
CHAIN_UPDATE = jax.jit(CHAIN.update)


def test_diagnostics_readable_from_chained_state():
    state0 = CHAIN.init(PARAMS)
    assert optax.tree.get(state0, "gain").shape == ()
    assert optax.tree.get(state0, "fusion").shape == ()
    assert optax.tree.get(state0, "dual_weights").shape == (2,)
    assert optax.tree.get(state0, "cosines").shape == (2, 2)

    jac = make_jac(2, seed=3)
    updates, state = CHAIN_UPDATE(jac, state0, PARAMS)
    for leaf, param in zip(jax.tree.leaves(updates), jax.tree.leaves(PARAMS), strict=True):
        assert leaf.shape == param.shape
        assert np.all(np.isfinite(np.asarray(leaf)))

    gain = float(optax.tree.get(state, "gain"))
    fusion = float(optax.tree.get(state, "fusion"))
    dual = np.asarray(optax.tree.get(state, "dual_weights"))
    assert 0.0 < gain <= 1.5
    assert 0.0 <= fusion <= np.float32(0.2)
    assert dual.shape == (2,) and np.all(dual >= 0.0)
    assert dual.sum() == pytest.approx(1.0, abs=1e-5)
    assert int(optax.tree.get(state, "skipped_steps")) == 0

    flat = np.concatenate(
        [np.asarray(leaf, np.float64).reshape(2, -1) for leaf in jax.tree.leaves(jac)], axis=1
    )
    norms = np.linalg.norm(flat, axis=1)
    expected = (flat @ flat.T) / np.outer(norms, norms)
    cosines = np.asarray(optax.tree.get(state, "cosines"), np.float64)
    np.testing.assert_allclose(cosines, expected, atol=1e-6)
