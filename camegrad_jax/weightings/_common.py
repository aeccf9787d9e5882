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
    scale = jnp.sum(sort_small(jnp.diagonal(gram)))
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


def ranks(*keys: Array) -> Array:
    r"""Each entry's position in the ascending lexicographic order of ``keys`` (the first key
    first, then the position) along the last axis: $r_i = \#\{j : (k_j, j) < (k_i, i)\}$.

    One comparison per pair, which XLA fuses with what surrounds it, where a sort is a kernel
    of its own: for the K of a Gram matrix this is cheaper. NaN counts as $+\infty$, so the
    ranks are always a permutation.
    """
    shape = keys[0].shape
    position = jnp.arange(shape[-1])
    before = position[None, :] < position[:, None]  # [..., i, j]: j comes before i
    before = jnp.broadcast_to(before, (*shape, shape[-1]))
    for key in reversed(keys):
        key = jnp.where(jnp.isnan(key), jnp.inf, key)
        mine, other = key[..., :, None], key[..., None, :]
        before = (other < mine) | ((other == mine) & before)
    return jnp.sum(before, axis=-1)


def sort_small(x: Array) -> Array:
    """``x`` sorted along its last axis by `ranks` (each entry moved exactly, no sort kernel)."""
    slot = jnp.arange(x.shape[-1]).reshape((1,) * (x.ndim - 1) + (-1, 1))
    chosen = ranks(x)[..., None, :] == slot  # [..., slot, entry]
    return jnp.sum(jnp.where(chosen, x[..., None, :], jnp.zeros((), x.dtype)), axis=-1)


def canonical_order(gram: Array) -> tuple[Array, Array]:
    r"""An order of the tasks that does not depend on their positions: ``(order, rank)``, where
    ``order[p]`` is the task put at position ``p`` and ``rank`` the inverse permutation.

    Tasks are sorted by their squared norm $G_{ii}$, ties broken by the sum of their row's
    sorted entries (both computed identically whatever the order of the rows).
    """
    row_key = jnp.sum(sort_small(gram), axis=-1)
    rank = ranks(jnp.diagonal(gram), row_key)
    positions = jnp.arange(gram.shape[-1])
    order = jnp.sum(jnp.where(rank[None, :] == positions[:, None], positions[None, :], 0), -1)
    return order, rank


def in_canonical_order(solve: Callable[..., Any], gram: Array, *per_task: Array) -> Any:
    r"""``solve(gram, *per_task)`` computed with the tasks in `canonical_order`.

    A K×K solve (an eigendecomposition, an active set) rounds differently when the tasks come
    in another order; on an ill-conditioned Gram matrix (rank-deficient, or tasks that are
    nearly Pareto-stationary) float32 round-off then moves the coefficients visibly. Solving in
    an order fixed by the tasks themselves and permuting the result back makes the
    coefficients exactly equivariant to permutations of the tasks (``per_task`` arrays, such
    as preferences or a warm start, are permuted with them). ``solve`` returns the ``(K,)``
    coefficients, or a tuple of them and task-independent values (a residual), passed on.
    """
    order, rank = canonical_order(gram)
    result = solve(gram[order][:, order], *(x[order] for x in per_task))
    coeffs, rest = (result[0], result[1:]) if isinstance(result, tuple) else (result, ())
    restored = coeffs[rank]
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
