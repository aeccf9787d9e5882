"""The Flax Linen + TrainState example: its step is SGD on Jᵀc with CAME-Grad's c, and it learns."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import reference as ref
from helpers import update_distance

from examples.frameworks import common, linen_mlp


def rows(jac):
    """The (K, n) float64 matrix of a stacked Jacobian pytree."""
    leaves = jax.tree.leaves(jac)
    return np.concatenate([np.reshape(g, (g.shape[0], -1)) for g in leaves], 1).astype(np.float64)


def test_step_applies_the_aggregated_jacobian():
    """params₁ = params₀ − lr·Jᵀc, with J from jax.jacrev and c CAME-Grad's for JJᵀ."""
    lr = 0.1
    state = linen_mlp.create_state(seed=1, learning_rate=lr)
    x, y = common.two_task_batch(seed=1)
    new_state, losses = linen_mlp.train_step(state, x, y)

    def loss_fn(params):
        return common.task_losses(linen_mlp.MLP().apply({"params": params}, x), y)

    jac = jax.jacrev(loss_fn)(state.params)
    coeffs = optax.tree.get(new_state.opt_state, "coefficients")
    expected = jax.tree.map(lambda p, g: p - lr * jnp.tensordot(coeffs, g, 1), state.params, jac)
    assert jax.tree.all(
        jax.tree.map(
            lambda a, b: np.allclose(a, b, rtol=1e-5, atol=1e-6), new_state.params, expected
        )
    )
    np.testing.assert_allclose(losses, loss_fn(state.params), rtol=1e-6)
    assert int(new_state.step) == 1
    matrix = rows(jac)
    oracle = ref.came_coefficients(matrix @ matrix.T)["coeffs"]
    assert update_distance(matrix, np.asarray(coeffs, np.float64), oracle) < 1e-3
