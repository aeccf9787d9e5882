"""camegrad_jax.nnx: an NNX model's task-loss Jacobian against K separate nnx.grad calls."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import camegrad_jax as cg
from camegrad_jax import nnx as cgnnx


class TwoHeads(nnx.Module):
    """A shared trunk with dropout and batch norm, and two heads: every kind of NNX state."""

    def __init__(self, rngs: nnx.Rngs):
        self.trunk = nnx.Linear(3, 8, rngs=rngs)
        self.norm = nnx.BatchNorm(8, rngs=rngs)
        self.drop = nnx.Dropout(0.5, rngs=rngs)
        self.head_a = nnx.Linear(8, 1, rngs=rngs)
        self.head_b = nnx.Linear(8, 2, rngs=rngs)
        self.calls = nnx.Variable(jnp.zeros((), jnp.int32))

    def __call__(self, x):
        self.calls[...] += 1
        h = self.drop(nnx.relu(self.norm(self.trunk(x))))
        return self.head_a(h)[:, 0], self.head_b(h)


def task_losses(model, x, y):
    a, b = model(x)
    la = jnp.mean((a - y) ** 2)
    lb = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(b, (y > 0).astype(jnp.int32)))
    return jnp.stack([la, lb]), {"mean_a": jnp.mean(a)}


def batch():
    x = jax.random.normal(jax.random.key(1), (16, 3))
    return x, x @ jnp.array([1.0, -2.0, 0.5])


def test_rows_equal_separate_grads_with_the_same_dropout_masks():
    model = TwoHeads(nnx.Rngs(0))
    x, y = batch()
    rows = []
    for k in range(2):
        twin = nnx.clone(model)  # same parameters, statistics and RNG counters
        grads = nnx.grad(lambda m, k=k: task_losses(m, x, y)[0][k])(twin)
        rows.append(grads)
    (losses, aux), jac = cgnnx.value_and_jacobian(task_losses, has_aux=True)(model, x, y)
    assert losses.shape == (2,) and set(aux) == {"mean_a"}
    for k in range(2):
        jax.tree.map(
            lambda stacked, single, k=k: np.testing.assert_allclose(
                stacked[k], single, rtol=1e-5, atol=1e-7
            ),
            jac,
            rows[k],
        )
    # The dropout mask was drawn once: the same as one separate forward pass (which `twin` did).
    assert int(model.calls[...]) == 1
    twin_stats = nnx.state(twin, nnx.BatchStat)
    jax.tree.map(np.testing.assert_allclose, nnx.state(model, nnx.BatchStat), twin_stats)
    np.testing.assert_array_equal(model.drop.rngs.count[...], twin.drop.rngs.count[...])
    assert int(model.drop.rngs.count[...]) == 1  # advanced once, by the single forward pass


def test_jitted_train_step_with_nnx_optimizer_reduces_both_losses():
    model = TwoHeads(nnx.Rngs(0))
    tx = optax.chain(cg.came_grad(task_weights=jnp.array([1.0, 4.0])), optax.adam(1e-2))
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    x, y = batch()

    @nnx.jit
    def train_step(model, optimizer, x, y):
        (losses, _), jac = cgnnx.value_and_jacobian(task_losses, has_aux=True)(model, x, y)
        optimizer.update(model, jac)
        return losses

    first = train_step(model, optimizer, x, y)
    for _ in range(30):
        last = train_step(model, optimizer, x, y)
    assert np.all(np.asarray(last) < 0.7 * np.asarray(first)), (first, last)
    assert int(model.calls[...]) == 31
    gain = optax.tree.get(nnx.as_pure(optimizer.opt_state), "gain")
    assert 0.0 < float(gain) <= 1.5  # γ ≤ κ
