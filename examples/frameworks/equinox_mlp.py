"""Equinox: CAME-Grad on a two-task ``eqx.nn.MLP`` under ``eqx.filter_jit``.

Run ``python -m examples.frameworks.equinox_mlp --steps 50`` (needs ``camegrad_jax[equinox]``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import optax

import camegrad_jax as cg
from camegrad_jax import equinox as cgeqx
from examples.frameworks import common


# --8<-- [start:step]
def loss_fn(model: eqx.nn.MLP, x: jax.Array, y: jax.Array) -> jax.Array:
    return common.task_losses(jax.vmap(model)(x), y)  # the K = 2 task losses


@eqx.filter_jit
def train_step(
    model: eqx.nn.MLP, opt_state: Any, tx: optax.GradientTransformation, x: jax.Array, y: jax.Array
) -> tuple[eqx.nn.MLP, Any, jax.Array]:
    losses, jac = cgeqx.filter_value_and_jacobian(loss_fn)(model, x, y)
    params = eqx.filter(model, eqx.is_inexact_array)  # shaped like jac, without the task axis
    updates, opt_state = tx.update(jac, opt_state, params)
    return eqx.apply_updates(model, updates), opt_state, losses


# --8<-- [end:step]


# --8<-- [start:by-hand]
def value_and_jacobian_by_hand(model: eqx.nn.MLP, x: jax.Array, y: jax.Array) -> Any:
    diff, static = eqx.partition(model, eqx.is_inexact_array)

    def of_arrays(diff, x, y):
        return loss_fn(eqx.combine(diff, static), x, y)

    return cg.value_and_jacobian(of_arrays)(diff, x, y)


# --8<-- [end:by-hand]


# --8<-- [start:init]
def create(seed: int = 0, learning_rate: float = 0.1) -> tuple[eqx.nn.MLP, Any, Any]:
    """The model, the optimizer (came_grad first) and its state."""
    model = eqx.nn.MLP(common.INPUTS, 2, 16, 1, activation=jax.nn.relu, key=jax.random.key(seed))
    tx = optax.chain(cg.came_grad(num_tasks=2), optax.sgd(learning_rate))
    opt_state = tx.init(eqx.filter(model, eqx.is_inexact_array))
    return model, tx, opt_state


# --8<-- [end:init]


def train(steps: int, seed: int = 0) -> jax.Array:
    """The task losses of every step, ``(steps, 2)``."""
    model, tx, opt_state = create(seed)
    x, y = common.two_task_batch(seed)
    history = []
    for _ in range(steps):
        model, opt_state, losses = train_step(model, opt_state, tx, x, y)
        history.append(losses)
    return jnp.stack(history)


def main(argv: Sequence[str] | None = None) -> None:
    common.main(train, "CAME-Grad with Equinox on a two-task MLP.", argv)


if __name__ == "__main__":
    main()
