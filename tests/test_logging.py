"""cg.diagnostics: a flat {name: float} dict from any optimiser state holding an aggregation.

Only the state's structure matters, so most tests read freshly initialised states (no step to
compile); values are set with ``optax.tree.set`` where they are checked.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import camegrad_jax as cg

PARAMS = {"dec": {"w": jnp.zeros(3)}, "enc": {"w": jnp.zeros(2)}}
CHAIN = optax.chain(cg.came_grad(task_weights=jnp.array([1.0, 4.0])), optax.adam(0.1))


def came_chain_state():
    """An initialised chain state with step-like diagnostics."""
    return optax.tree.set(
        CHAIN.init(PARAMS),
        gain=jnp.array(1.25),
        fusion=jnp.array(0.125),
        cosines=jnp.array([[1.0, -0.5], [-0.5, 1.0]]),
        coefficients=jnp.array([1.5, 4.5]),
        skipped_steps=jnp.array(2, jnp.int32),
    )


def test_came_chain_keys_and_values():
    state = came_chain_state()
    logs = cg.diagnostics(state)
    assert sorted(logs) == [
        "coefficients/0",
        "coefficients/1",
        "cosines/0/1",
        "dual_weights/0",
        "dual_weights/1",
        "fusion",
        "gain",
        "residual",
        "skipped_steps",
    ]
    assert all(type(v) is float for v in logs.values())
    assert logs["gain"] == 1.25 and logs["fusion"] == 0.125 and logs["cosines/0/1"] == -0.5
    assert logs["coefficients/1"] == 4.5 and logs["skipped_steps"] == 2.0
    assert logs["dual_weights/0"] == 0.5


def test_jit_variant_keeps_whole_arrays_that_flatten_to_the_logs():
    """One entry per field at any K (K = 32: 10 arrays, not 563 scalars); flattened on the
    host they are the logged values, with task names in place of indices when given."""
    state = came_chain_state()
    arrays = jax.jit(cg.diagnostic_arrays)(state)
    assert arrays["cosines"].shape == (2, 2) and arrays["coefficients"].shape == (2,)
    logs = cg.diagnostics(state)
    flat = {}
    for key, value in jax.device_get(arrays).items():
        for index in np.ndindex(*value.shape):
            if key == "cosines" and index[0] >= index[1]:
                continue
            flat["/".join([key, *map(str, index)])] = float(value[index])
    assert flat == logs
    named = cg.diagnostics(state, task_names=["lm", "cls"])
    assert named["cosines/lm/cls"] == logs["cosines/0/1"] and "cosines/cls/lm" not in named
    assert named["coefficients/cls"] == logs["coefficients/1"] and named["gain"] == logs["gain"]
    big = cg.came_grad(num_tasks=32).init(None)
    assert len(jax.jit(cg.diagnostic_arrays)(big)) == len(arrays)
    assert len(cg.diagnostics(big)) == 32 + 32 + 32 * 31 // 2 + 4


def test_groups_get_a_group_part():
    tx = cg.came_grad(num_tasks=2, groups="top_level")
    logs = cg.diagnostics(tx.init(PARAMS))
    assert {"gain/group0", "gain/group1", "coefficients/group1/0", "cosines/group0/0/1"} <= set(
        logs
    )
    assert "gain" not in logs and logs["skipped_steps"] == 0.0


def test_wrappers_nnx_and_several_aggregations():
    # accumulate + inject_hyperparams: the wrapped diagnostics and the injected values.
    injected = optax.inject_hyperparams(cg.came_grad, static_args=("num_tasks",))(
        rho=0.3, num_tasks=2
    )
    tx = cg.accumulate(optax.chain(injected, optax.adam(0.1)), every_k=1)
    logs = cg.diagnostics(tx.init(PARAMS))
    assert {"gain", "fusion", "hyperparams/rho", "hyperparams/nu"} <= set(logs)
    np.testing.assert_allclose(logs["hyperparams/rho"], 0.3, rtol=1e-6)
    # Two aggregations (one per parameter partition) get prefixes.
    split = optax.multi_transform(
        {"dec": cg.came_grad(num_tasks=2), "enc": cg.aggregate(cg.weightings.mean(), num_tasks=2)},
        {"dec": "dec", "enc": "enc"},
    )
    logs = cg.diagnostics(split.init(PARAMS))
    assert {"aggregate0/gain", "aggregate0/coefficients/0", "aggregate1/coefficients/0"} <= set(
        logs
    )
    # An nnx.Optimizer, and its nnx.State (where NamedTuples became plain mappings).
    model = nnx.Linear(2, 1, rngs=nnx.Rngs(0))
    optimizer = nnx.Optimizer(
        model, optax.chain(cg.came_grad(num_tasks=2), optax.sgd(0.1)), wrt=nnx.Param
    )
    from_optimizer = cg.diagnostics(optimizer)
    assert from_optimizer == cg.diagnostics(nnx.state(optimizer))
    assert from_optimizer["gain"] == 1.0 and "cosines/0/1" in from_optimizer


def test_keys_and_counters_of_stateful_baselines():
    """PRNG keys and index arrays are left out; float diagnostics and counters stay."""
    logs = cg.diagnostics(cg.pcgrad(num_tasks=2).init(None))
    assert set(logs) == {"coefficients/0", "coefficients/1", "skipped_steps"}
    logs = cg.diagnostics(cg.nash_mtl(num_tasks=2).init(None))
    assert {"alpha/0", "step", "residual", "clip_scale"} <= set(logs)
    logs = cg.diagnostics(cg.famo(num_tasks=2).init(None))
    assert "logits/0" in logs and not any("optimizer_state" in k or "mu" in k for k in logs)
    assert cg.diagnostics(optax.adam(0.1).init(PARAMS)) == {}
