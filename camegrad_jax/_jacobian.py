"""Jacobians of a vector of task losses: one forward pass, K pullbacks in one vmap."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp


def value_and_jacobian(loss_fn: Callable[..., Any], has_aux: bool = False) -> Callable[..., Any]:
    r"""Wraps ``loss_fn(params, *args)``, which returns K task losses, to return their Jacobian.

    The forward pass runs once (``jax.vjp``); the pullback is vmapped over the K basis vectors
    $e_k$, so row k of the Jacobian is $\nabla_\theta L_k$. The Jacobian has the
    structure of ``params`` with a leading axis of size K on every leaf, ready for
    [`came_grad`][camegrad_jax.came_grad] or [`aggregate`][camegrad_jax.aggregate].

    Args:
      loss_fn: ``loss_fn(params, *args) -> losses`` with ``losses`` of shape ``(K,)``, or
        ``-> (losses, aux)`` when ``has_aux``.
      has_aux: whether ``loss_fn`` also returns auxiliary data.

    Returns:
      A function ``(params, *args) -> (losses, jac)``, or ``((losses, aux), jac)``.

    Examples:
      >>> import jax.numpy as jnp, camegrad_jax as cg
      >>> losses_fn = lambda p, x: jnp.stack([jnp.sum(p["w"] * x), jnp.sum(p["w"] ** 2)])
      >>> losses, jac = cg.value_and_jacobian(losses_fn)({"w": jnp.array([1.0, 2.0])}, 3.0)
      >>> losses, jac["w"]
      (Array([9., 5.], dtype=float32), Array([[3., 3.],
             [2., 4.]], dtype=float32))
    """

    def wrapped(params: Any, *args: Any) -> Any:
        def of_params(p: Any) -> Any:
            return loss_fn(p, *args)

        if has_aux:
            losses, pullback, aux = jax.vjp(of_params, params, has_aux=True)
        else:
            losses, pullback = jax.vjp(of_params, params)
        shape = jnp.shape(losses)
        if len(shape) != 1:
            raise ValueError(
                f"`loss_fn` must return a 1-D vector of K task losses; got shape {shape}."
            )
        basis = jnp.eye(shape[0], dtype=jnp.result_type(losses))
        (jac,) = jax.vmap(pullback)(basis)
        return ((losses, aux), jac) if has_aux else (losses, jac)

    return wrapped
