"""Sharding contract: the Gram matrix is built from the global Jacobian, on any mesh.

CAME-Grad (and every weighting) is nonlinear in the gradients, so data parallelism must average
the per-task *gradients* over the batch shards and only then build $G = JJ^\\top$; averaging
per-device Gram matrices or per-device updates is a different (wrong) algorithm. Checked here,
on the 8 CPU devices of ``conftest.py``:

* under ``jax.jit`` with ``NamedSharding`` (explicit axes, ``jax.make_mesh``'s default, and
  automatic axes), for a batch-sharded (data parallel), parameter-sharded (FSDP) and mixed 2×4
  mesh: the same updates as one device for four weightings, a replicated Gram matrix, updates
  sharded like the parameters, optimizer state whose types and shardings do not change;
* under ``jax.shard_map``: ``value_and_jacobian(..., axis_name=...)`` gives the one-device
  result, and on a batch built so that the per-device gradients conflict differently from the
  global ones, the two wrong alternatives give measurably different updates.

Shapes are tiny and every mesh compiles one step for all weightings together: compile time
dominates.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

import camegrad_jax as cg
from camegrad_jax import nnx as cgnnx

NUM_TASKS, BATCH, DIM, HIDDEN, STEPS = 2, 16, 4, 8, 3
RTOL = 1e-5
WEIGHTINGS = ("came_grad", "upgrad", "mgda", "nash_mtl")
ADAM = optax.adam(1e-2)
# name: (mesh shape, axis names, batch axis, parameter axis, axis type)
MESHES = {
    "data8": ((8,), ("data",), "data", None, AxisType.Explicit),
    "fsdp8": ((8,), ("fsdp",), "fsdp", "fsdp", AxisType.Explicit),
    "data2xmodel4": ((2, 4), ("data", "model"), "data", "model", AxisType.Explicit),
    "data2xmodel4-auto": ((2, 4), ("data", "model"), "data", "model", AxisType.Auto),
}

pytestmark = pytest.mark.skipif(len(jax.devices()) < 8, reason="needs JAX_NUM_CPU_DEVICES=8")


def make_params(num_tasks=NUM_TASKS):
    k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
    return {
        "w1": jax.random.normal(k1, (DIM, HIDDEN)) / 2.0,
        "b1": 0.1 * jax.random.normal(k2, (HIDDEN,)),
        "w2": jax.random.normal(k3, (HIDDEN, num_tasks)) / 3.0,
    }


def make_batch(num_tasks=NUM_TASKS):
    kx, ky = jax.random.split(jax.random.key(1))
    x = jax.random.normal(kx, (BATCH, DIM))
    return x, jnp.tanh(x @ jax.random.normal(ky, (DIM, num_tasks)))


def gathered(leaf):
    """``leaf`` replicated: explicit sharding makes the model all-gather FSDP shards itself."""
    mesh = jax.typeof(leaf).sharding.mesh
    if mesh.empty or AxisType.Explicit not in mesh.axis_types:
        return leaf
    return jax.sharding.reshard(leaf, P())


def task_losses(params, x, y):
    """One regression head per task on a shared tanh layer."""
    params = jax.tree.map(gathered, params)
    hidden = jnp.tanh(x @ params["w1"] + params["b1"][None, :])
    return jnp.mean((hidden @ params["w2"] - y) ** 2, axis=0)


TRACES: list[int] = []
# Compile time dominates this file: skip LLVM's expensive optimisations (the partitioning into
# shards and the collectives are decided before, at the HLO level, and are unaffected).
FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


@functools.cache
def transformations(num_tasks):
    return {name: getattr(cg, name)(num_tasks=num_tasks) for name in WEIGHTINGS}


@functools.partial(jax.jit, compiler_options=FAST_COMPILE)
def train_step(params, states, adam_state, x, y):
    """One step: every weighting's update from one Jacobian, and came_grad → adam applied."""
    num_tasks = y.shape[1]
    TRACES.append(num_tasks)
    _, jac = cg.value_and_jacobian(task_losses)(params, x, y)
    updates, new_states = {}, {}
    for name, tx in transformations(num_tasks).items():
        updates[name], new_states[name] = tx.update(jac, states[name], params)
    adam_updates, adam_state = ADAM.update(updates["came_grad"], adam_state, params)
    params = optax.apply_updates(params, adam_updates)
    return params, new_states, adam_state, updates, cg.gramian(jac)


