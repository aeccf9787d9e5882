"""`cg.value_and_jacobian` against K separate `jax.grad` calls on a small two-layer MLP."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import camegrad_jax as cg

NUM_TASKS = 3


def make_params(seed: int = 0):
    rng = np.random.default_rng(seed)

    def draw(*shape):
        return jnp.asarray(rng.standard_normal(shape), jnp.float32)

    return {
        "layer1": {"w": draw(3, 4), "b": draw(4)},
        "layer2": {"w": draw(4, 2), "b": draw(2)},
    }


def make_batch(seed: int = 1):
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.standard_normal((5, 3)), jnp.float32)
    y = jnp.asarray(rng.standard_normal((5, 2)), jnp.float32)
    return x, y


def forward(params, x):
    h = jnp.tanh(x @ params["layer1"]["w"] + params["layer1"]["b"][None, :])
    return h @ params["layer2"]["w"] + params["layer2"]["b"][None, :]


def task_losses(params, x, y):
    """Three tasks: one regression head each, and a weight-decay "task" on the first layer."""
    out = forward(params, x)
    return jnp.stack(
        [
            jnp.mean((out[:, 0] - y[:, 0]) ** 2),
            jnp.mean(jnp.abs(out[:, 1] - y[:, 1])),
            0.1 * jnp.sum(params["layer1"]["w"] ** 2),
        ]
    )


def losses_with_aux(params, x, y):
    return task_losses(params, x, y), {"predictions": forward(params, x), "x": x}


def separate_grads(params, x, y):
    """The losses, and the Jacobian's rows the slow way: ``jax.grad`` of each loss alone."""
    rows = [jax.grad(lambda p, k=k: task_losses(p, x, y)[k])(params) for k in range(NUM_TASKS)]
    return task_losses(params, x, y), rows


# Eager dispatch compiles every primitive of the vmapped pullback separately (seconds on CPU),
# so the MLP is checked through one compilation per entry point; eager mode is checked on a
# loss with few primitives.
jacobian_jit = jax.jit(cg.value_and_jacobian(task_losses))
jacobian_aux_jit = jax.jit(cg.value_and_jacobian(losses_with_aux, has_aux=True))
reference_jit = jax.jit(separate_grads)


def simple_losses(params, x):
    """Two tasks on a one-leaf model, with few primitives (cheap in eager mode)."""
    return jnp.stack([jnp.sum(params["w"] * x), jnp.sum(params["w"] ** 2)])


SIMPLE_PARAMS = {"w": jnp.array([1.0, -2.0, 0.5], jnp.float32)}
SIMPLE_X = jnp.array([3.0, 0.0, -1.0], jnp.float32)
SIMPLE_ROWS = [{"w": np.asarray(SIMPLE_X)}, {"w": 2.0 * np.asarray(SIMPLE_PARAMS["w"])}]


def assert_jacobian_rows(jac, params, rows):
    num_tasks = len(rows)
    assert jax.tree.structure(jac) == jax.tree.structure(params)
    for leaf, param in zip(jax.tree.leaves(jac), jax.tree.leaves(params), strict=True):
        assert leaf.shape == (num_tasks, *param.shape)
        assert leaf.dtype == param.dtype
    for k, row in enumerate(rows):
        got = jax.tree.map(lambda leaf, k=k: leaf[k], jac)
        for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(row), strict=True):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


def test_values_and_rows_match_separate_grads_under_jit():
    params = make_params()
    x, y = make_batch()
    losses, jac = jacobian_jit(params, x, y)
    expected_losses, rows = reference_jit(params, x, y)
    assert losses.shape == (NUM_TASKS,)
    np.testing.assert_allclose(np.asarray(losses), np.asarray(expected_losses), rtol=1e-6)
    assert_jacobian_rows(jac, params, rows)
    # The weight-decay task does not touch layer 2: its row is exactly zero there.
    assert not np.any(np.asarray(jac["layer2"]["w"][2]))


def test_extra_positional_args_are_passed_through():
    """Different batches give different results: the args reach ``loss_fn``."""
    params = make_params()
    (x1, y1), (x2, y2) = make_batch(1), make_batch(2)
    losses1, jac1 = jacobian_jit(params, x1, y1)
    losses2, jac2 = jacobian_jit(params, x2, y2)
    assert not np.allclose(np.asarray(losses1[:2]), np.asarray(losses2[:2]))
    assert not np.allclose(np.asarray(jac1["layer2"]["w"]), np.asarray(jac2["layer2"]["w"]))
    for losses, jac, batch in [(losses1, jac1, (x1, y1)), (losses2, jac2, (x2, y2))]:
        expected_losses, rows = reference_jit(params, *batch)
        np.testing.assert_allclose(np.asarray(losses), np.asarray(expected_losses), rtol=1e-6)
        assert_jacobian_rows(jac, params, rows)


