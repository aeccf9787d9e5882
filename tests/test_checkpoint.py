"""Every transformation's optimiser state round-trips through orbax and flax serialization.

A run saved after a few steps, restored and continued equals the uninterrupted run bit for bit,
PRNG keys (RLW, PCGrad, GradVac) and the loss-based weightings' inner Adam states included.
All chains step together in one jitted function, so the file compiles once.
"""

from __future__ import annotations

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest

import camegrad_jax as cg

K, SAVE_AT, TOTAL = 2, 2, 4
PARAMS = {"w": jnp.zeros(3), "b": jnp.zeros(2)}

AGGREGATIONS = {
    "came_grad": cg.came_grad(task_weights=jnp.array([1.0, 4.0])),
    "mean": cg.aggregate(cg.weightings.mean(), num_tasks=K),
    "mgda": cg.mgda(num_tasks=K),
    "pcgrad": cg.pcgrad(num_tasks=K),
    "gradvac": cg.gradvac(num_tasks=K),
    "cagrad": cg.cagrad(num_tasks=K),
    "nash_mtl": cg.nash_mtl(num_tasks=K),
    "imtl_g": cg.imtl_g(num_tasks=K),
    "aligned_mtl": cg.aligned_mtl(num_tasks=K),
    "upgrad": cg.upgrad(num_tasks=K),
    "dualproj": cg.dualproj(num_tasks=K),
    "config": cg.config(num_tasks=K),
    "fairgrad": cg.fairgrad(num_tasks=K),
    "rlw": cg.rlw(num_tasks=K),
    "famo": cg.famo(num_tasks=K),
    "dwa": cg.dwa(num_tasks=K),
    "uncertainty": cg.uncertainty(num_tasks=K),
}
NAMES = list(AGGREGATIONS)
CHAINS = {name: optax.chain(tx, optax.adam(1e-2)) for name, tx in AGGREGATIONS.items()}
# Conflicting Jacobians (the rows of `w` point in opposite directions) and positive losses.
JACS = [
    {
        "w": jax.random.normal(jax.random.key(t), (K, 3)) * jnp.array([[1.0], [-1.0]]),
        "b": jax.random.normal(jax.random.key(100 + t), (K, 2)),
    }
    for t in range(TOTAL)
]
LOSSES = [jnp.exp(jax.random.normal(jax.random.key(200 + t), (K,))) for t in range(TOTAL)]


@jax.jit
def step_all(tree, jac, losses):
    """One step of every chain; ``tree`` is ``{"params": {name: ...}, "states": {name: ...}}``."""
    params, states = {}, {}
    for name, tx in CHAINS.items():
        p = tree["params"][name]
        updates, states[name] = tx.update(jac, tree["states"][name], p, losses=losses)
        params[name] = optax.apply_updates(p, updates)
    return {"params": params, "states": states}


def initial():
    """The initial tree, committed to one device as orbax's restored arrays are.

    ``jit`` keys its cache on whether arguments are committed to a device, so a live state
    left uncommitted would compile the step a second time for the restored one.
    """
    tree = {
        "params": dict.fromkeys(NAMES, PARAMS),
        "states": {name: tx.init(PARAMS) for name, tx in CHAINS.items()},
    }
    return jax.device_put(tree, jax.devices()[0])


def run(tree, steps):
    for t in steps:
        tree = step_all(tree, JACS[t], LOSSES[t])
    return tree


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    uninterrupted = run(initial(), range(TOTAL))
    saved = run(initial(), range(SAVE_AT))

    path = tmp_path_factory.mktemp("orbax") / "step"
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(path, saved)
    checkpointer.wait_until_finished()
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, initial())
    from_orbax = checkpointer.restore(path, abstract)
    checkpointer.close()

    from_flax = flax.serialization.from_bytes(initial(), flax.serialization.to_bytes(saved))
    from_flax = jax.device_put(from_flax, jax.devices()[0])
    return {
        "uninterrupted": uninterrupted,
        "saved": saved,
        "restored": {"orbax": from_orbax, "flax": from_flax},
        "resumed": {
            "orbax": run(from_orbax, range(SAVE_AT, TOTAL)),
            "flax": run(from_flax, range(SAVE_AT, TOTAL)),
        },
    }


def pick(tree, name):
    return {"params": tree["params"][name], "states": tree["states"][name]}


def assert_identical(got, expected):
    assert jax.tree.structure(got) == jax.tree.structure(expected)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(expected), strict=True):
        assert np.asarray(a).dtype == np.asarray(b).dtype
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("backend", ["orbax", "flax"])
@pytest.mark.parametrize("name", NAMES)
def test_state_round_trips(runs, name, backend):
    restored = pick(runs["restored"][backend], name)
    assert_identical(restored, pick(runs["saved"], name))
    # NamedTuple states come back as themselves, so optax.tree.get still finds the diagnostics.
    assert isinstance(optax.tree.get(restored["states"], "AggregateState"), cg.AggregateState)


@pytest.mark.parametrize("backend", ["orbax", "flax"])
@pytest.mark.parametrize("name", NAMES)
def test_resumed_run_equals_uninterrupted(runs, name, backend):
    assert_identical(pick(runs["resumed"][backend], name), pick(runs["uninterrupted"], name))


def test_prng_keys_advance_and_are_restored(runs):
    for name in ("rlw", "pcgrad", "gradvac"):
        key = optax.tree.get(runs["saved"]["states"][name], "key")
        assert key.dtype == jnp.uint32
        initial_key = optax.tree.get(initial()["states"][name], "key")
        assert not np.array_equal(key, initial_key), name  # the key moved with the steps
        for backend in ("orbax", "flax"):
            restored = optax.tree.get(runs["restored"][backend]["states"][name], "key")
            np.testing.assert_array_equal(restored, key)


def test_restored_states_reuse_the_compiled_step(runs):
    """Restored arrays have the dtypes, shapes and placement of the live ones: one compilation."""
    del runs
    assert step_all._cache_size() == 1
