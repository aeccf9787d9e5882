r"""Flat dictionaries of scalars from an optimiser state, for any metrics logger.

The aggregation's diagnostics (coefficients, skipped steps and the weighting's own, e.g.
CAME-Grad's gain $\gamma$, fusion $\nu_t$ and pairwise cosines) live in the optimiser state.
[`diagnostics`][camegrad_jax.diagnostics] finds every
[`AggregateState`][camegrad_jax.AggregateState] in a state of any shape (an optax chain, a
wrapper such as [`accumulate`][camegrad_jax.accumulate] or ``optax.inject_hyperparams``, an
``nnx.Optimizer`` or its ``nnx.State``) and flattens it to ``{"name": float}``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array

_AGGREGATE_FIELDS = frozenset({"weighting_state", "coefficients", "skipped_steps"})
_HYPERPARAM_FIELDS = frozenset({"hyperparams", "inner_state"})
# Internal state that is no diagnostic: PRNG keys and the weightings' own optimiser moments.
_SKIPPED = frozenset({"key", "optimizer_state"})
# K×K matrices of task pairs: symmetric ones (i < j logged) and ones with an unused diagonal.
_SYMMETRIC = frozenset({"cosines"})
_OFF_DIAGONAL = frozenset({"targets"})


def _is_namedtuple(node: Any) -> bool:
    return isinstance(node, tuple) and hasattr(node, "_fields")


def _fields(node: Any) -> dict[Any, Any] | None:
    """The named children of a NamedTuple or mapping (``nnx.State`` included), else None."""
    if _is_namedtuple(node):
        return {name: getattr(node, name) for name in node._fields}
    if isinstance(node, Mapping):
        return dict(node.items())
    return None


def _array(node: Any) -> Array | None:
    """The array inside a leaf (an array or an ``nnx`` variable), else None."""
    leaves = jax.tree_util.tree_leaves(node)
    if len(leaves) != 1 or _fields(node) is not None:
        return None
    leaf = leaves[0]
    return leaf if hasattr(leaf, "dtype") and hasattr(leaf, "shape") else None


def _loggable(value: Array) -> bool:
    """Floating-point arrays and integer counters; not PRNG key data, orders or flags."""
    dtype = jnp.dtype(value.dtype)
    return jnp.issubdtype(dtype, jnp.floating) or (
        jnp.issubdtype(dtype, jnp.signedinteger) and value.ndim == 0
    )


def _weighting_entries(prefix: str, node: Any, out: dict[str, Array]) -> None:
    fields = _fields(node)
    if fields is None:
        value = _array(node)
        if value is not None and _loggable(value):
            out[prefix] = value
        return
    for name, child in fields.items():
        if str(name) in _SKIPPED:
            continue
        _weighting_entries(f"{prefix}/{name}" if prefix else str(name), child, out)


def _aggregate_entries(state: dict[Any, Any], out: dict[str, Array]) -> None:
    coefficients = _array(state["coefficients"])
    skipped = _array(state["skipped_steps"])
    if skipped is not None:
        out["skipped_steps"] = skipped
    if coefficients is None:
        return
    entries = {"coefficients": coefficients}
    _weighting_entries("", state["weighting_state"], entries)
    if coefficients.ndim == 1:
        out.update(entries)
        return
    for g in range(coefficients.shape[0]):  # parameter groups: a leading group axis
        for key, value in entries.items():
            name, _, rest = key.partition("/")
            out["/".join(filter(None, [name, f"group{g}", rest]))] = value[g]


def _walk(node: Any, aggregates: list[dict[Any, Any]], hyperparams: list[dict[Any, Any]]) -> None:
    if hasattr(node, "opt_state") and _fields(node) is None:  # an nnx.Optimizer
        node = node.opt_state
    fields = _fields(node)
    if fields is not None:
        keys = {str(k) for k in fields}
        if keys >= _AGGREGATE_FIELDS:
            aggregates.append({str(k): v for k, v in fields.items()})
            return
        if keys >= _HYPERPARAM_FIELDS and _fields(fields["hyperparams"]) is not None:
            hyperparams.append(_fields(fields["hyperparams"]) or {})
        for child in fields.values():
            _walk(child, aggregates, hyperparams)
    elif isinstance(node, list | tuple):
        for child in node:
            _walk(child, aggregates, hyperparams)


def diagnostic_arrays(opt_state: Any) -> dict[str, Array]:
    """The diagnostics of [`diagnostics`][camegrad_jax.diagnostics] as whole arrays, jit-friendly.

    ``coefficients`` is a ``(K,)`` array, CAME-Grad's ``cosines`` a ``(K, K)`` one, ``gain`` a
    0-d one: one entry per field, whatever K, so a jitted train step can return the dict
    cheaply. Only the state's structure, shapes and dtypes decide the keys, so this runs
    inside ``jax.jit``; [`diagnostics`][camegrad_jax.diagnostics] flattens them on the host.

    Args:
      opt_state: any optimiser state holding aggregations (see
        [`diagnostics`][camegrad_jax.diagnostics]).

    Returns:
      ``{name: array}``, in a deterministic order.

    Examples:
      >>> import jax, camegrad_jax as cg
      >>> state = cg.came_grad(num_tasks=2).init(None)
      >>> arrays = jax.jit(cg.diagnostic_arrays)(state)
      >>> arrays["coefficients"].shape, arrays["cosines"].shape, arrays["gain"].shape
      ((2,), (2, 2), ())
    """
    aggregates: list[dict[Any, Any]] = []
    hyperparams: list[dict[Any, Any]] = []
    _walk(opt_state, aggregates, hyperparams)
    out: dict[str, Array] = {}
    for i, aggregate in enumerate(aggregates):
        entries: dict[str, Array] = {}
        _aggregate_entries(aggregate, entries)
        prefix = f"aggregate{i}/" if len(aggregates) > 1 else ""
        out.update({prefix + key: value for key, value in entries.items()})
    for i, found in enumerate(hyperparams):
        for name, node in found.items():
            value = _array(node)
            if value is None or not _loggable(value):
                continue
            key = f"hyperparams/{name}"
            out[key if key not in out else f"{key}#{i}"] = value
    return out


def _field_name(key: str) -> str:
    """The state field a key names, without its aggregation and group parts."""
    parts = [p for p in key.split("/") if not p.startswith(("group", "aggregate"))]
    return parts[-1].split("#")[0] if parts else key


def _flatten(
    key: str, value: np.ndarray, task_names: Sequence[str] | None, out: dict[str, float]
) -> None:
    """``value``'s entries as ``key``, ``key/i``, ``key/i/j`` (task pairs: see `diagnostics`)."""
    field = _field_name(key)
    for index in np.ndindex(*value.shape):
        if len(index) == 2 and (
            (field in _SYMMETRIC and index[0] >= index[1])
            or (field in _OFF_DIAGONAL and index[0] == index[1])
        ):
            continue
        labels = [
            task_names[i] if task_names is not None and size == len(task_names) else str(i)
            for i, size in zip(index, value.shape, strict=True)
        ]
        out["/".join([key, *labels])] = float(value[index])


