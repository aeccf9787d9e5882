r"""Wrappers around a whole chain whose first element aggregates a stacked Jacobian.

optax's wrappers that build a zero update (``optax.MultiSteps``, ``optax.apply_if_finite``)
shape it like their *input*. A chain that starts with an aggregation takes a Jacobian with
``(K, ...)`` leaves and returns an update shaped like the parameters, so those wrappers break
when they wrap it. The two wrappers here shape their zero update like the inner chain's
*output* (found with ``jax.eval_shape``) and keep everything else optax-like:

* [`accumulate`][camegrad_jax.accumulate]: gradient accumulation (``optax.MultiSteps``) of
  stacked Jacobians;
* [`apply_if_finite`][camegrad_jax.apply_if_finite]: skips the whole step, optimiser state
  included, when the Jacobian holds NaN or Inf.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from camegrad_jax._gram import all_finite
from camegrad_jax._inputs import jacobian_input, jacobian_rows

Array = jax.Array


def _zeros_like_shapes(shapes: Any) -> Any:
    return jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)


def _num_tasks_of_state(inner_state: Any) -> int:
    """K from the ``AggregateState``s inside ``inner_state`` (they must agree)."""
    found = optax.tree.get_all_with_path(inner_state, "AggregateState")
    sizes = {int(jnp.shape(state.coefficients)[-1]) for _, state in found}
    if len(sizes) != 1:
        detail = "none" if not sizes else f"several, with K in {sorted(sizes)}"
        raise ValueError(
            "`accumulate` could not read the number of tasks from the inner chain's state "
            f"(aggregations found: {detail}); pass `num_tasks`."
        )
    return sizes.pop()


def _skipped_steps(inner_state: Any) -> Array:
    """The total of the ``skipped_steps`` counters of the aggregations inside ``inner_state``."""
    found = optax.tree.get_all_with_path(inner_state, "AggregateState")
    return sum((state.skipped_steps for _, state in found), start=jnp.zeros((), jnp.int32))


class AccumulateState(NamedTuple):
    """State of [`accumulate`][camegrad_jax.accumulate].

    Attributes:
      micro_step: how many micro-batches the running means hold, in ``[0, every_k)``; 0 right
        after a step was applied.
      applied_steps: how many times the inner chain has been applied.
      ready: whether the last call applied the inner chain (False after ``init``); it is the
        flag ``optax.experimental.aggregating.process`` reads to run its postprocessor.
      mean_jacobian: the running mean of this cycle's Jacobians (leaves ``(K, ...)``, float32
        or wider).
      mean_args: the running means of the averaged keyword arguments (e.g. ``"losses"``).
      inner_state: the inner chain's state, untouched between applied steps.
    """

    micro_step: Array
    applied_steps: Array
    ready: Array
    mean_jacobian: Any
    mean_args: dict[str, Array]
    inner_state: Any


def accumulate(
    inner: Any,
    every_k: int,
    *,
    num_tasks: int | None = None,
    averaged_args: Sequence[str] = ("losses",),
) -> optax.GradientTransformationExtraArgs:
    r"""Gradient accumulation of stacked Jacobians, ``optax.MultiSteps`` for an aggregating chain.

    ``inner`` is the whole chain, its first element an aggregation, e.g.
    ``optax.chain(cg.came_grad(...), optax.adam(...))``. Every call to ``update`` adds the
    micro-batch's Jacobian to a running mean; every ``every_k``-th call hands the mean
    $\bar J = \frac1k\sum_{m=1}^k J_m$ to ``inner`` and returns its update. The other calls
    return a zero update shaped like ``inner``'s output (the parameters) and leave ``inner``'s
    state untouched, so weighting state, diagnostics and Adam's moments move once per cycle.

    With micro-batches of equal size, the mean of their mean-loss Jacobians is the Jacobian of
    the big batch's mean loss, so a cycle equals one big-batch step (up to round-off). The
    Gram matrix, and hence the weighting, sees $\bar J$, never a per-micro-batch Jacobian:
    aggregating per micro-batch and averaging the updates would not be the same method.

    Keyword arguments named in ``averaged_args`` (default ``("losses",)``, the ``(K,)`` task
    losses that loss-based weightings read) are averaged over the cycle like the Jacobian; they
    must be ``(K,)`` vectors, and a name not passed is simply not averaged. Every other keyword
    argument (e.g. per-step ``task_weights``) is passed through from the call that applies
    the step, the last of the cycle.

    Under ``jax.jit`` the step counter is traced and the branch is a ``lax.cond``: one
    compilation serves every micro-step, and only the branch taken runs (under ``jax.vmap``
    both run). A NaN or Inf in a micro-batch's Jacobian makes the cycle's mean non-finite, so
    the aggregation skips that step; wrap ``accumulate`` in
    [`apply_if_finite`][camegrad_jax.apply_if_finite] to drop just that micro-batch instead.

    Args:
      inner: the chain to apply once per cycle; it takes the stacked Jacobian.
      every_k: the number of micro-batches per applied step (a static Python int).
      num_tasks: K, needed to shape the running mean; read from the inner chain's
        [`AggregateState`][camegrad_jax.AggregateState] when not given.
      averaged_args: names of keyword arguments averaged over the cycle.

    Returns:
      An ``optax.GradientTransformationExtraArgs`` with an
      [`AccumulateState`][camegrad_jax.AccumulateState]; diagnostics stay readable with
      ``optax.tree.get`` (they are those of the last applied step).

    Examples:
      >>> import jax, jax.numpy as jnp, optax, camegrad_jax as cg
      >>> mean_grad = cg.aggregate(cg.weightings.mean(), num_tasks=2)
      >>> tx = cg.accumulate(optax.chain(mean_grad, optax.sgd(1.0)), every_k=2)
      >>> params = {"w": jnp.zeros(2)}
      >>> state = tx.init(params)
      >>> step = jax.jit(tx.update)
      >>> u, state = step({"w": jnp.array([[2.0, 0.0], [0.0, 0.0]])}, state, params)
      >>> u["w"], int(state.micro_step)  # nothing applied yet: a zero update
      (Array([0., 0.], dtype=float32), 1)
      >>> u, state = step({"w": jnp.array([[0.0, 0.0], [0.0, 2.0]])}, state, params)
      >>> u["w"], int(state.applied_steps)  # the mean weighting of the mean Jacobian
      (Array([-0.5, -0.5], dtype=float32), 1)
    """
    if isinstance(every_k, bool) or not isinstance(every_k, int) or every_k < 1:
        raise ValueError(f"`every_k` must be a positive Python int; got {every_k!r}.")
    if isinstance(averaged_args, str):
        raise TypeError("`averaged_args` must be a sequence of names, e.g. ('losses',).")
    averaged = tuple(averaged_args)
    inner = optax.with_extra_args_support(inner)

    def init(params: Any) -> AccumulateState:
        if not jax.tree_util.tree_leaves(params):
            raise ValueError("`accumulate` needs the parameters in `init` to shape its state.")
        inner_state = inner.init(params)
        k = _num_tasks_of_state(inner_state) if num_tasks is None else int(num_tasks)

        def zero_rows(p: Any) -> Array:
            dtype = jnp.result_type(p, jnp.float32)
            return jnp.zeros((k, *jnp.shape(p)), dtype)

        return AccumulateState(
            micro_step=jnp.zeros((), jnp.int32),
            applied_steps=jnp.zeros((), jnp.int32),
            ready=jnp.array(False),
            mean_jacobian=jax.tree_util.tree_map(zero_rows, params),
            mean_args={name: jnp.zeros((k,), jnp.float32) for name in averaged},
            inner_state=inner_state,
        )

    def update(
        updates: Any, state: AccumulateState, params: Any = None, **extra_args: Any
    ) -> tuple[Any, AccumulateState]:
        if not jacobian_input(updates).is_parameter_tree:
            raise TypeError(
                "`accumulate` cannot average a RepresentationJacobian: its backward pass belongs "
                "to one micro-batch. Accumulate full Jacobians (value_and_jacobian) instead."
            )
        expected, expected_def = jax.tree_util.tree_flatten(state.mean_jacobian)
        got, got_def = jax.tree_util.tree_flatten(updates)
        same_tree: bool = got_def == expected_def  # type: ignore[operator]
        if not same_tree or [jnp.shape(x) for x in got] != [jnp.shape(x) for x in expected]:
            raise ValueError(
                "`accumulate` received updates that are not the stacked Jacobian it was "
                f"initialised for ({jax.tree_util.tree_map(jnp.shape, updates)}, expected "
                f"{jax.tree_util.tree_map(jnp.shape, state.mean_jacobian)}); it must wrap the "
                "whole chain and receive the Jacobian (leaves of shape (K, ...))."
            )
        count = state.micro_step + 1

        def running_mean(mean: Array, new: Any) -> Array:
            new = jnp.asarray(new).astype(mean.dtype)
            return mean + (new - mean) / count.astype(mean.dtype)

        mean_jacobian = jax.tree_util.tree_map(running_mean, state.mean_jacobian, updates)
        mean_args = dict(state.mean_args)
        for name in averaged:
            if name in extra_args:
                value = extra_args[name]
                if jnp.shape(value) != jnp.shape(mean_args[name]):
                    raise ValueError(
                        f"`{name}` has shape {jnp.shape(value)}; `accumulate` averages it over "
                        f"micro-batches and expects {jnp.shape(mean_args[name])}, one per task."
                    )
                mean_args[name] = running_mean(mean_args[name], value)
        inner_args = dict(extra_args)
        for name in averaged:
            if name in extra_args:
                dtype = jnp.result_type(extra_args[name])
                inner_args[name] = mean_args[name].astype(dtype)
        jacobian = jax.tree_util.tree_map(
            lambda m, u: m.astype(jnp.result_type(u)), mean_jacobian, updates
        )

        def apply() -> tuple[Any, Any]:
            return inner.update(jacobian, state.inner_state, params, **inner_args)

        out_shapes, _ = jax.eval_shape(apply)

        def apply_and_reset() -> tuple[Any, Any, Any, Any]:
            new_updates, inner_state = apply()
            zeros = jax.tree_util.tree_map(jnp.zeros_like, (mean_jacobian, mean_args))
            return new_updates, inner_state, *zeros

        def keep() -> tuple[Any, Any, Any, Any]:
            return _zeros_like_shapes(out_shapes), state.inner_state, mean_jacobian, mean_args

        ready = count >= every_k
        new_updates, inner_state, mean_jacobian, mean_args = jax.lax.cond(
            ready, apply_and_reset, keep
        )
        return new_updates, AccumulateState(
            micro_step=jnp.where(ready, 0, count).astype(jnp.int32),
            applied_steps=state.applied_steps + ready.astype(jnp.int32),
            ready=ready,
            mean_jacobian=mean_jacobian,
            mean_args=mean_args,
            inner_state=inner_state,
        )

    return optax.GradientTransformationExtraArgs(init, update)


def apply_if_finite(
    inner: Any, max_consecutive_errors: int
) -> optax.GradientTransformationExtraArgs:
    """``optax.apply_if_finite`` for a chain that aggregates: skips the whole step on NaN or Inf.

    The step is skipped when any leaf of the incoming (stacked) Jacobian, or of a
    [`RepresentationJacobian`][camegrad_jax.RepresentationJacobian]'s features, is not
    finite, when an aggregation inside ``inner`` skipped it (its ``skipped_steps`` moved: a
    non-finite loss, coefficient or combined update $J^\top c$, e.g. a float16 update beyond
    65504), or when ``inner``'s update is not finite. The update is then zero, shaped like
    ``inner``'s output, and ``inner``'s state is left as it was, so Adam's moments and count do
    not move either (an aggregation alone zeroes the update but lets the optimisers after it
    step on that zero). After more than ``max_consecutive_errors`` non-finite steps
    in a row the step is applied anyway, as in optax. The state is optax's
    ``ApplyIfFiniteState``: ``optax.tree.get(state, "total_notfinite")`` counts the skips.

    Args:
      inner: the whole chain, starting with the aggregation.
      max_consecutive_errors: how many non-finite steps in a row are skipped.

    Returns:
      An ``optax.GradientTransformationExtraArgs`` with an ``optax.ApplyIfFiniteState``.

    Examples:
      >>> import jax, jax.numpy as jnp, optax, camegrad_jax as cg
      >>> mean_grad = cg.aggregate(cg.weightings.mean(), num_tasks=2)
      >>> tx = cg.apply_if_finite(optax.chain(mean_grad, optax.adam(0.1)), 3)
      >>> params = {"w": jnp.zeros(2)}
      >>> step = jax.jit(tx.update)
      >>> _, state = step({"w": jnp.eye(2)}, tx.init(params), params)
      >>> u, state = step({"w": jnp.full((2, 2), jnp.nan)}, state, params)
      >>> u["w"], int(optax.tree.get(state, "total_notfinite")), int(optax.tree.get(state, "count"))
      (Array([0., 0.], dtype=float32), 1, 1)
    """
    inner = optax.with_extra_args_support(inner)

    def init(params: Any) -> optax.ApplyIfFiniteState:
        return optax.ApplyIfFiniteState(
            notfinite_count=jnp.zeros((), jnp.int32),
            last_finite=jnp.array(True),
            total_notfinite=jnp.zeros((), jnp.int32),
            inner_state=inner.init(params),
        )

    def update(
        updates: Any, state: optax.ApplyIfFiniteState, params: Any = None, **extra_args: Any
    ) -> tuple[Any, optax.ApplyIfFiniteState]:
        checked = jacobian_rows(updates)
        new_updates, inner_state = inner.update(updates, state.inner_state, params, **extra_args)
        skipped = _skipped_steps(inner_state) != _skipped_steps(state.inner_state)
        finite = all_finite(checked) & all_finite(new_updates) & ~skipped
        notfinite_count = jnp.where(finite, 0, optax.safe_increment(state.notfinite_count))
        apply = finite | (notfinite_count > max_consecutive_errors)
        new_updates = jax.tree_util.tree_map(
            lambda u: jnp.where(apply, u, jnp.zeros_like(u)), new_updates
        )
        inner_state = jax.tree_util.tree_map(
            lambda new, old: jnp.where(apply, new, old), inner_state, state.inner_state
        )
        return new_updates, optax.ApplyIfFiniteState(
            notfinite_count=notfinite_count,
            last_finite=finite,
            total_notfinite=jnp.where(
                finite, state.total_notfinite, optax.safe_increment(state.total_notfinite)
            ),
            inner_state=inner_state,
        )

    return optax.GradientTransformationExtraArgs(init, update)
