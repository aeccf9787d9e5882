"""Per-group aggregation: each parameter group is aggregated as if it were alone."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from contract import (
    Subject,
    check_compiles_once,
    check_finite_on_hard_jacobians,
    check_inject_hyperparams,
    check_state_stable,
    check_vmap_over_jacobians_and_states,
    params_like,
    sample_jacobian,
)

import camegrad_jax as cg

GROUPED = Subject(
    "came-K3-groups",
    cg.came_grad,
    {"rho": 0.5, "nu": 0.2},
    {"num_tasks": 3, "groups": "top_level"},
    3,
)


def _alone(tx_factory, sub_jac):
    tx = tx_factory()
    return jax.jit(tx.update)(sub_jac, tx.init(params_like(sub_jac)))


@pytest.mark.parametrize("k", [2, 3])
def test_groups_equal_separate_aggregations(k):
    """'top_level' on {"w", "b"}: each group's update and diagnostics equal its own run."""
    jac = sample_jacobian(k)
    grouped = cg.came_grad(num_tasks=k, groups="top_level")
    update, state = jax.jit(grouped.update)(jac, grouped.init(params_like(jac)))
    gains = optax.tree.get(state, "gain")
    assert gains.shape == (2,)
    for g, name in enumerate(sorted(jac)):  # leaves are flattened in sorted key order
        alone, alone_state = _alone(lambda: cg.came_grad(num_tasks=k), {name: jac[name]})
        np.testing.assert_allclose(update[name], alone[name], rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(gains[g], optax.tree.get(alone_state, "gain"), rtol=1e-5)
        np.testing.assert_allclose(
            state.coefficients[g], alone_state.coefficients, rtol=1e-4, atol=1e-6
        )


def test_group_predicate_sees_parameter_shapes():
    """A predicate on the parameter's shape (not the Jacobian's) splits matrices from vectors."""
    jac = {**sample_jacobian(2), "c": jnp.asarray(np.random.default_rng(1).normal(size=(2, 4, 2)))}
    by_rank = lambda path, leaf: len(leaf.shape)  # noqa: E731
    grouped = cg.aggregate(cg.weightings.came(), num_tasks=2, groups=by_rank)
    update, state = jax.jit(grouped.update)(jac, grouped.init(params_like(jac)))
    assert state.coefficients.shape == (2, 2)
    matrices, _ = _alone(lambda: cg.came_grad(num_tasks=2), {"c": jac["c"], "w": jac["w"]})
    vectors, _ = _alone(lambda: cg.came_grad(num_tasks=2), {"b": jac["b"]})
    for name, expected in (("c", matrices["c"]), ("w", matrices["w"]), ("b", vectors["b"])):
        np.testing.assert_allclose(update[name], expected, rtol=1e-4, atol=1e-6)


def test_a_non_finite_group_skips_the_whole_step():
    jac = sample_jacobian(2)
    grouped = cg.came_grad(num_tasks=2, groups="top_level")
    state = grouped.init(params_like(jac))
    bad = {**jac, "b": jac["b"].at[0, 0].set(jnp.nan)}
    update, new_state = jax.jit(grouped.update)(bad, state)
    assert all(np.all(np.asarray(leaf) == 0) for leaf in jax.tree.leaves(update))
    assert int(new_state.skipped_steps) == 1
    np.testing.assert_array_equal(new_state.coefficients, state.coefficients)


def test_grouping_errors():
    with pytest.raises(ValueError, match="`groups` must be None, 'top_level' or a function"):
        cg.came_grad(num_tasks=2, groups="per_layer")
    with pytest.raises(ValueError, match="`params` must be given to `init` when `groups` is set"):
        cg.came_grad(num_tasks=2, groups="top_level").init(None)


def test_transformation_factories_accept_groups():
    tx = cg.transformation(cg.weightings.mean)(num_tasks=2, groups="top_level")
    jac = sample_jacobian(2)
    update, state = tx.update(jac, tx.init(params_like(jac)))
    assert state.coefficients.shape == (2, 2)  # one row of coefficients per group
    np.testing.assert_allclose(update["w"], jac["w"].mean(axis=0), rtol=1e-6)


def test_grouped_contract():
    for check in (
        check_compiles_once,
        check_state_stable,
        check_vmap_over_jacobians_and_states,
        check_finite_on_hard_jacobians,
    ):
        check(GROUPED)
    check_inject_hyperparams(GROUPED, {"rho": 1.0, "nu": 0.5})
