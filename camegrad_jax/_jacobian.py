"""Jacobians of a vector of task losses: one forward pass, K pullbacks in one vmap."""

from __future__ import annotations

import numbers
from collections.abc import Callable, Hashable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

AxisName = Hashable | tuple[Hashable, ...]


def value_and_jacobian(
    loss_fn: Callable[..., Any],
    has_aux: bool = False,
    *,
    axis_name: AxisName | None = None,
    chunk_size: int | None = None,
) -> Callable[..., Any]:
    r"""Wraps ``loss_fn(params, *args)``, which returns K task losses, to return their Jacobian.

    The forward pass runs once (``jax.vjp``); the pullback is vmapped over the K basis vectors
    $e_k$, so row k of the Jacobian is $\nabla_\theta L_k$. The Jacobian has the
    structure of ``params`` with a leading axis of size K on every leaf, ready for
    [`came_grad`][camegrad_jax.came_grad] or [`aggregate`][camegrad_jax.aggregate].

    The vmapped pullback holds the intermediate cotangents of all K rows at once, about K
    times the memory of one backward pass. ``chunk_size=m`` computes the rows m at a time
    (``jax.lax.map`` with ``batch_size=m``): peak memory of about m backward passes, the same
    Jacobian, and a little more time since the chunks run one after another.

    Under ``jax.jit`` with a batch-sharded input nothing is needed: a loss that is a mean over
    the batch is a mean over the global batch, so the Jacobian already is the global one.
    Inside ``jax.shard_map`` each device only sees its shard of the batch; pass the data axis
    as ``axis_name`` and the losses and the Jacobian are averaged over it (``lax.pmean``)
    before they are returned. With $D$ shards, per-shard losses $L^{(d)}$ and per-shard
    Jacobians $J^{(d)}$,

    $$
    L = \frac{1}{D}\sum_d L^{(d)}, \qquad J = \frac{1}{D}\sum_d J^{(d)}, \qquad G = J J^\top,
    $$

    which is the Gram matrix of the global batch. Averaging per-device Gram matrices instead
    is wrong, since CAME-Grad and every other weighting are nonlinear in $J$:

    $$
    \frac{1}{D}\sum_d J^{(d)} J^{(d)\top}
      = J J^\top + \frac{1}{D}\sum_d \bigl(J^{(d)} - J\bigr)\bigl(J^{(d)} - J\bigr)^\top ,
    $$

    the true Gram matrix plus the between-shard covariance, which inflates the diagonal and
    hides the very conflicts the weighting is there to resolve (two shards whose gradients
    conflict in opposite directions average to no conflict at all). Aggregating per device and
    averaging the updates is wrong for the same reason.

    The average is what ``pmean`` of each row gives, whether or not ``shard_map`` checks
    replication (``check_vma``): with the check on, the parameters' cotangents are summed over
    the axis by JAX's autodiff itself and the basis vectors are scaled by $1/D$; with it off,
    the per-device Jacobian is ``pmean``-ed. With ``check_vma=False`` the parameters must be
    replicated over ``axis_name`` (``in_specs`` ``P()``). The ``aux`` output is returned as
    each device computed it.

    Args:
      loss_fn: ``loss_fn(params, *args, **kwargs) -> losses`` with ``losses`` of shape ``(K,)``, or
        ``-> (losses, aux)`` when ``has_aux``.
      has_aux: whether ``loss_fn`` also returns auxiliary data.
      axis_name: inside ``shard_map``, the mesh axis (or tuple of axes) the batch is split
        over; the losses and the Jacobian are averaged over it. None (default): no averaging.
      chunk_size: how many rows of the Jacobian are computed together (a positive Python
        int); None (default): all K in one ``vmap``.

    Returns:
      A function ``(params, *args, **kwargs) -> (losses, jac)``, or ``((losses, aux), jac)``;
      ``args`` and ``kwargs`` go to ``loss_fn``.

    Raises:
      TypeError: when a leaf of ``params`` is not an array, e.g. an ``eqx.Module``'s activation
        function (see
        [`filter_value_and_jacobian`][camegrad_jax.equinox.filter_value_and_jacobian]).

    Examples:
      >>> import jax.numpy as jnp, camegrad_jax as cg
      >>> losses_fn = lambda p, x: jnp.stack([jnp.sum(p["w"] * x), jnp.sum(p["w"] ** 2)])
      >>> losses, jac = cg.value_and_jacobian(losses_fn)({"w": jnp.array([1.0, 2.0])}, 3.0)
      >>> losses, jac["w"]
      (Array([9., 5.], dtype=float32), Array([[3., 3.],
             [2., 4.]], dtype=float32))
    """

    if chunk_size is not None and (
        isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1
    ):
        raise ValueError(f"`chunk_size` must be None or a positive Python int; got {chunk_size!r}.")

    def wrapped(params: Any, *args: Any, **kwargs: Any) -> Any:
        _check_array_leaves(params)

        def of_params(p: Any) -> Any:
            losses, aux = losses_and_aux(loss_fn(p, *args, **kwargs), has_aux)
            return (losses, aux) if has_aux else losses

        if has_aux:
            losses, pullback, aux = jax.vjp(of_params, params, has_aux=True)
        else:
            losses, pullback = jax.vjp(of_params, params)
        shape = jnp.shape(losses)
        basis = jnp.eye(shape[0], dtype=jnp.result_type(losses))
        # Inside shard_map with replication checks, the cotangents must vary like the losses.
        varying = _varying_axes(losses)
        averaged = () if axis_name is None else _as_tuple(axis_name)
        summed = tuple(a for a in averaged if a in varying)
        if summed:
            # JAX's autodiff sums the cotangents of replicated inputs over these axes: scale
            # by 1/D so that the sum is the mean.
            basis = basis / jax.lax.axis_size(summed)
        if varying:
            basis = jax.lax.pcast(basis, tuple(varying), to="varying")
        if chunk_size is None or chunk_size >= shape[0]:
            (jac,) = jax.vmap(pullback)(basis)
        else:
            (jac,) = jax.lax.map(pullback, basis, batch_size=chunk_size)
        if averaged:
            losses = jax.lax.pmean(losses, averaged)
            rest = tuple(a for a in averaged if a not in summed)
            if rest:
                jac = jax.lax.pmean(jac, rest)
        return ((losses, aux), jac) if has_aux else (losses, jac)

    return wrapped