def run(params, x, y):
    """STEPS steps; (updates, gram, params, states, adam_state) after init (no update) and each."""
    states = {name: tx.init(params) for name, tx in transformations(y.shape[1]).items()}
    adam_state = ADAM.init(params)
    history = [(None, None, params, states, adam_state)]
    for _ in range(STEPS):
        params, states, adam_state, updates, gram = train_step(params, states, adam_state, x, y)
        history.append((updates, gram, params, states, adam_state))
    return history


@functools.cache
def single_device_run(num_tasks):
    x, y = make_batch(num_tasks)
    return run(make_params(num_tasks), x, y)


def relative_difference(a, b) -> float:
    """‖a − b‖ / ‖b‖ over all leaves of two pytrees, in float64."""
    a = np.concatenate([np.ravel(np.asarray(v, np.float64)) for v in jax.tree.leaves(a)])
    b = np.concatenate([np.ravel(np.asarray(v, np.float64)) for v in jax.tree.leaves(b)])
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def param_spec(leaf, axis):
    """Shard a parameter's largest axis over ``axis`` (None: replicate)."""
    if axis is None:
        return P()
    spec = [None] * leaf.ndim
    spec[int(np.argmax(leaf.shape))] = axis
    return P(*spec)


def same_types(a, b):
    """Same shape, dtype, weak type (and, under explicit axes, sharding type) leaf by leaf."""
    return jax.tree.map(jax.typeof, a) == jax.tree.map(jax.typeof, b)


def same_shardings(a, b):
    return all(
        x.sharding.is_equivalent_to(y.sharding, x.ndim)
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    )


def check_mesh(mesh_name, num_tasks):
    """Runs STEPS sharded steps; returns the worst relative difference to one device per name."""
    shape, names, batch_axis, param_axis, axis_type = MESHES[mesh_name]
    mesh = jax.make_mesh(shape, names, axis_types=(axis_type,) * len(names))
    params, (x, y) = make_params(num_tasks), make_batch(num_tasks)
    with jax.set_mesh(mesh):
        params = jax.tree.map(
            lambda p: jax.device_put(p, NamedSharding(mesh, param_spec(p, param_axis))), params
        )
        x, y = jax.device_put((x, y), NamedSharding(mesh, P(batch_axis)))
        TRACES.clear()
        history = run(params, x, y)
    # One trace for all the steps: the state's types and shardings do not change.
    assert [num_tasks] == TRACES
    _, _, _, first_states, first_adam = history[0]  # the state as `init` made it
    worst: dict[str, float] = {}
    for (updates, gram, new_params, states, adam_state), expected in zip(
        history[1:], single_device_run(num_tasks)[1:], strict=True
    ):
        assert gram.sharding.is_fully_replicated, gram.sharding
        worst["gram"] = max(worst.get("gram", 0.0), relative_difference(gram, expected[1]))
        for name, update in updates.items():
            assert same_shardings(update, params), (name, update)
            worst[name] = max(worst.get(name, 0.0), relative_difference(update, expected[0][name]))
        assert same_shardings(new_params, params)
        worst["params"] = max(
            worst.get("params", 0.0), relative_difference(new_params, expected[2])
        )
        # The optimizer state keeps the types, dtypes and shardings `init` gave it.
        assert same_types(states, first_states) and same_types(adam_state, first_adam)
        assert same_shardings(states, first_states) and same_shardings(adam_state, first_adam)
        assert same_shardings(adam_state[0].mu, params)
    print(f"{mesh_name} K={num_tasks}:", {k: f"{v:.1e}" for k, v in worst.items()})
    return worst


