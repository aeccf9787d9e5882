"""optax's wrappers and utilities around a chain that aggregates a stacked Jacobian.

What works as is: ``optax.experimental.aggregating.process`` (the aggregation as its aggregator),
``optax.inject_hyperparams`` (values and schedules), ``optax.named_chain``,
``optax.apply_if_finite`` after the aggregation, ``optax.tree.get``. What does not: wrappers that
build a zero update shaped like their input around the aggregation (``optax.apply_if_finite``
before it, optax's accumulators); ``cg.apply_if_finite`` and ``cg.accumulate`` replace them.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from optax.experimental import aggregating

import camegrad_jax as cg

PARAMS = {"w": jnp.zeros(3), "b": jnp.zeros(2)}
JACS = [
    {
        "w": jax.random.normal(jax.random.key(i), (2, 3)),
        "b": jax.random.normal(jax.random.key(10 + i), (2, 2)),
    }
    for i in range(3)
]
NAN_JAC = jax.tree.map(lambda x: x.at[0].set(jnp.nan), JACS[0])


_STEPS: dict[int, tuple] = {}


def run(tx, jacs, **extra):
    """Updates of a jitted loop over ``jacs`` (params fixed), and the final state.

    The jitted update is cached per transformation object, so module-level transformations
    compile once for the whole file.
    """
    if id(tx) not in _STEPS:
        _STEPS[id(tx)] = (tx, jax.jit(tx.update))
    step = _STEPS[id(tx)][1]
    state, out = tx.init(PARAMS), []
    for jac in jacs:
        update, state = step(jac, state, PARAMS, **extra)
        out.append(update)
    return out, state


def assert_trees_close(a, b, **kw):
    jax.tree.map(lambda u, v: np.testing.assert_allclose(u, v, **kw), a, b)


REFERENCE = optax.chain(cg.came_grad(num_tasks=2), optax.adam(0.1))
ACCUMULATED = cg.accumulate(REFERENCE, every_k=2)


@jax.jit
def plain_came(jac, task_weights, rho, kappa, nu):
    """Plain came_grad with traced hyperparameters: one compilation for every value."""
    tx = cg.came_grad(task_weights=task_weights, rho=rho, kappa=kappa, nu=nu)
    return tx.update(jac, tx.init(None))[0]


def test_aggregating_process_with_the_aggregation_as_aggregator():
    """Per-task preprocessing, our aggregation, then any optimiser: as the plain chain."""
    # Each task's gradient (a row of the Jacobian, a pytree) projected onto the unit ball.
    clip_per_task = jax.vmap(lambda row: optax.projections.projection_l2_ball(row, 1.0))
    preprocess = optax.stateless(lambda jac, _: clip_per_task(jac))
    tx = aggregating.process(preprocess, cg.came_grad(num_tasks=2), optax.adam(0.1))
    clipped = [clip_per_task(jac) for jac in JACS]
    assert float(optax.tree.norm(jax.tree.map(lambda g: g[0], clipped[0]))) <= 1.0 + 1e-6
    got, state = run(tx, JACS)
    expected, _ = run(REFERENCE, clipped)
    assert_trees_close(got, expected, rtol=1e-5, atol=1e-7)  # clipping fused differently
    assert float(optax.tree.get(state, "gain")) > 0.0


def test_aggregating_process_with_accumulate_as_aggregator():
    """`cg.accumulate(aggregation, k)` sets the `ready` flag process runs its postprocessor on."""
    tx = aggregating.process(
        optax.identity(), cg.accumulate(cg.came_grad(num_tasks=2), every_k=2), optax.adam(0.1)
    )
    wrapped = ACCUMULATED
    jacs = JACS + JACS[:1]
    got, state = run(tx, jacs)
    expected, _ = run(wrapped, jacs)
    assert_trees_close(got, expected, rtol=1e-6)
    assert int(optax.tree.get(state, "count")) == 2  # Adam ran on the two applied steps only


def test_aggregating_process_cannot_use_optaxs_accumulator_on_jacobians():
    """optax's accumulator is params-shaped, and process's zero update is input-shaped."""
    tx = aggregating.process(
        optax.identity(), aggregating.average_incrementally_updates(None, 2), REFERENCE
    )
    with pytest.raises((TypeError, ValueError)):
        run(tx, JACS[:1])


def test_inject_hyperparams_with_schedules():
    """rho, kappa, nu follow schedules, task_weights is injected; num_tasks stays static.

    (Injected constant values are covered by the contract suite, tests/contract.py.)
    """
    rho = optax.linear_schedule(0.0, 1.0, 2)
    weights = jnp.array([1.0, 4.0])
    hyper = {
        "rho": rho,
        "kappa": optax.linear_schedule(1.0, 3.0, 2),
        "nu": optax.linear_schedule(0.5, 0.0, 2),
        "task_weights": weights,
    }
    tx = optax.chain(
        optax.inject_hyperparams(cg.came_grad, static_args=("num_tasks",))(**hyper, num_tasks=2),
        optax.sgd(1.0),
    )
    got, state = run(tx, JACS)
    for t, jac in enumerate(JACS):
        values = [hyper[name](t) for name in ("rho", "kappa", "nu")]
        expected = plain_came(jac, weights, *values)
        assert_trees_close(got[t], jax.tree.map(jnp.negative, expected), rtol=1e-5, atol=1e-6)
    hyperparams = optax.tree.get(state, "hyperparams")
    np.testing.assert_allclose(hyperparams["rho"], rho(len(JACS) - 1), rtol=1e-6)
    assert cg.diagnostics(state)["hyperparams/task_weights/1"] == 4.0
    # A changed value takes effect at the next step without recompiling.
    hyperparams["task_weights"] = jnp.array([4.0, 1.0])
    swapped, _ = jax.jit(tx.update)(JACS[0], state, PARAMS)
    assert not np.allclose(swapped["w"], got[0]["w"])


def test_named_chain():
    tx = optax.named_chain(("aggregate", cg.came_grad(num_tasks=2)), ("adam", optax.adam(0.1)))
    got, state = run(tx, JACS)
    expected, _ = run(REFERENCE, JACS)
    assert_trees_close(got, expected, rtol=1e-6)
    assert isinstance(state["aggregate"], cg.AggregateState)
    assert cg.diagnostics(state)["gain"] == float(state["aggregate"].weighting_state.gain)


def test_apply_if_finite_after_the_aggregation():
    """It wraps the optimiser fine; but the aggregation already zeroes a non-finite step."""
    tx = optax.chain(cg.came_grad(num_tasks=2), optax.apply_if_finite(optax.adam(0.1), 3))
    got, _ = run(tx, JACS)
    expected, _ = run(REFERENCE, JACS)
    assert_trees_close(got, expected, rtol=1e-6)
    (_, second), state = run(tx, [JACS[0], NAN_JAC])
    # The aggregation skipped the NaN step (zero update, counted) ...
    assert int(optax.tree.get(state, "skipped_steps")) == 1
    # ... so apply_if_finite saw a finite zero, and Adam stepped on it with its momentum.
    assert int(optax.tree.get(state, "total_notfinite")) == 0
    assert int(optax.tree.get(state, "count")) == 2
    assert np.all(np.isfinite(second["w"])) and np.any(second["w"] != 0.0)


def test_apply_if_finite_before_the_aggregation_fails():
    """optax's zero update is shaped like the Jacobian, the chain's like the params: the error
    names the replacement."""
    tx = optax.apply_if_finite(REFERENCE, 3)
    with pytest.raises(
        ValueError, match=r"optax\.apply_if_finite cannot wrap.*cg\.apply_if_finite"
    ):
        run(tx, JACS[:1])


def test_cg_apply_if_finite_skips_the_whole_step():
    tx = cg.apply_if_finite(REFERENCE, max_consecutive_errors=1)
    got, _ = run(tx, JACS)
    expected, _ = run(REFERENCE, JACS)
    assert_trees_close(got, expected, rtol=1e-6)
    updates, state = run(tx, [JACS[0], NAN_JAC, JACS[1]])
    assert all(not np.any(u) for u in jax.tree.leaves(updates[1]))
    assert int(optax.tree.get(state, "total_notfinite")) == 1
    assert int(optax.tree.get(state, "count")) == 2  # Adam skipped the NaN step entirely
    assert int(optax.tree.get(state, "skipped_steps")) == 0
    expected, _ = run(REFERENCE, [JACS[0], JACS[1]])
    assert_trees_close(updates[2], expected[1], rtol=1e-6)
    # Past max_consecutive_errors the step goes through (and the aggregation zeroes it).
    _, state = run(tx, [NAN_JAC, NAN_JAC])
    assert int(optax.tree.get(state, "skipped_steps")) == 1


def test_cg_apply_if_finite_around_accumulate_drops_one_micro_batch():
    tx = cg.apply_if_finite(ACCUMULATED, max_consecutive_errors=5)
    got, state = run(tx, [JACS[0], NAN_JAC, JACS[1]])
    expected, _ = run(ACCUMULATED, [JACS[0], JACS[1]])
    assert_trees_close(got[2], expected[1], rtol=1e-6)
    assert int(optax.tree.get(state, "applied_steps")) == 1


def test_tree_get_reads_the_diagnostics():
    _, state = run(REFERENCE, JACS[:1])
    assert 0.0 < float(optax.tree.get(state, "gain")) <= 1.5 + 1e-6
    assert 0.0 <= float(optax.tree.get(state, "fusion")) <= 0.2 + 1e-6
    assert optax.tree.get(state, "cosines").shape == (2, 2)
    assert optax.tree.get(state, "coefficients").shape == (2,)
    assert int(optax.tree.get(state, "skipped_steps")) == 0
    assert isinstance(optax.tree.get(state, "AggregateState"), cg.AggregateState)
