"""TorchJD's ``mtl_backward`` in optax: the shared trunk gets the aggregated update, each task
head the gradient of its own task.

Run ``python -m examples.frameworks.shared_heads --steps 50``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import optax

import camegrad_jax as cg
from examples.frameworks import common

HIDDEN = 16


def init_params(seed: int = 0) -> dict[str, Any]:
    trunk_key, a_key, b_key = jax.random.split(jax.random.key(seed), 3)
    return {
        "trunk": {
            "w": jax.random.normal(trunk_key, (common.INPUTS, HIDDEN)) / common.INPUTS**0.5,
            "b": jnp.zeros(HIDDEN),
        },
        "head_a": jax.random.normal(a_key, (HIDDEN,)) / HIDDEN**0.5,
        "head_b": jax.random.normal(b_key, (HIDDEN,)) / HIDDEN**0.5,
    }


# --8<-- [start:split]
def loss_fn(params: dict[str, Any], x: jax.Array, y: jax.Array) -> jax.Array:
    z = jnp.tanh(x @ params["trunk"]["w"] + params["trunk"]["b"][None, :])  # the shared features
    predictions = jnp.stack([z @ params["head_a"], z @ params["head_b"]], axis=1)
    return common.task_losses(predictions, y)  # task k reads head k only


def shared_and_heads(num_tasks: int = 2) -> optax.GradientTransformation:
    """Aggregates the trunk's Jacobian; sums the heads' rows (head k: ∇L_k, the others are 0)."""
    return optax.partition(
        {
            "shared": cg.came_grad(num_tasks=num_tasks),
            "heads": cg.aggregate(cg.weightings.summed(), num_tasks=num_tasks),
        },
        {"trunk": "shared", "head_a": "heads", "head_b": "heads"},  # a prefix of the params
    )


tx = optax.chain(shared_and_heads(), optax.adam(1e-2))  # any optimizer after the split


@jax.jit
def train_step(params: Any, opt_state: Any, x: jax.Array, y: jax.Array) -> tuple[Any, Any, Any]:
    losses, jac = cg.value_and_jacobian(loss_fn)(params, x, y)
    updates, opt_state = tx.update(jac, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, losses


# --8<-- [end:split]


def train(steps: int, seed: int = 0) -> jax.Array:
    """The task losses of every step, ``(steps, 2)``."""
    params = init_params(seed)
    opt_state = tx.init(params)
    x, y = common.two_task_batch(seed)
    history = []
    for _ in range(steps):
        params, opt_state, losses = train_step(params, opt_state, x, y)
        history.append(losses)
    return jnp.stack(history)


def main(argv: Sequence[str] | None = None) -> None:
    common.main(train, "Shared trunk aggregated by CAME-Grad, task heads on their own loss.", argv)


if __name__ == "__main__":
    main()