@pytest.mark.parametrize("mesh_name", list(MESHES))
def test_sharded_jit_matches_one_device(mesh_name):
    worst = check_mesh(mesh_name, NUM_TASKS)
    assert all(v < RTOL for v in worst.values()), worst


@pytest.mark.slow
def test_sharded_jit_matches_one_device_three_tasks():
    """K = 3 takes the iterative solvers (K = 2 is closed-form for CAME-Grad and MGDA)."""
    worst = check_mesh("data2xmodel4", 3)
    assert all(v < RTOL for v in worst.values()), worst


@pytest.mark.parametrize("axis_type", [AxisType.Explicit, AxisType.Auto], ids=["explicit", "auto"])
def test_aggregation_gathers_no_sharded_leaf(axis_type):
    """Leaves sharded on their first or last trailing axis are reduced where they lie.

    Viewing a (K, a, b) leaf as (K, a·b) is free when only ``a`` is sharded (or nothing is),
    but would make the compiler gather a leaf sharded on ``b``: only the K×K partial Gram
    matrices and norms may cross devices (all-reduce), never a leaf.
    """
    mesh = jax.make_mesh((2, 4), ("data", "model"), axis_types=(axis_type,) * 2)
    rng = np.random.default_rng(0)
    jac = {
        "minor": jax.device_put(
            jnp.asarray(rng.standard_normal((2, 6, 16)), jnp.float32),
            NamedSharding(mesh, P(None, None, "model")),
        ),
        "major": jax.device_put(
            jnp.asarray(rng.standard_normal((2, 16, 6)), jnp.float32),
            NamedSharding(mesh, P(None, "model", None)),
        ),
    }
    tx = cg.came_grad(num_tasks=2)
    compiled = jax.jit(tx.update).lower(jac, tx.init(None)).compile()
    hlo = compiled.as_text()
    assert "all-reduce" in hlo  # the partial Gram matrices
    for collective in ("all-gather", "all-to-all", "collective-permute"):
        assert collective not in hlo, collective
    update, _ = compiled(jac, tx.init(None))
    for name in jac:
        expected = NamedSharding(mesh, P(*jac[name].sharding.spec[1:]))
        assert update[name].sharding.is_equivalent_to(expected, update[name].ndim), name


# --- shard_map: pmean of J, then the Gram matrix ----------------------------------------------