def test_has_aux_returns_aux_unchanged_under_jit():
    params = make_params()
    x, y = make_batch()
    (losses, aux), jac = jacobian_aux_jit(params, x, y)
    expected_losses, rows = reference_jit(params, x, y)
    assert sorted(aux) == ["predictions", "x"]
    np.testing.assert_array_equal(np.asarray(aux["x"]), np.asarray(x))
    np.testing.assert_allclose(
        np.asarray(aux["predictions"]), np.asarray(jax.jit(forward)(params, x)), rtol=1e-6
    )
    np.testing.assert_allclose(np.asarray(losses), np.asarray(expected_losses), rtol=1e-6)
    assert_jacobian_rows(jac, params, rows)


def test_eager():
    losses, jac = cg.value_and_jacobian(simple_losses)(SIMPLE_PARAMS, SIMPLE_X)
    np.testing.assert_allclose(np.asarray(losses), [2.5, 5.25], rtol=1e-6)
    assert_jacobian_rows(jac, SIMPLE_PARAMS, SIMPLE_ROWS)


def test_eager_has_aux_returns_aux_unchanged():
    """Aux is returned as is, Python objects included."""
    marker = object()
    aux_in = {"count": 7, "name": "tasks", "marker": marker, "x": SIMPLE_X}

    def loss_fn(p, x):
        return simple_losses(p, x), aux_in

    (losses, aux), jac = cg.value_and_jacobian(loss_fn, has_aux=True)(SIMPLE_PARAMS, SIMPLE_X)
    assert aux["count"] == 7 and isinstance(aux["count"], int)
    assert aux["name"] == "tasks" and aux["marker"] is marker
    assert aux["x"] is SIMPLE_X
    np.testing.assert_allclose(np.asarray(losses), [2.5, 5.25], rtol=1e-6)
    assert_jacobian_rows(jac, SIMPLE_PARAMS, SIMPLE_ROWS)


@pytest.mark.parametrize(
    ("reduce", "shape"),
    [(jnp.sum, ()), (lambda v: v[:, None], (2, 1))],
    ids=["scalar", "column"],
)
def test_non_vector_losses_raise(reduce, shape):
    params, x = SIMPLE_PARAMS, SIMPLE_X
    fn = cg.value_and_jacobian(lambda p, x: reduce(simple_losses(p, x)))
    msg = re.escape(f"`loss_fn` must return a 1-D vector of K task losses; got shape {shape}")
    with pytest.raises(ValueError, match=msg):
        fn(params, x)
    with pytest.raises(ValueError, match=msg):
        jax.jit(fn)(params, x)
    aux_fn = cg.value_and_jacobian(lambda p, x: (reduce(simple_losses(p, x)), None), has_aux=True)
    with pytest.raises(ValueError, match=msg):
        aux_fn(params, x)


chunked_jits = {
    size: jax.jit(cg.value_and_jacobian(task_losses, chunk_size=size)) for size in (1, 2, 3)
}


@pytest.mark.parametrize("chunk_size", [1, 2, 3], ids=["rows", "remainder", "all"])
def test_chunked_jacobian_equals_vmapped(chunk_size):
    """Chunks of 1, of 2 (K = 3: a remainder of 1) and of K give the vmapped Jacobian."""
    params = make_params()
    x, y = make_batch()
    losses, jac = chunked_jits[chunk_size](params, x, y)
    expected_losses, expected = jacobian_jit(params, x, y)
    np.testing.assert_allclose(np.asarray(losses), np.asarray(expected_losses), rtol=1e-6)
    for a, b in zip(jax.tree.leaves(jac), jax.tree.leaves(expected), strict=True):
        assert a.shape == b.shape and a.dtype == b.dtype
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)


def test_chunked_jacobian_runs_the_rows_one_chunk_at_a_time():
    """With chunks the pullback runs inside a loop (lax.map), not as one vmapped batch."""
    params = make_params()
    x, y = make_batch()
    vmapped = str(jax.make_jaxpr(cg.value_and_jacobian(task_losses))(params, x, y))
    chunked = str(jax.make_jaxpr(cg.value_and_jacobian(task_losses, chunk_size=1))(params, x, y))
    assert "scan" not in vmapped
    assert "scan" in chunked


@pytest.mark.parametrize("chunk_size", [0, -1, 1.5, True])
def test_bad_chunk_size_raises(chunk_size):
    with pytest.raises(ValueError, match="`chunk_size` must be None or a positive Python int"):
        cg.value_and_jacobian(task_losses, chunk_size=chunk_size)
