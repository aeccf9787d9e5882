"""The two-task regression problem the framework examples share, and their command line."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp

INPUTS = 4


def two_task_batch(seed: int = 0, size: int = 64) -> tuple[jax.Array, jax.Array]:
    """Inputs ``(size, 4)`` and targets ``(size, 2)``: a smooth and a linear task."""
    x_key, w_key = jax.random.split(jax.random.key(seed))
    x = jax.random.normal(x_key, (size, INPUTS))
    w = jax.random.normal(w_key, (INPUTS, 2))
    z = x @ w
    return x, jnp.stack([jnp.sin(z[:, 0]), 0.5 * z[:, 1]], axis=1)


def task_losses(predictions: jax.Array, targets: jax.Array) -> jax.Array:
    """The K = 2 mean squared errors, one per output column."""
    return jnp.mean((predictions - targets) ** 2, axis=0)


def main(train: Callable[[int], jax.Array], description: str, argv: Sequence[str] | None) -> None:
    """Parses ``--steps``, trains, prints the two task losses before and after."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--steps", type=int, default=50, help="how many training steps to run (default 50)"
    )
    args = parser.parse_args(argv)
    if args.steps < 1:
        parser.error("--steps must be at least 1")
    history = train(args.steps).tolist()
    print(f"task losses: {history[0]} at step 0, {history[-1]} at step {len(history) - 1}")
