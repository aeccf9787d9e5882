"""cg.accumulate: k micro-batches of equal size make one big-batch step, under jit."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import camegrad_jax as cg

K, EVERY_K, CYCLES, MICRO = 2, 3, 3, 4


def task_losses(params, x, y):
    """Two mean losses over the batch: a regression and a sparsity-like term on its own input."""
    pred = x @ params["w"] + params["b"]
    return jnp.stack([jnp.mean((pred - y) ** 2), jnp.mean(jnp.abs(pred - 0.5 * y))])


value_and_jac = cg.value_and_jacobian(task_losses)
PARAMS = {"w": jnp.array([0.3, -0.2, 0.1]), "b": jnp.zeros(())}


def data(cycle):
    """One big batch of EVERY_K * MICRO examples; micro-batches are consecutive slices."""
    x = jax.random.normal(jax.random.key(cycle), (EVERY_K * MICRO, 3))
    return x, x @ jnp.array([1.0, -2.0, 0.5]) + 0.1


def inner_chains():
    return {
        "came": optax.chain(cg.came_grad(task_weights=jnp.array([1.0, 4.0])), optax.adam(0.05)),
        # A loss-based weighting: the averaged `losses` must be the big batch's losses.
        "dwa": optax.chain(cg.dwa(num_tasks=K), optax.adam(0.05)),
    }


@functools.partial(jax.jit, static_argnums=0)
def train_step(tx, params, state, x, y):
    losses, jac = value_and_jac(params, x, y)
    updates, state = tx.update(jac, state, params, losses=losses)
    return optax.apply_updates(params, updates), state, updates


def assert_trees_close(a, b, **kw):
    jax.tree.map(lambda u, v: np.testing.assert_allclose(u, v, **kw), a, b)


@pytest.mark.parametrize("name", ["came", "dwa"])
def test_cycles_equal_big_batch_steps_with_adam(name):
    big_tx = inner_chains()[name]
    acc_tx = cg.accumulate(inner_chains()[name], every_k=EVERY_K)
    big_params, big_state = PARAMS, big_tx.init(PARAMS)
    params, state = PARAMS, acc_tx.init(PARAMS)
    assert state.mean_jacobian["w"].shape == (K, 3)  # K read from the inner AggregateState
    for cycle in range(CYCLES):
        x, y = data(cycle)
        big_params, big_state, _ = train_step(big_tx, big_params, big_state, x, y)
        for m in range(EVERY_K):
            before = state.inner_state
            sl = slice(m * MICRO, (m + 1) * MICRO)
            params, state, updates = train_step(acc_tx, params, state, x[sl], y[sl])
            if m < EVERY_K - 1:  # in between: a zero update shaped like the params, no state change
                assert jax.tree.map(jnp.shape, updates) == jax.tree.map(jnp.shape, PARAMS)
                assert all(not np.any(u) for u in jax.tree.leaves(updates))
                jax.tree.map(np.testing.assert_array_equal, state.inner_state, before)
        assert int(state.micro_step) == 0 and int(state.applied_steps) == cycle + 1
        if cycle == 0:
            compiled = train_step._cache_size()
        assert_trees_close(params, big_params, rtol=1e-6, atol=1e-6)
        assert_trees_close(state.inner_state, big_state, rtol=1e-5, atol=1e-6)
    assert int(optax.tree.get(state, "count")) == CYCLES  # Adam stepped once per cycle
    # One compilation served every micro-step: the step counter is traced, the state stable.
    assert train_step._cache_size() == compiled


def test_losses_are_averaged_and_other_args_come_from_the_last_micro_step():
    """`losses` is averaged over the cycle; other keyword arguments are the last call's."""
    seen = {}

    def spy_update(updates, state, params=None, **extra):
        seen.update(extra)
        return jax.tree.map(lambda u: u[0], updates), state

    spy = optax.GradientTransformationExtraArgs(lambda p: optax.EmptyState(), spy_update)
    tx = cg.accumulate(spy, every_k=2, num_tasks=2)
    params = {"w": jnp.zeros(2)}
    state = tx.init(params)
    jac = {"w": jnp.ones((2, 2))}
    _, state = tx.update(jac, state, params, losses=jnp.array([1.0, 3.0]), tag=jnp.array(1))
    np.testing.assert_allclose(state.mean_args["losses"], [1.0, 3.0])
    _, state = tx.update(jac, state, params, losses=jnp.array([3.0, 5.0]), tag=jnp.array(2))
    np.testing.assert_allclose(seen["losses"], [2.0, 4.0])
    assert int(seen["tag"]) == 2
    assert bool(state.ready) and int(state.micro_step) == 0
    np.testing.assert_array_equal(state.mean_args["losses"], 0.0)  # reset for the next cycle
    # every_k=1 applies at every call, with the call's own arguments.
    tx = cg.accumulate(spy, every_k=1, num_tasks=2)
    update, state = tx.update(jac, tx.init(params), params, losses=jnp.array([5.0, 7.0]))
    np.testing.assert_allclose(seen["losses"], [5.0, 7.0])
    np.testing.assert_array_equal(update["w"], 1.0)


