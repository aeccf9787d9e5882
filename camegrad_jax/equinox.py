"""Equinox helpers: the stacked Jacobian of an ``eqx.Module``'s task losses.

An ``eqx.Module`` holds arrays next to things that are not (its activation functions, Python
ints); [`camegrad_jax.value_and_jacobian`][camegrad_jax.value_and_jacobian] needs a pytree of
arrays. ``filter_value_and_jacobian`` splits the model with ``eqx.is_inexact_array``,
differentiates the array part and returns the Jacobian as a model whose floating-point arrays
have a leading task axis (``None`` elsewhere), which goes straight to an optax chain that
aggregates first::

    params = eqx.filter(model, eqx.is_inexact_array)
    losses, jac = cgeqx.filter_value_and_jacobian(loss_fn)(model, batch)
    updates, opt_state = tx.update(jac, opt_state, params)
    model = eqx.apply_updates(model, updates)

Equinox is an optional dependency (``pip install 'camegrad_jax[equinox]'``); this module
imports it when one of its functions is called.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from types import ModuleType
from typing import Any

from camegrad_jax._jacobian import AxisName
from camegrad_jax._jacobian import value_and_jacobian as _value_and_jacobian

__all__ = ["filter_value_and_jacobian"]


def _equinox() -> ModuleType:
    try:
        return importlib.import_module("equinox")
    except ImportError as error:
        raise ImportError(
            "camegrad_jax.equinox needs Equinox: `pip install 'camegrad_jax[equinox]'`."
        ) from error


def filter_value_and_jacobian(
    loss_fn: Callable[..., Any],
    *,
    axis_name: AxisName | None = None,
    chunk_size: int | None = None,
    has_aux: bool = False,
) -> Callable[..., Any]:
    r"""The K task losses of ``loss_fn(model, *args)`` and their Jacobian over the model's arrays.

    The Equinox twin of [`camegrad_jax.value_and_jacobian`][camegrad_jax.value_and_jacobian], as
    ``eqx.filter_grad`` is of ``jax.grad`` (its options are keyword-only): row $k$ of the Jacobian
    is $\nabla_\theta L_k$ for the floating-point arrays $\theta$ of the model
    (``eqx.is_inexact_array``); everything else is held fixed. Use ``eqx.filter(model,
    eqx.is_inexact_array)`` as the optimizer's parameters, in ``init`` and in ``update``, so that
    they have the Jacobian's structure.

    Args:
      loss_fn: ``loss_fn(model, *args, **kwargs) -> losses`` with ``losses`` of shape ``(K,)``,
        or ``-> (losses, aux)`` when ``has_aux``.
      axis_name: inside ``jax.shard_map``, the mesh axis (or axes) the batch is split over (see
        [`camegrad_jax.value_and_jacobian`][camegrad_jax.value_and_jacobian]).
      chunk_size: compute the Jacobian's rows this many at a time to bound memory.
      has_aux: whether ``loss_fn`` also returns auxiliary data.

    Returns:
      A function ``(model, *args, **kwargs) -> (losses, jac)``, or ``((losses, aux), jac)``,
      with ``jac`` shaped like the model: its floating-point arrays have shape ``(K, ...)``,
      its other leaves are ``None``.

    Examples:
      >>> import pytest; eqx = pytest.importorskip("equinox")
      >>> import jax, jax.numpy as jnp, optax, camegrad_jax as cg
      >>> from camegrad_jax import equinox as cgeqx
      >>> model = eqx.nn.MLP(2, 2, 4, 1, key=jax.random.key(0))  # holds its activation
      >>> loss_fn = lambda m, x: jnp.mean(jax.vmap(m)(x) ** 2, axis=0)  # 2 task losses
      >>> losses, jac = cgeqx.filter_value_and_jacobian(loss_fn)(model, jnp.ones((8, 2)))
      >>> jac.layers[0].weight.shape, jac.activation
      ((2, 4, 2), None)
      >>> params = eqx.filter(model, eqx.is_inexact_array)
      >>> tx = optax.chain(cg.came_grad(num_tasks=2), optax.sgd(0.1))
      >>> updates, _ = tx.update(jac, tx.init(params), params)
      >>> eqx.apply_updates(model, updates).layers[0].weight.shape
      (4, 2)
    """

    def of_arrays(arrays: Any, static: Any, *args: Any, **kwargs: Any) -> Any:
        return loss_fn(_equinox().combine(arrays, static), *args, **kwargs)

    value_and_jac = _value_and_jacobian(
        of_arrays, has_aux, axis_name=axis_name, chunk_size=chunk_size
    )

    def wrapped(model: Any, *args: Any, **kwargs: Any) -> Any:
        eqx = _equinox()
        arrays, static = eqx.partition(model, eqx.is_inexact_array)
        return value_and_jac(arrays, static, *args, **kwargs)

    return wrapped
