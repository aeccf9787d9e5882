"""Argument checks that run at trace time on concrete values and stay silent on traced ones.

Hyperparameters may be traced (``optax.inject_hyperparams``, ``jax.vmap`` over them), so a
check can only look at a value that is known when the function is traced.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np


def concrete(value: Any) -> np.ndarray | None:
    """``value`` as a numpy array if it is known at trace time, else ``None``."""
    if value is None:
        return None
    try:
        return np.asarray(value)
    except (jax.errors.ConcretizationTypeError, jax.errors.TracerArrayConversionError):
        return None


def check_in_range(
    name: str, value: Any, low: float, high: float | None = None, expected: str = ""
) -> None:
    """Raises ``ValueError`` naming ``name`` if a concrete ``value`` is outside [low, high].

    A value that is not a number (None, a string, a bool) raises ``TypeError``.
    """
    known = concrete(value)
    if known is None and value is not None:
        return
    if known is None or not np.issubdtype(known.dtype, np.number):
        raise TypeError(
            f"`{name}` must be {expected}; got {value!r} of type {type(value).__name__}."
        )
    too_high = high is not None and bool(np.any(known > high))
    if bool(np.any(~np.isfinite(known))) or bool(np.any(known < low)) or too_high:
        raise ValueError(f"`{name}` must be {expected}; got {known.tolist()}.")


def static_num_tasks(num_tasks: Any) -> int | None:
    """``num_tasks`` as a Python int when it is known at trace time."""
    known = concrete(num_tasks)
    if known is None:
        return None
    if known.shape != () or not np.issubdtype(known.dtype, np.integer) or known < 1:
        raise ValueError(f"`num_tasks` must be a positive integer; got {known.tolist()}.")
    return int(known)


def weight_vector_size(name: str, vector: Any) -> int:
    """K implied by the argument ``name``, a vector of per-task weights (non-empty, 1-D, finite
    and non-negative), checking what can be checked now."""
    shape = np.shape(vector)
    if len(shape) != 1 or shape[0] < 1:
        raise ValueError(
            f"`{name}` must be a non-empty 1-D vector, one weight per task; got shape {shape}."
        )
    check_in_range(name, vector, 0.0, expected="finite and non-negative")
    return int(shape[0])


def resolve_num_tasks(task_weights: Any, num_tasks: Any) -> int | None:
    """K from ``task_weights`` and/or ``num_tasks``; they must agree when both are given."""
    from_weights = (
        None if task_weights is None else weight_vector_size("task_weights", task_weights)
    )
    given = static_num_tasks(num_tasks)
    if from_weights is not None and given is not None and from_weights != given:
        raise ValueError(
            f"`task_weights` has {from_weights} entries but `num_tasks` is {given}; "
            "they must agree."
        )
    return from_weights if from_weights is not None else given