def diagnostics(opt_state: Any, task_names: Sequence[str] | None = None) -> dict[str, float]:
    r"""The aggregation's diagnostics as a flat ``{name: float}`` dict, ready for any logger.

    Finds every [`AggregateState`][camegrad_jax.AggregateState] in ``opt_state`` (a bare
    transformation's state, an ``optax.chain``, [`accumulate`][camegrad_jax.accumulate],
    ``optax.inject_hyperparams``, ``optax.apply_if_finite``, an ``nnx.Optimizer`` or
    ``nnx.state(optimizer)``) and lists

    * ``skipped_steps`` and the last step's ``coefficients/k``;
    * every floating-point field of the weighting's state, e.g. for CAME-Grad ``gain``
      ($\gamma$), ``fusion`` ($\nu_t$), ``dual_weights/k`` ($w^*$) and ``cosines/i/j``
      (pairs $i < j$ only; GradVac's ``targets/i/j`` for $i \ne j$), and integer counters
      such as Nash-MTL's ``step``; PRNG keys,
      integer index arrays and the weightings' inner optimiser states are left out;
    * the injected hyperparameters of ``optax.inject_hyperparams`` (``hyperparams/rho``,
      ``hyperparams/learning_rate``, ``hyperparams/task_weights/k``; a name met twice gets a
      ``#i`` suffix).

    With parameter groups, each name gets a group part: ``gain/group1``,
    ``coefficients/group1/0``. With several aggregations in one state (e.g.
    ``optax.multi_transform``), keys are prefixed by ``aggregate0/``, ``aggregate1/``, ...

    The values are fetched with one ``jax.device_get`` and flattened on the host; inside
    ``jax.jit`` use [`diagnostic_arrays`][camegrad_jax.diagnostic_arrays] (whole arrays).

    Args:
      opt_state: the optimiser state (or an ``nnx.Optimizer``).
      task_names: K names that replace the task indices in the keys (``coefficients/lm``,
        ``cosines/lm/cls``); every axis of length K is taken to be a task axis.

    Returns:
      ``{name: float}``, empty when the state holds no aggregation.

    Examples:
      >>> import jax, jax.numpy as jnp, optax, camegrad_jax as cg
      >>> tx = optax.chain(cg.came_grad(num_tasks=2), optax.adam(1e-3))
      >>> params = {"w": jnp.zeros(2)}
      >>> jac = {"w": jnp.array([[1.0, 0.0], [-1.0, 1.0]])}
      >>> _, state = jax.jit(tx.update)(jac, tx.init(params))
      >>> logs = cg.diagnostics(state)
      >>> round(logs["cosines/0/1"], 4), logs["skipped_steps"], sorted(logs)[-3:]
      (-0.7071, 0.0, ['gain', 'residual', 'skipped_steps'])
      >>> sorted(cg.diagnostics(state, task_names=["lm", "cls"]))[:3]
      ['coefficients/cls', 'coefficients/lm', 'cosines/lm/cls']
    """
    return flatten_diagnostics(jax.device_get(diagnostic_arrays(opt_state)), task_names)


def flatten_diagnostics(
    arrays: Mapping[str, Any], task_names: Sequence[str] | None = None
) -> dict[str, float]:
    """Flattens the whole arrays of [`diagnostic_arrays`][camegrad_jax.diagnostic_arrays] to
    the ``{name: float}`` of [`diagnostics`][camegrad_jax.diagnostics], on the host.

    For a train step that returns ``cg.diagnostic_arrays(opt_state)``: fetch the dict with one
    ``jax.device_get`` and flatten it here (``task_names`` as in ``diagnostics``).

    Examples:
      >>> import jax, camegrad_jax as cg
      >>> arrays = jax.jit(cg.diagnostic_arrays)(cg.came_grad(num_tasks=2).init(None))
      >>> cg.flatten_diagnostics(jax.device_get(arrays))["dual_weights/1"]
      0.5
    """
    out: dict[str, float] = {}
    for key, value in arrays.items():
        _flatten(key, np.asarray(value), task_names, out)
    return out
