"""Flax NNX helpers: the stacked Jacobian of an ``nnx.Module``'s task losses in one forward pass.

``value_and_jacobian(loss_fn)(model, *args)`` is the NNX twin of
[`camegrad_jax.value_and_jacobian`][camegrad_jax.value_and_jacobian]: the model is split into
the differentiated state (``wrt``, ``nnx.Param`` by default) and the rest, the forward pass runs
once under ``jax.vjp``, and the pullback is vmapped over the K tasks. Whatever the forward pass
changes outside ``wrt`` (batch statistics, RNG counters, counters of your own) is written back to
the model, as ``nnx.grad`` does, and every row of the Jacobian sees the same dropout masks.

The Jacobian is an ``nnx.State`` shaped like the parameters with a leading task axis, so it goes
straight to an ``nnx.Optimizer`` whose transformation aggregates first::

    optimizer = nnx.Optimizer(model, optax.chain(cg.came_grad(...), optax.adamw(1e-4)),
                              wrt=nnx.Param)
    losses, jac = cgnnx.value_and_jacobian(loss_fn)(model, batch)
    optimizer.update(model, jac)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
from flax import nnx

from camegrad_jax._jacobian import AxisName
from camegrad_jax._jacobian import value_and_jacobian as _value_and_jacobian

__all__ = ["value_and_jacobian"]


def value_and_jacobian(
    loss_fn: Callable[..., Any],
    *,
    has_aux: bool = False,
    wrt: Any = nnx.Param,
    axis_name: AxisName | None = None,
) -> Callable[..., Any]:
    r"""Wraps ``loss_fn(model, *args)``, which returns K task losses, to return their Jacobian.

    Row $k$ of the Jacobian is $\nabla_\theta L_k$ for the variables $\theta$ selected by
    ``wrt``. The returned function mutates ``model`` only outside ``wrt``: it writes back the
    non-differentiated state that the forward pass updated (``nnx.BatchNorm`` statistics,
    ``nnx.Rngs`` counters), exactly once, as one forward pass would. It works inside ``nnx.jit``
    (and ``jax.jit`` of a split/merge step).

    Args:
      loss_fn: ``loss_fn(model, *args, **kwargs) -> losses`` with ``losses`` of shape ``(K,)``,
        or ``-> (losses, aux)`` when ``has_aux``.
      has_aux: whether ``loss_fn`` also returns auxiliary data.
      wrt: an NNX filter of the variables to differentiate (default ``nnx.Param``); use the
        same filter as the ``nnx.Optimizer``.
      axis_name: inside ``jax.shard_map``, the mesh axis (or axes) the batch is split over:
        the losses and the Jacobian are averaged over it before the Gram matrix is built (see
        [`camegrad_jax.value_and_jacobian`][camegrad_jax.value_and_jacobian]). The state
        written back (e.g. batch statistics) stays per device.

    Returns:
      A function ``(model, *args, **kwargs) -> (losses, jac)``, or ``((losses, aux), jac)``,
      with ``jac`` an ``nnx.State`` of the ``wrt`` variables whose leaves have shape
      ``(K, ...)``.

    Examples:
      >>> import jax.numpy as jnp, optax, camegrad_jax as cg
      >>> from flax import nnx
      >>> from camegrad_jax import nnx as cgnnx
      >>> model = nnx.Linear(2, 1, rngs=nnx.Rngs(0))
      >>> def loss_fn(model, x):
      ...     y = model(x)[:, 0]
      ...     return jnp.stack([jnp.mean((y - 1.0) ** 2), jnp.mean((y + 1.0) ** 2)])
      >>> losses, jac = cgnnx.value_and_jacobian(loss_fn)(model, jnp.ones((4, 2)))
      >>> jac["kernel"].shape, jac["bias"].shape
      ((2, 2, 1), (2, 1))
      >>> tx = optax.chain(cg.came_grad(num_tasks=2), optax.sgd(0.1))
      >>> optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
      >>> _ = optimizer.update(model, jac)
    """

    def wrapped(model: Any, *args: Any, **kwargs: Any) -> Any:
        graphdef, params, rest = nnx.split(model, wrt, ...)  # type: ignore[misc]

        def of_params(p: Any) -> Any:
            # Rebuilding the non-differentiated variables inside the trace lets the forward
            # pass update them (BatchNorm statistics, RNG counters) on the copy.
            copy = nnx.merge(graphdef, p, jax.tree.map(lambda x: x, rest))
            out = loss_fn(copy, *args, **kwargs)
            losses, aux = out if has_aux else (out, None)
            _, _, new_rest = nnx.split(copy, wrt, ...)  # type: ignore[misc]
            return losses, (aux, new_rest)

        (losses, (aux, new_rest)), jac = _value_and_jacobian(
            of_params, has_aux=True, axis_name=axis_name
        )(params)
        nnx.update(model, new_rest)
        return ((losses, aux), jac) if has_aux else (losses, jac)

    return wrapped