def _check_array_leaves(params: Any) -> None:
    """Raises a ``TypeError`` naming the first leaf of ``params`` that JAX cannot differentiate.

    JAX's own error names the object but not where it sits; a model object (e.g. an
    ``eqx.Module`` holding its activation function) is the usual cause.
    """
    for path, leaf in jax.tree_util.tree_leaves_with_path(params):
        if isinstance(leaf, jax.Array | np.ndarray | np.generic | numbers.Number) or hasattr(
            leaf, "__jax_array__"
        ):
            continue
        raise TypeError(
            f"`params` must be a pytree of arrays; its leaf params{jax.tree_util.keystr(path)} "
            f"is a {type(leaf).__name__}. Differentiate the array part only: for an Equinox "
            "module use `camegrad_jax.equinox.filter_value_and_jacobian` (it partitions the "
            "model with `eqx.is_inexact_array`), for a Flax NNX module "
            "`camegrad_jax.nnx.value_and_jacobian`; see docs/howto-equinox.md."
        )


def losses_and_aux(out: Any, has_aux: bool) -> tuple[Any, Any]:
    """Splits ``loss_fn``'s output into the ``(K,)`` losses and ``aux``, naming what is wrong."""
    if has_aux:
        if not isinstance(out, tuple | list) or len(out) != 2:
            raise TypeError(
                "`loss_fn` must return a pair (losses, aux) when `has_aux=True`; got "
                f"{type(out).__name__}."
            )
        losses, aux = out
    else:
        losses, aux = out, None
    if isinstance(losses, tuple | list | dict):
        hint = (
            " If it returns (losses, aux), pass `has_aux=True`."
            if not (has_aux or isinstance(losses, dict))
            and len(losses) == 2
            and jnp.ndim(losses[0]) == 1
            else ""
        )
        raise TypeError(
            f"`loss_fn` returned a {type(losses).__name__} of losses; it must return one 1-D "
            f"array of the K task losses (e.g. `jnp.stack([loss_a, loss_b])`).{hint}"
        )
    shape = jnp.shape(losses)
    if len(shape) != 1:
        raise ValueError(f"`loss_fn` must return a 1-D vector of K task losses; got shape {shape}.")
    return losses, aux


def _as_tuple(axis_name: AxisName) -> tuple[Hashable, ...]:
    return axis_name if isinstance(axis_name, tuple) else (axis_name,)


def _varying_axes(x: Any) -> tuple[Hashable, ...]:
    """The manual mesh axes over which ``x`` varies (empty outside ``shard_map`` or unchecked)."""
    aval = jax.typeof(x)
    mat = getattr(aval, "mat", None)
    varying = getattr(mat, "varying", None) if mat is not None else getattr(aval, "vma", None)
    return tuple(sorted(varying or (), key=str))
