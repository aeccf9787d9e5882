"""Flax Linen and ``TrainState``: CAME-Grad on a two-task MLP.

Run ``python -m examples.frameworks.linen_mlp --steps 50``.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax.training.train_state import TrainState

import camegrad_jax as cg
from examples.frameworks import common


# --8<-- [start:model]
class MLP(nn.Module):
    """A hidden layer and one output per task."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        return nn.Dense(2)(nn.relu(nn.Dense(16)(x)))


def create_state(seed: int = 0, learning_rate: float = 0.1) -> TrainState:
    model = MLP()
    params = model.init(jax.random.key(seed), jnp.zeros((1, common.INPUTS)))["params"]
    # came_grad first: it turns the (K, ...) Jacobian into a (...) update.
    tx = optax.chain(cg.came_grad(num_tasks=2), optax.sgd(learning_rate))
    return TrainState.create(apply_fn=model.apply, params=params, tx=tx)


@jax.jit
def train_step(state: TrainState, x: jax.Array, y: jax.Array) -> tuple[TrainState, jax.Array]:
    def loss_fn(params):  # the K = 2 task losses
        return common.task_losses(state.apply_fn({"params": params}, x), y)

    losses, jac = cg.value_and_jacobian(loss_fn)(state.params)
    return state.apply_gradients(grads=jac), losses  # grads: the stacked Jacobian


# --8<-- [end:model]


def train(steps: int, seed: int = 0) -> jax.Array:
    """The task losses of every step, ``(steps, 2)``."""
    state = create_state(seed)
    x, y = common.two_task_batch(seed)
    history = []
    for _ in range(steps):
        state, losses = train_step(state, x, y)
        history.append(losses)
    return jnp.stack(history)


def main(argv: Sequence[str] | None = None) -> None:
    common.main(train, "CAME-Grad with Flax Linen and TrainState on a two-task MLP.", argv)


if __name__ == "__main__":
    main()
