"""Optax transformations that turn a stacked Jacobian into one update through a Weighting."""

from __future__ import annotations

import functools
import inspect
import sys
import types
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from camegrad_jax._checks import resolve_num_tasks, static_num_tasks
from camegrad_jax._gram import all_finite, check_against_params, gram_dtype
from camegrad_jax._groups import Grouping, leaf_groups, parameter_shapes
from camegrad_jax._inputs import Grams, jacobian_input
from camegrad_jax._weighting import Weighting

Array = jax.Array


def _direction_is_finite(direction: Any, grams: Grams, coeffs: Array, *, from_gram: bool) -> Array:
    r"""Whether $d = J^\top c$ is finite, given that $J$ and $c$ are.

    With the Gram matrices at hand this usually needs no pass over $d$: every entry of $d$, and
    every partial sum of $J^\top c$, is at most $B = \sum_k |c_k|\,\|g_k\|$ in magnitude, so
    $d$ is finite in float32 or wider when $B$ is below float32's largest number. Only where it
    is not (a Jacobian near float32's end) are the entries checked, in a branch; leaves of a
    narrower range (float16) always are, and every leaf is when there is no Gram matrix
    (``from_gram=False``). The entry check costs a reduction per leaf before the update can be
    written, which the bound keeps off the hot path of every step.
    """
    leaves = jax.tree_util.tree_leaves(direction)
    if not from_gram:
        return all_finite(leaves)
    largest = jnp.finfo(jnp.float32).max
    norms = grams.scales[:, None] * jnp.sqrt(
        jnp.maximum(jnp.diagonal(grams.matrices, axis1=-2, axis2=-1), 0.0)
    )
    bound = jnp.max(jnp.sum(jnp.abs(coeffs) * norms, axis=-1))
    narrow = [leaf for leaf in leaves if jnp.finfo(leaf.dtype).max < largest]
    wide = [leaf for leaf in leaves if jnp.finfo(leaf.dtype).max >= largest]
    finite = all_finite(narrow) if narrow else jnp.array(True)
    if wide:
        finite = finite & jax.lax.cond(bound < largest, lambda _: jnp.array(True), all_finite, wide)
    return finite


class AggregateState(NamedTuple):
    """State of [`aggregate`][camegrad_jax.aggregate] (fields readable with ``optax.tree.get``).

    Attributes:
      weighting_state: the weighting's own state and diagnostics (with a leading group axis
        when the aggregation has parameter groups).
      coefficients: the coefficients $c$ of the last applied step, ``(K,)`` or ``(groups, K)``.
      skipped_steps: how many steps were skipped because the Jacobian, the ``losses`` given,
        the coefficients or the update held NaN or Inf.
    """

    weighting_state: Any
    coefficients: Array
    skipped_steps: Array


# optax wrappers that shape their zero update like their input (a Jacobian) cannot wrap an
# aggregation, whose output is shaped like the parameters; the replacement each needs.
_OPTAX_WRAPPERS = {"MultiSteps": "cg.accumulate", "apply_if_finite": "cg.apply_if_finite"}


def _check_not_in_optax_wrapper() -> None:
    """Raises a ``ValueError`` naming the replacement when an optax wrapper calls ``update``.

    Their own error (a ``lax.cond`` whose branches differ in shape, or a wrong K) would point
    away from the cause. The caller is found on the Python stack, at trace time only.
    """
    frame: types.FrameType | None = sys._getframe(1)
    while frame is not None:
        if frame.f_globals.get("__name__", "").startswith("optax."):
            wrapper = frame.f_code.co_qualname.split(".")[0]
            if wrapper in _OPTAX_WRAPPERS:
                raise ValueError(
                    f"optax.{wrapper} cannot wrap a chain that aggregates a stacked Jacobian: it "
                    "shapes its zero update like the Jacobian, not like the parameters. Use "
                    f"{_OPTAX_WRAPPERS[wrapper]} instead."
                )
        frame = frame.f_back


def _check_num_tasks(k: int, expected: int, declared: int | None) -> None:
    """Clear errors when the Jacobian's K, the state's and the declared one disagree."""
    if declared is not None and expected != declared:
        raise ValueError(
            f"The state holds {expected} tasks but this aggregation was built for "
            f"{declared}: a state restored from a checkpoint saved with another number of "
            "tasks cannot be used. Initialise a new state with `init`."
        )
    if k != expected:
        raise ValueError(
            f"`updates` (the Jacobian) has {k} tasks on its leading axis but the state was "
            f"initialised for {expected}. The aggregation must be the first transformation of "
            "the chain and receive the stacked Jacobian (leaves of shape (K, ...))."
        )


