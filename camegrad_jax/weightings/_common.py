r"""Helpers shared by the weightings: Gram normalisation, task order, preference vectors."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from camegrad_jax._checks import weight_vector_size
from camegrad_jax._weighting import WeightingInitFn

Array = jax.Array


def gram_scale(gram: Array, *, per_task: bool = False) -> tuple[Array, Array]:
    r"""$s = \operatorname{tr}G$ (``per_task``: $\operatorname{tr}G / K$, the mean squared
    gradient norm) and whether it is positive and finite; $s = 1$ where it is not.

    The diagonal is summed in ascending order, so $s$ is the same to the last bit whatever the
    order of the tasks (a plain sum rounds differently for each order).
    """
    scale = jnp.sum(jnp.sort(jnp.diagonal(gram)))
    if per_task:
        scale = scale / gram.shape[-1]
    valid = (scale > 0.0) & jnp.isfinite(scale)
    return jnp.where(valid, scale, 1.0), valid


def normalised_gram(gram: Array, *, per_task: bool = False) -> tuple[Array, Array]:
    r"""$G / s$ with $s$ from `gram_scale`, and whether $s$ is positive and finite.

    Where it is not (every gradient is 0, or one is not finite), a stand-in takes the place of
    $G/s$: diagonal with distinct eigenvalues and trace 1, so that ``eigh``, square roots and
    solvers whose results the caller discards there keep finite derivatives.
    """
    k = gram.shape[-1]
    scale, valid = gram_scale(gram, per_task=per_task)
    stand_in = jnp.diag(jnp.arange(1, k + 1, dtype=gram.dtype)) / (k * (k + 1) / 2)
    return jnp.where(valid, gram / scale, stand_in), valid


def canonical_order(gram: Array) -> Array:
    r"""An order of the tasks that does not depend on their positions.

    Tasks are sorted by their squared norm $G_{ii}$, ties broken by the sum of their row's
    sorted entries (both computed identically whatever the order of the rows).
    """
    row_key = jnp.sum(jnp.sort(gram, axis=-1), axis=-1)
    return jnp.lexsort((row_key, jnp.diagonal(gram)))


def in_canonical_order(solve: Callable[..., Any], gram: Array, *per_task: Array) -> Any:
    r"""``solve(gram, *per_task)`` computed with the tasks in `canonical_order`.

    A K×K solve (an eigendecomposition, an active set) rounds differently when the tasks come
    in another order; on an ill-conditioned Gram matrix (rank-deficient, or tasks that are
    nearly Pareto-stationary) float32 round-off then moves the coefficients visibly. Solving in
    an order fixed by the tasks themselves and scattering the result back makes the
    coefficients exactly equivariant to permutations of the tasks (``per_task`` arrays, such
    as preferences or a warm start, are permuted with them). ``solve`` returns the ``(K,)``
    coefficients, or a tuple of them and task-independent values (a residual), passed on.
    """
    order = canonical_order(gram)
    result = solve(gram[order][:, order], *(x[order] for x in per_task))
    coeffs, rest = (result[0], result[1:]) if isinstance(result, tuple) else (result, ())
    restored = jnp.zeros_like(coeffs).at[order].set(coeffs)
    return (restored, *rest) if rest else restored


def preferences(pref_vector: Any, num_tasks: int, dtype: Any, default: float) -> Array:
    """The preferences as a ``(K,)`` array (``default`` in every entry when None), checked
    against K."""
    if pref_vector is None:
        return jnp.full((num_tasks,), default, dtype)
    size = np.shape(pref_vector)[0]
    if size != num_tasks:
        raise ValueError(
            f"`pref_vector` has {size} entries but the Gram matrix is {num_tasks}×{num_tasks}."
        )
    return jnp.asarray(pref_vector, dtype)


def pref_vector_init(pref_vector: Any) -> WeightingInitFn:
    """The ``init`` of a stateless weighting with preferences ``pref_vector`` (None: any K),
    checking now what is known at trace time: a non-empty 1-D, finite, non-negative vector."""
    size = None if pref_vector is None else weight_vector_size("pref_vector", pref_vector)

    def init(num_tasks: int) -> optax.EmptyState:
        if size is not None and size != num_tasks:
            raise ValueError(
                f"`pref_vector` has {size} entries but the weighting was initialised for "
                f"{num_tasks} tasks."
            )
        return optax.EmptyState()

    return init


def key_data(seed: int) -> Array:
    """The raw ``uint32`` data of the PRNG key for ``seed``: how every random weighting keeps its
    key in the state (plain arrays survive checkpoints and ``optax.tree`` utilities)."""
    return jax.random.key_data(jax.random.key(seed))


def split_key_data(data: Array) -> tuple[Array, Array]:
    """``(next, step)``: the raw key data for the next step, and a typed key for this one."""
    key, step = jax.random.split(jax.random.wrap_key_data(data))
    return jax.random.key_data(key), step


def warm_started(state: Any, valid: Array, weights: Array, residual: Array) -> tuple[Array, Any]:
    """``(weights, next state)`` after a warm-started solve whose state has ``weights`` and
    ``residual`` fields: where the Gram matrix was not ``valid`` the previous weights stay and
    the residual is 0. The state keeps its own dtypes."""
    w = jnp.where(valid, weights, state.weights.astype(weights.dtype))
    return w, state._replace(
        weights=w.astype(state.weights.dtype),
        residual=jnp.where(valid, residual, 0.0).astype(state.residual.dtype),
    )
