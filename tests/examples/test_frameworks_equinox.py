"""Equinox: the helper's Jacobian, the example's step against jax's own gradients, the errors.

The tests that need Equinox skip when it is not installed; the dev extra installs it.
"""

from __future__ import annotations

import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import reference as ref
from helpers import update_distance

import camegrad_jax as cg
from camegrad_jax import equinox as cgeqx
from examples.frameworks import common


@pytest.fixture(name="example")
def fixture_example():
    pytest.importorskip("equinox")
    from examples.frameworks import equinox_mlp

    return equinox_mlp


def test_step_applies_the_aggregated_jacobian(example):
    """model₁ = model₀ − lr·Jᵀc, with row k of J from eqx.filter_grad of loss k alone."""
    import equinox as eqx

    lr = 0.1
    model, tx, opt_state = example.create(seed=1, learning_rate=lr)
    x, y = common.two_task_batch(seed=1)
    new_model, new_state, losses = example.train_step(model, opt_state, tx, x, y)

    grads = [eqx.filter_grad(lambda m, k=k: example.loss_fn(m, x, y)[k])(model) for k in range(2)]
    coeffs = optax.tree.get(new_state, "coefficients")
    old, static = eqx.partition(model, eqx.is_inexact_array)
    new, new_static = eqx.partition(new_model, eqx.is_inexact_array)
    assert jax.tree.structure(static) == jax.tree.structure(new_static)
    rows = [jax.tree.leaves(g) for g in grads]
    for i, (p0, p1) in enumerate(zip(jax.tree.leaves(old), jax.tree.leaves(new), strict=True)):
        expected = p0 - lr * (coeffs[0] * rows[0][i] + coeffs[1] * rows[1][i])
        np.testing.assert_allclose(p1, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(losses, example.loss_fn(model, x, y), rtol=1e-6)
    matrix = np.stack([np.concatenate([np.ravel(g) for g in r]) for r in rows]).astype(np.float64)
    oracle = ref.came_coefficients(matrix @ matrix.T)["coeffs"]
    assert update_distance(matrix, np.asarray(coeffs, np.float64), oracle) < 1e-3


def test_the_pattern_by_hand_gives_the_same_jacobian(example):
    model, _, _ = example.create()
    x, y = common.two_task_batch()
    losses, jac = cgeqx.filter_value_and_jacobian(example.loss_fn)(model, x, y)
    by_hand_losses, by_hand = example.value_and_jacobian_by_hand(model, x, y)
    np.testing.assert_array_equal(losses, by_hand_losses)
    assert jax.tree.structure(jac) == jax.tree.structure(by_hand)
    for a, b in zip(jax.tree.leaves(jac), jax.tree.leaves(by_hand), strict=True):
        assert a.shape[0] == 2
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_a_module_given_to_value_and_jacobian_names_the_leaf_and_the_helper(example):
    model, _, _ = example.create()
    x, y = common.two_task_batch()
    with pytest.raises(TypeError, match=r"params\.activation .*filter_value_and_jacobian"):
        cg.value_and_jacobian(example.loss_fn)(model, x, y)


def test_a_function_leaf_is_named():
    params = {"w": jnp.ones(3), "act": jnp.tanh}

    def loss_fn(p):
        return jnp.stack([jnp.sum(p["act"](p["w"])), jnp.sum(p["w"] ** 2)])

    with pytest.raises(TypeError, match=r"params\['act'\] is a PjitFunction"):
        cg.value_and_jacobian(loss_fn)(params)


def test_the_helper_without_equinox_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "equinox", None)  # makes `import equinox` fail
    wrapped = cgeqx.filter_value_and_jacobian(lambda model: jnp.stack([model, model]))
    with pytest.raises(ImportError, match=r"camegrad_jax\[equinox\]"):
        wrapped(jnp.ones(()))


def test_the_library_imports_without_equinox():
    code = (
        "import sys; sys.modules['equinox'] = None\n"
        "import camegrad_jax, camegrad_jax.equinox, camegrad_jax.nnx\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