def test_works_with_nnx_optimizer():
    model = nnx.Linear(3, 1, rngs=nnx.Rngs(0))
    mean_grad = cg.aggregate(cg.weightings.mean(), num_tasks=K)  # cheap to compile
    tx = cg.accumulate(optax.chain(mean_grad, optax.adam(0.05)), every_k=2)
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    from camegrad_jax import nnx as cgnnx

    def losses_fn(model, x, y):
        pred = model(x)[:, 0]
        return jnp.stack([jnp.mean((pred - y) ** 2), jnp.mean(pred**2)])

    @nnx.jit
    def step(model, optimizer, x, y):
        losses, jac = cgnnx.value_and_jacobian(losses_fn)(model, x, y)
        optimizer.update(model, jac, losses=losses)

    x, y = data(2)
    kernel0 = np.asarray(model.kernel[...])
    step(model, optimizer, x[:MICRO], y[:MICRO])
    np.testing.assert_array_equal(model.kernel[...], kernel0)  # held back
    step(model, optimizer, x[MICRO : 2 * MICRO], y[MICRO : 2 * MICRO])
    assert not np.allclose(model.kernel[...], kernel0)
    assert cg.diagnostics(optimizer)["skipped_steps"] == 0.0


def test_clear_errors():
    with pytest.raises(ValueError, match="every_k"):
        cg.accumulate(optax.sgd(0.1), every_k=0)
    with pytest.raises(ValueError, match="num_tasks"):
        cg.accumulate(optax.sgd(0.1), every_k=2).init(PARAMS)  # no aggregation inside
    tx = cg.accumulate(optax.chain(cg.came_grad(num_tasks=K), optax.sgd(0.1)), every_k=2)
    with pytest.raises(ValueError, match="stacked Jacobian"):
        tx.update({"b": jnp.ones(3), "w": jnp.ones((3, 3))}, tx.init(PARAMS), PARAMS)
    with pytest.raises(ValueError, match="losses"):
        x, y = data(0)
        _, jac = value_and_jac(PARAMS, x, y)
        tx.update(jac, tx.init(PARAMS), PARAMS, losses=jnp.ones(3))


def test_optax_multisteps_cannot_accumulate_jacobians():
    """optax.MultiSteps keeps a params-shaped accumulator: the Jacobian does not fit it."""
    tx = optax.MultiSteps(optax.chain(cg.came_grad(num_tasks=K), optax.sgd(0.1)), 2)
    x, y = data(0)
    _, jac = value_and_jac(PARAMS, x, y)
    with pytest.raises(ValueError, match=r"optax\.MultiSteps cannot wrap.*cg\.accumulate"):
        jax.jit(tx.update)(jac, tx.init(PARAMS), PARAMS)