def _state_dtype(params: Any) -> Any:
    """The states' float dtype: the parameters' widest (at least float32), else JAX's default
    float (float64 under x64)."""
    floats = [x for x in jax.tree_util.tree_leaves(params) if jnp.issubdtype(x.dtype, jnp.floating)]
    return jnp.result_type(jnp.float32, *floats) if floats else jnp.result_type(float)


def _with_float_dtype(tree: Any, dtype: Any) -> Any:
    """``tree`` with its floating-point leaves cast to ``dtype`` (keys, counters untouched)."""
    return jax.tree_util.tree_map(
        lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree
    )


def _stack(trees: list[Any]) -> Any:
    return jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *trees)


def aggregate(
    weighting: Weighting, *, num_tasks: int | None = None, groups: Grouping = None
) -> optax.GradientTransformationExtraArgs:
    r"""Turns any [`Weighting`][camegrad_jax.Weighting] into an optax transformation.

    ``update(jac, state, params=None, **extra_args)`` takes the stacked Jacobian (a pytree of
    ``(K, ...)`` leaves, e.g. from [`value_and_jacobian`][camegrad_jax.value_and_jacobian]),
    computes the Gram matrix, asks the weighting for coefficients $c$ and returns $J^\top c$,
    shaped like one task's gradient. It changes the leaves' shape, so it must come first in an
    ``optax.chain``. It also takes a
    [`RepresentationJacobian`][camegrad_jax.RepresentationJacobian] (shared-representation
    mode): the Gram matrix of the features' Jacobian, then one backward pass of
    $\sum_k c_k L_k$.

    With ``groups``, each parameter group gets its own Gram matrix, coefficients and weighting
    state (GradVac's "all_layer" mode, TorchJD's per-block aggregation); the weighting runs
    vmapped over the groups.

    A step whose Jacobian, ``losses`` (when given), coefficients or update $J^\top c$ hold
    NaN or Inf gives a zero update and leaves the state as it was, apart from
    ``skipped_steps``; a weighting that cannot use a step (e.g. FAMO's log of a non-positive
    loss) returns non-finite coefficients to have it skipped. ``extra_args`` are handed to the
    weighting (e.g. per-step ``task_weights``). When ``params`` is given, every leaf of the
    Jacobian must have shape ``(K, *param.shape)``; an optimizer placed before the
    aggregation is not detected unless it changes those shapes.

    Args:
      weighting: the weighting that maps the Gram matrix to coefficients.
      num_tasks: K, needed by ``init`` because the state's shapes depend on it.
      groups: None (one group), ``"top_level"`` (one group per top-level key of the parameters)
        or a function ``(path, leaf) -> label`` of the key path and the parameter's
        ``jax.ShapeDtypeStruct``; with groups, ``init`` needs the parameters.

    Returns:
      An ``optax.GradientTransformationExtraArgs`` with an
      [`AggregateState`][camegrad_jax.AggregateState].

    Examples:
      >>> import jax.numpy as jnp, optax, camegrad_jax as cg
      >>> tx = cg.aggregate(cg.weightings.mean(), num_tasks=2)
      >>> jac = {"w": jnp.array([[1.0, 2.0], [3.0, 0.0]])}
      >>> update, state = tx.update(jac, tx.init({"w": jnp.zeros(2)}))
      >>> update
      {'w': Array([2., 1.], dtype=float32)}
    """
    declared = static_num_tasks(num_tasks)
    leaf_groups(None, groups)  # validates `groups` now rather than at the first step

    def init(params: Any) -> AggregateState:
        if num_tasks is None:
            raise ValueError(
                "The number of tasks is unknown: pass `num_tasks` (or `task_weights` to "
                "`came_grad`); the state's shapes depend on it and cannot change after `init`."
            )
        k = static_num_tasks(num_tasks)
        if k is None:
            raise ValueError(
                "`num_tasks` must be a static Python int; under `optax.inject_hyperparams` pass "
                "`static_args=('num_tasks',)` or give `task_weights` instead."
            )
        dtype = _state_dtype(params)
        state = AggregateState(
            weighting_state=_with_float_dtype(weighting.init(k), dtype),
            coefficients=jnp.zeros((k,), dtype),
            skipped_steps=jnp.zeros((), jnp.int32),
        )
        if groups is None:
            return state
        if not jax.tree_util.tree_leaves(params):
            raise ValueError("`params` must be given to `init` when `groups` is set.")
        _, num_groups = leaf_groups(parameter_shapes(params, stacked=False), groups)
        return state._replace(
            weighting_state=_stack([state.weighting_state] * num_groups),
            coefficients=jnp.zeros((num_groups, k), dtype),
        )

    def update(
        updates: Any, state: AggregateState, params: Any = None, **extra_args: Any
    ) -> tuple[Any, AggregateState]:
        _check_not_in_optax_wrapper()
        jac = jacobian_input(updates)
        k = jac.num_tasks
        _check_num_tasks(k, state.coefficients.shape[-1], declared)
        if params is not None and jac.is_parameter_tree:
            check_against_params(jac.rows, params, k)
        num_groups = state.coefficients.shape[0] if groups is not None else 1
        if weighting.uses_gram:
            rescale = weighting.scale_invariant or weighting.uses_jacobian_scale
            grams = jac.gram(groups, rescale=rescale)
        else:
            # Coefficients blind to J: no Gram matrix; a NaN or Inf in J shows in J^T c.
            dtype = gram_dtype(jac.rows)
            grams = Grams(
                jnp.zeros((num_groups, k, k), dtype),
                jnp.ones((num_groups,), dtype),
                jnp.array(True),
            )

        def weigh(gram: Array, scale: Array, weighting_state: Any) -> tuple[Array, Any]:
            scale_arg = {"jacobian_scale": scale} if weighting.uses_jacobian_scale else {}
            return weighting.weigh(gram, weighting_state, **scale_arg, **extra_args)

        if groups is None:
            coeffs, new_state = weigh(grams.matrices[0], grams.scales[0], state.weighting_state)
            group_coeffs = coeffs[None]
        else:
            coeffs, new_state = jax.vmap(weigh)(grams.matrices, grams.scales, state.weighting_state)
            group_coeffs = coeffs
        # A step is applied only if J, the losses given, c and d = J^T c are all finite: a
        # finite J can still give a non-finite c (traced NaN task weights, a weighting that
        # cannot use this step's losses) or d (a float16 J^T c beyond 65504).
        finite = grams.finite & all_finite(group_coeffs)
        if "losses" in extra_args:
            finite = finite & all_finite(extra_args["losses"])
        group_coeffs = jnp.where(finite, group_coeffs, 0.0).astype(gram_dtype(jac.rows))
        direction = jac.combine(group_coeffs, groups)
        finite = finite & _direction_is_finite(
            direction, grams, group_coeffs, from_gram=weighting.uses_gram and jac.is_parameter_tree
        )
        direction = jax.tree_util.tree_map(
            lambda d: jnp.where(finite, d, jnp.zeros_like(d)), direction
        )
        weighting_state = jax.tree_util.tree_map(
            lambda new, old: jnp.where(finite, new, old).astype(old.dtype),
            new_state,
            state.weighting_state,
        )
        return direction, AggregateState(
            weighting_state=weighting_state,
            coefficients=jnp.where(finite, coeffs, state.coefficients).astype(
                state.coefficients.dtype
            ),
            skipped_steps=state.skipped_steps + (~finite).astype(jnp.int32),
        )

    return optax.GradientTransformationExtraArgs(init, update)


