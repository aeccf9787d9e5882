"""Fixed linear scalarisations: the coefficients do not depend on the gradients."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

from camegrad_jax._checks import weight_vector_size
from camegrad_jax._weighting import Weighting

Array = jax.Array


def _constant(coeffs_for: Any) -> Weighting:
    def init(num_tasks: int) -> optax.EmptyState:
        coeffs_for(num_tasks, jnp.float32)  # validates K against fixed weights
        return optax.EmptyState()

    def weigh(gram: Array, state: optax.EmptyState, **extra_args: Any) -> tuple[Array, Any]:
        del extra_args
        return coeffs_for(gram.shape[-1], gram.dtype), state

    return Weighting(init, weigh, uses_gram=False)


def mean() -> Weighting:
    """Linear scalarisation by the mean, $c_k = 1/K$.

    Examples:
      >>> import jax.numpy as jnp, camegrad_jax as cg
      >>> cg.weightings.mean().weigh(jnp.eye(4), None)[0]
      Array([0.25, 0.25, 0.25, 0.25], dtype=float32)
    """
    return _constant(lambda k, dtype: jnp.full((k,), 1.0 / k, dtype))


def summed() -> Weighting:
    """Linear scalarisation by the sum, $c_k = 1$."""
    return _constant(lambda k, dtype: jnp.ones((k,), dtype))


def linear(task_weights: Any) -> Weighting:
    r"""Linear scalarisation with fixed task weights, $c = \lambda$ (e.g. ``[1, 4]``)."""
    size = weight_vector_size("task_weights", task_weights)

    def coeffs_for(k: int, dtype: Any) -> Array:
        if k != size:
            raise ValueError(f"`task_weights` has {size} entries but there are {k} tasks.")
        return jnp.asarray(task_weights, dtype)

    return _constant(coeffs_for)
