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
import jax.numpy as jnp
import optax
from flax import nnx

from camegrad_jax._gram import all_finite
from camegrad_jax._inputs import is_representation
from camegrad_jax._jacobian import AxisName, losses_and_aux
from camegrad_jax._jacobian import value_and_jacobian as _value_and_jacobian
from camegrad_jax._representation import representation_jacobian

__all__ = ["update", "value_and_jacobian", "value_and_representation_jacobian"]


def value_and_jacobian(
    loss_fn: Callable[..., Any],
    *,
    has_aux: bool = False,
    wrt: Any = nnx.Param,
    axis_name: AxisName | None = None,
    chunk_size: int | None = None,
    keep_state_if_nonfinite: bool = True,
) -> Callable[..., Any]:
    r"""Wraps ``loss_fn(model, *args)``, which returns K task losses, to return their Jacobian.

    Row $k$ of the Jacobian is $\nabla_\theta L_k$ for the variables $\theta$ selected by
    ``wrt``. The returned function mutates ``model`` only outside ``wrt``: it writes back the
    non-differentiated state that the forward pass updated (``nnx.BatchNorm`` statistics,
    ``nnx.Rngs`` counters), exactly once, as one forward pass would. When a loss is NaN or Inf
    the aggregation skips the step, and by default that state is not written back either, so
    the skipped step leaves no NaN batch statistics in the model. It works inside ``nnx.jit``
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
      chunk_size: compute the Jacobian's rows this many at a time to bound memory (see
        [`camegrad_jax.value_and_jacobian`][camegrad_jax.value_and_jacobian]).
      keep_state_if_nonfinite: leave the state outside ``wrt`` as it was when the losses are
        not all finite (default); False writes it back whatever the losses.

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
            losses, aux = losses_and_aux(loss_fn(copy, *args, **kwargs), has_aux)
            _, _, new_rest = nnx.split(copy, wrt, ...)  # type: ignore[misc]
            return losses, (aux, new_rest)

        (losses, (aux, new_rest)), jac = _value_and_jacobian(
            of_params, has_aux=True, axis_name=axis_name, chunk_size=chunk_size
        )(params)
        _write_back(model, new_rest, rest, losses, keep_state_if_nonfinite)
        return ((losses, aux), jac) if has_aux else (losses, jac)

    return wrapped


def value_and_representation_jacobian(
    encoder: Callable[..., Any],
    heads: Callable[..., Any],
    *,
    has_aux: bool = False,
    wrt: Any = nnx.Param,
    keep_state_if_nonfinite: bool = True,
) -> Callable[..., Any]:
    r"""Shared-representation mode for an ``nnx.Module``: Gram from $\partial L_k/\partial z$.

    The NNX twin of
    [`camegrad_jax.value_and_representation_jacobian`][camegrad_jax.value_and_representation_jacobian]:
    ``encoder(model, *args, **kwargs) -> z`` computes the shared features and
    ``heads(model, z, *args, **kwargs) -> losses`` the K task losses. The result goes to the
    same optax chain as a full Jacobian would, through [`update`][camegrad_jax.nnx.update]
    (``nnx.Optimizer.update`` only takes gradients shaped like the model); the
    aggregation builds the Gram matrix from the features' Jacobian and takes one backward pass
    of $\sum_k c_k L_k$ through the model. State outside ``wrt`` that the forward pass changes
    (batch statistics, RNG counters) is written back once, as in
    [`value_and_jacobian`][camegrad_jax.nnx.value_and_jacobian].

    Args:
      encoder: ``encoder(model, *args, **kwargs) -> z`` (``z`` any pytree of arrays).
      heads: ``heads(model, z, *args, **kwargs) -> losses`` of shape ``(K,)``, or
        ``-> (losses, aux)`` when ``has_aux``.
      has_aux: whether ``heads`` also returns auxiliary data.
      wrt: an NNX filter of the variables to differentiate (default ``nnx.Param``).
      keep_state_if_nonfinite: leave the state outside ``wrt`` as it was when the losses are
        not all finite (default).

    Returns:
      A function ``(model, *args, **kwargs) -> (losses, rep)`` (``((losses, aux), rep)``
      with ``has_aux``), ``rep`` a
      [`RepresentationJacobian`][camegrad_jax.RepresentationJacobian].

    Examples:
      >>> import jax.numpy as jnp, optax, camegrad_jax as cg
      >>> from flax import nnx
      >>> from camegrad_jax import nnx as cgnnx
      >>> class TwoHeads(nnx.Module):
      ...     def __init__(self, rngs):
      ...         self.trunk = nnx.Linear(3, 8, rngs=rngs)
      ...         self.a, self.b = nnx.Linear(8, 1, rngs=rngs), nnx.Linear(8, 1, rngs=rngs)
      >>> encoder = lambda m, x: nnx.relu(m.trunk(x))
      >>> def heads(m, z, x):
      ...     return jnp.stack([jnp.mean(m.a(z) ** 2), jnp.mean((m.b(z) - 1.0) ** 2)])
      >>> model = TwoHeads(nnx.Rngs(0))
      >>> value_and_rep = cgnnx.value_and_representation_jacobian(encoder, heads)
      >>> losses, rep = value_and_rep(model, jnp.ones((4, 3)))
      >>> rep.features.shape  # (K, batch, features)
      (2, 4, 8)
      >>> tx = optax.chain(cg.came_grad(num_tasks=2), optax.sgd(0.1))
      >>> optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
      >>> _ = cgnnx.update(optimizer, model, rep)
    """

    def wrapped(model: Any, *args: Any, **kwargs: Any) -> Any:
        graphdef, params, rest = nnx.split(model, wrt, ...)  # type: ignore[misc]
        # Plain arrays, so that the update is shaped like the arrays an nnx.Optimizer hands to
        # its transformation.
        params = nnx.as_pure(params)

        def encoder_fn(p: Any) -> tuple[Any, Any]:
            copy = nnx.merge(graphdef, p, jax.tree.map(lambda x: x, rest))
            z = encoder(copy, *args, **kwargs)
            _, _, encoded_rest = nnx.split(copy, wrt, ...)  # type: ignore[misc]
            return z, encoded_rest

        def heads_fn(p: Any, z: Any, encoded_rest: Any) -> tuple[Any, Any]:
            copy = nnx.merge(graphdef, p, jax.tree.map(lambda x: x, encoded_rest))
            losses, aux = losses_and_aux(heads(copy, z, *args, **kwargs), has_aux)
            _, _, new_rest = nnx.split(copy, wrt, ...)  # type: ignore[misc]
            return losses, (aux, new_rest)

        losses, (aux, new_rest), rep = representation_jacobian(encoder_fn, heads_fn, params)
        _write_back(model, new_rest, rest, losses, keep_state_if_nonfinite)
        return ((losses, aux), rep) if has_aux else (losses, rep)

    return wrapped


def _write_back(model: Any, new_rest: Any, rest: Any, losses: Any, keep_if_nonfinite: bool) -> None:
    """Writes the forward pass's state outside ``wrt`` into ``model``; with
    ``keep_if_nonfinite``, only where every loss is finite (a step the aggregation skips)."""
    if keep_if_nonfinite:
        finite = all_finite(losses)
        new_rest = jax.tree.map(lambda new, old: jnp.where(finite, new, old), new_rest, rest)
    nnx.update(model, new_rest)


def update(optimizer: nnx.Optimizer, model: Any, jac: Any, /, **kwargs: Any) -> Any:
    """``optimizer.update(model, jac)`` that also takes a
    [`RepresentationJacobian`][camegrad_jax.RepresentationJacobian].

    ``nnx.Optimizer.update`` filters its gradients by the model's variables, which would drop
    the shared-representation mode's features and backward pass; this function hands ``jac``
    to the optimizer's transformation as it is and otherwise does what ``Optimizer.update``
    does: applies the updates to the ``wrt`` variables, stores the new optimizer state and
    counts the step. A stacked Jacobian from
    [`value_and_jacobian`][camegrad_jax.nnx.value_and_jacobian] is passed on to
    ``optimizer.update`` unchanged.

    Args:
      optimizer: an ``nnx.Optimizer`` whose transformation starts with an aggregation.
      model: the model the optimizer updates.
      jac: a stacked Jacobian or a ``RepresentationJacobian``.
      **kwargs: extra arguments for the transformation (e.g. ``task_weights``, ``losses``).

    Returns:
      The updates applied to the ``wrt`` variables.
    """
    if not is_representation(jac):
        return optimizer.update(model, jac, **kwargs)
    params = nnx.as_pure(nnx.state(model, optimizer.wrt))
    opt_state = nnx.as_pure(optimizer.opt_state)
    updates, new_opt_state = optimizer.tx.update(jac, opt_state, params, **nnx.as_pure(kwargs))
    nnx.update(model, optax.apply_updates(params, updates))
    nnx.update(optimizer.opt_state, nnx.state(new_opt_state))
    optimizer.step[...] += 1
    return updates
