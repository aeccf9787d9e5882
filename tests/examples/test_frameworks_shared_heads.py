"""The mtl_backward-style split: the trunk gets Jᵀ_trunk c, each head its own task's gradient."""

from __future__ import annotations

import jax
import numpy as np
import optax
import reference as ref
from helpers import update_distance

from examples.frameworks import common, shared_heads


def trunk_rows(jac):
    """The trunk's (K, n) float64 Jacobian, in the leaf order of ``jac["trunk"]``."""
    leaves = jax.tree.leaves(jac["trunk"])
    return np.concatenate([np.reshape(leaf, (leaf.shape[0], -1)) for leaf in leaves], axis=1)


def test_trunk_is_aggregated_and_heads_get_their_own_gradient():
    params = shared_heads.init_params(seed=3)
    x, y = common.two_task_batch(seed=3)
    jac = jax.jacrev(shared_heads.loss_fn)(params, x, y)  # independent of cg.value_and_jacobian
    split = shared_heads.shared_and_heads()
    updates, state = split.update(jac, split.init(params), params)

    for k, head in enumerate(["head_a", "head_b"]):
        own = jax.grad(lambda p, k=k: shared_heads.loss_fn(p, x, y)[k])(params)[head]
        np.testing.assert_allclose(updates[head], own, rtol=1e-6, atol=1e-7)

    coeffs = np.asarray(optax.tree.get(state.inner_states["shared"], "coefficients"), np.float64)
    matrix = trunk_rows(jac).astype(np.float64)
    trunk_update = np.concatenate([np.ravel(u) for u in jax.tree.leaves(updates["trunk"])])
    np.testing.assert_allclose(trunk_update, matrix.T @ coeffs, rtol=1e-5, atol=1e-6)
    oracle = ref.came_coefficients(matrix @ matrix.T)["coeffs"]
    assert update_distance(matrix, coeffs, oracle) < 1e-3
    # The Gram matrix is the trunk's alone: the whole model's gives another update.
    full = np.concatenate([matrix, jac["head_a"], jac["head_b"]], axis=1).astype(np.float64)
    other = ref.came_coefficients(full @ full.T)["coeffs"]
    assert update_distance(matrix, other, oracle) > 1e-2
