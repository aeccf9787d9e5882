"""The library's own matrix products are float32 on every backend (`camegrad_jax/_precision.py`).

Unasked, JAX lets a GPU round a float32 product's inputs to TensorFloat-32 and a TPU to
bfloat16; a CPU computes it in float32 whatever it is asked, so no result here could show the
difference. The precision is checked where it is decided instead: in the program JAX hands to
XLA. Under a bfloat16 default (`jax.default_matmul_precision`), every ``dot_general`` of a
weighting's solve, of the Gram matrix, of $J^\\top c$ and of the whole aggregation must ask for
HIGHEST, while the user's own products keep the default they chose.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import properties as props
import pytest

import camegrad_jax as cg

_DOT = re.compile(r"stablehlo\.dot_general[^\n]*")
_FULL = "precision = [HIGHEST, HIGHEST]"
K = 3
JAC = np.array([[1.0, -2.0, 0.5, 3.0], [-1.0, 1.0, 2.0, 0.0], [0.5, 0.5, -1.0, 1.0]], np.float32)


def _products(fn: Callable[..., Any], *args: Any) -> list[str]:
    """The ``dot_general`` lines of ``fn``'s lowered program, traced under a bfloat16 default."""
    with jax.default_matmul_precision("bfloat16"):
        text = jax.jit(fn).lower(*args).as_text()
    return _DOT.findall(text)


def _below_float32(products: list[str]) -> list[str]:
    return [line for line in products if _FULL not in line]


def test_the_probe_sees_a_product_at_the_default_precision():
    products = _products(lambda a: a @ a, jnp.ones((K, K)))
    assert len(products) == 1
    assert _below_float32(products) == products


@pytest.mark.parametrize("name", sorted(props.WEIGHTINGS))
def test_every_weighting_solves_with_float32_products(name):
    weighting = props.WEIGHTINGS[name](K)
    extra = {"losses": jnp.asarray(props.losses_for(K))} if name in props.LOSS_BASED else {}
    gram = jnp.asarray(JAC @ JAC.T)
    products = _products(lambda g: weighting.weigh(g, weighting.init(K), **extra), gram)
    assert not _below_float32(products)


def test_a_custom_weighting_gets_float32_products():
    def weigh(gram: jax.Array, state: Any) -> tuple[jax.Array, Any]:
        return gram @ jnp.ones(gram.shape[0]), state

    weighting = cg.Weighting(lambda k: (), weigh)
    products = _products(lambda g: weighting.weigh(g, ()), jnp.eye(K))
    assert len(products) == 1
    assert not _below_float32(products)


def test_gram_matrix_combination_and_dynamics_use_float32_products():
    jac = {"w": jnp.asarray(JAC[:, :3].reshape(K, 3, 1)), "b": jnp.asarray(JAC[:, 3])}
    products = _products(cg.gramian, jac)
    products += _products(lambda j: cg.combine(j, jnp.ones(K)), jac)
    products += _products(cg.gradient_dynamics, jnp.eye(K))
    assert len(products) >= 4
    assert not _below_float32(products)


def test_the_aggregation_is_float32_and_the_users_model_keeps_its_precision():
    params = {"w": jnp.ones((4, 2))}
    x = jnp.asarray(JAC)

    def losses(p: Any) -> jax.Array:
        return jnp.sum((x @ p["w"]) ** 2, axis=1)

    tx = cg.came_grad(task_weights=jnp.ones(K))
    state = tx.init(params)

    def step(p: Any) -> Any:
        _, jac = cg.value_and_jacobian(losses)(p)
        return tx.update(jac, state, p)[0]

    model = _products(lambda p: cg.value_and_jacobian(losses)(p)[1], params)
    whole = _products(step, params)
    assert model and _below_float32(model) == model
    assert len(whole) > len(model)
    assert _below_float32(whole) == model