def transformation(
    weighting_factory: Callable[..., Weighting],
) -> Callable[..., optax.GradientTransformationExtraArgs]:
    """Turns a weighting factory into a transformation factory with the same arguments.

    ``transformation(weightings.cagrad)(c=0.5, num_tasks=3)`` is
    ``aggregate(weightings.cagrad(c=0.5), num_tasks=3)``. The new factory has the weighting's
    signature plus keyword-only ``num_tasks`` (K may also come from a ``task_weights``
    argument) and ``groups`` (see [`aggregate`][camegrad_jax.aggregate]), so
    ``optax.inject_hyperparams`` sees every hyperparameter.

    Examples:
      >>> import camegrad_jax as cg
      >>> mean_grad = cg.transformation(cg.weightings.mean)
      >>> tx = mean_grad(num_tasks=2)
      >>> import inspect; list(inspect.signature(mean_grad).parameters)
      ['num_tasks', 'groups']
    """
    signature = inspect.signature(weighting_factory)
    extra = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None)
        for name in ("num_tasks", "groups")
    ]

    @functools.wraps(weighting_factory)
    def factory(
        *args: Any, num_tasks: int | None = None, groups: Grouping = None, **kwargs: Any
    ) -> optax.GradientTransformationExtraArgs:
        bound = signature.bind(*args, **kwargs)
        k = resolve_num_tasks(bound.arguments.get("task_weights"), num_tasks)
        weighting = weighting_factory(*args, **kwargs)
        return aggregate(weighting, num_tasks=num_tasks if k is None else k, groups=groups)

    factory.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=[*signature.parameters.values(), *extra],
        return_annotation=optax.GradientTransformationExtraArgs,
    )
    return factory