def conflicting_batch():
    """A linear two-task problem whose per-device gradients disagree with the global ones.

    ``L_1 = mean(a · w)``, ``L_2 = mean(b · w)``: the gradients are the batch means of ``a`` and
    ``b``. Globally ``g_1 = (1, 0)`` and ``g_2 = (-1, 0.3)`` conflict (cosine ≈ -0.96). Every
    device adds the same offset ``±(0, 4)`` to both tasks (+ on even devices, - on odd ones),
    so each device's own pair of gradients looks aligned (cosine ≈ 0.9): per-device Gram
    matrices hide the conflict and their mean is the true Gram matrix plus 16 everywhere.
    """
    offsets = np.repeat(np.array([4.0, -4.0] * 4), BATCH // 8)[:, None] * np.array([0.0, 1.0])
    a = np.array([1.0, 0.0]) + offsets
    b = np.array([-1.0, 0.3]) + offsets
    return jnp.asarray(np.stack([a, b], axis=1), jnp.float32)  # (BATCH, 2 tasks, 2)


def linear_losses(w, ab):
    return jnp.mean(jnp.einsum("btd,d->bt", ab, w), axis=0)


def came_update(jac):
    tx = cg.came_grad(num_tasks=2)
    update, _ = tx.update(jac, tx.init(None))
    return update


@pytest.fixture(scope="module")
def data_mesh():
    return jax.make_mesh((8,), ("data",))


def shard_mapped(fn, mesh, check_vma=True):
    return jax.jit(
        jax.shard_map(fn, mesh=mesh, in_specs=(P(), P("data")), out_specs=P(), check_vma=check_vma),
        compiler_options=FAST_COMPILE,
    )


@functools.partial(jax.jit, compiler_options=FAST_COMPILE)
def one_device_case(w, ab):
    losses, jac = cg.value_and_jacobian(linear_losses)(w, ab)
    return {"losses": losses, "jac": jac, "gram": cg.gramian(jac), "update": came_update(jac)}


@pytest.fixture(scope="module")
def conflict_case(data_mesh):
    w = jnp.array([0.5, -0.25])
    ab = conflicting_batch()
    sharded = (
        jax.device_put(w, NamedSharding(data_mesh, P())),
        jax.device_put(ab, NamedSharding(data_mesh, P("data"))),
    )
    return sharded, one_device_case(w, ab)


@pytest.mark.parametrize("check_vma", [True, False])
def test_shard_map_axis_name_matches_one_device(data_mesh, conflict_case, check_vma):
    (w, ab), expected = conflict_case

    def step(w, ab):
        losses, jac = cg.value_and_jacobian(linear_losses, axis_name="data")(w, ab)
        return {"losses": losses, "jac": jac, "gram": cg.gramian(jac), "update": came_update(jac)}

    got = shard_mapped(step, data_mesh, check_vma)(w, ab)
    for key, value in expected.items():
        assert relative_difference(got[key], value) < RTOL, key
    # The batch really is conflicting globally: the true Gram matrix has a negative entry.
    assert expected["gram"][0, 1] < 0


def test_shard_map_wrong_alternatives_differ(data_mesh, conflict_case):
    """Mean of per-device Grams, or mean of per-device updates, is not what we compute."""
    (w, ab), expected = conflict_case
    weighting = cg.weightings.came()

    def wrong(w, ab):
        # Per-device Jacobians (no axis_name; with check_vma off autodiff does not sum them).
        _, local = cg.value_and_jacobian(linear_losses)(w, ab)
        mean_jac = jax.lax.pmean(local, "data")
        mean_of_grams = jax.lax.pmean(cg.gramian(local), "data")
        coeffs, _ = weighting.weigh(mean_of_grams, weighting.init(2))
        return {
            "mean_of_grams": mean_of_grams,
            "gram_then_combine": cg.combine(mean_jac, coeffs),
            "mean_of_updates": jax.lax.pmean(came_update(local), "data"),
        }

    got = shard_mapped(wrong, data_mesh, check_vma=False)(w, ab)
    # Mean of per-device Grams = true Gram + the between-device covariance (16 everywhere).
    np.testing.assert_allclose(got["mean_of_grams"], expected["gram"] + 16.0, rtol=1e-5)
    assert relative_difference(got["gram_then_combine"], expected["update"]) > 0.1
    assert relative_difference(got["mean_of_updates"], expected["update"]) > 0.1
    print(
        "wrong alternatives, relative difference to the global update:",
        {
            k: f"{relative_difference(got[k], expected['update']):.2f}"
            for k in ("gram_then_combine", "mean_of_updates")
        },
    )


def test_nnx_shard_map_axis_name(data_mesh):
    from flax import nnx

    model = nnx.Linear(DIM, NUM_TASKS, rngs=nnx.Rngs(0))
    x, y = make_batch()

    def losses_fn(model, x, y):
        return jnp.mean((model(x) - y) ** 2, axis=0)

    graphdef, state = nnx.split(model)
    expected_losses, expected_jac = jax.jit(
        lambda state, x, y: cgnnx.value_and_jacobian(losses_fn)(nnx.merge(graphdef, state), x, y)
    )(state, x, y)

    def step(state, x, y):
        local = nnx.merge(graphdef, state)
        return cgnnx.value_and_jacobian(losses_fn, axis_name="data")(local, x, y)

    run_sharded = jax.jit(
        jax.shard_map(step, mesh=data_mesh, in_specs=(P(), P("data"), P("data")), out_specs=P())
    )
    sharded_batch = jax.device_put((x, y), NamedSharding(data_mesh, P("data")))
    state = jax.device_put(state, NamedSharding(data_mesh, P()))
    losses, jac = run_sharded(state, *sharded_batch)
    assert relative_difference(losses, expected_losses) < RTOL
    assert relative_difference(jac, expected_jac) < RTOL
