r"""Gram space: validate a stacked Jacobian, contract it to a Gram matrix, combine it back.

A stacked Jacobian is any pytree whose leaves carry a leading task axis of size K:
leaf ``l`` has shape ``(K, *shape_l)`` and row ``k`` of the Jacobian is the pytree of the
``k``-th slices. With ``J`` the Jacobian flattened to a ``(K, n)`` matrix,

$$
G = J J^\top = \sum_l J_l J_l^\top, \qquad d = J^\top c = \sum_k c_k J_k .
$$

Both are computed leaf by leaf, never by flattening the tree (``ravel_pytree`` copies every leaf
and breaks sharding). A leaf of rank 3 or more is viewed as a ``(K, n_l)`` matrix when that view
is free (a row-major leaf whose trailing axes are not split across devices): the contraction
over several trailing axes makes XLA transpose and copy the leaf first, which on CPU costs more
than the contraction itself (``python -m benchmarks.scaling`` measures it). A leaf sharded on a
minor axis, or whose sharding is decided by the compiler (automatic mesh axes), is contracted
over its trailing axes in place.
Leaves of fewer than ``_SHORT_COLUMNS`` entries per task are contracted together, their rows
side by side, in one product (a launch each would cost far more than their arithmetic).
On CPU, where XLA's one large product of a long ``(K, n)`` view with its transpose runs far
below memory bandwidth, an unsharded view of a few tasks is summed from its elementwise row
products in one fused pass (`fused_rows_gram`), and one of more tasks is contracted in
cache-sized column blocks (`blocked_rows_gram`); other platforms get the one product.
Sharded leaves keep their sharding: under ``jax.jit`` the Gram matrix comes out replicated (the
compiler all-reduces the per-shard partial products), and $J^\top c$ is sharded like one
task's gradient.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax.sharding import AxisType, NamedSharding, PartitionSpec

from camegrad_jax._precision import FULL

Array = jax.Array
PyTree = Any


def _leaf_name(path: tuple[Any, ...]) -> str:
    return jax.tree_util.keystr(path) or "<root>"


def num_tasks_of(jac: PyTree, *, arg_name: str = "jac") -> int:
    """Returns K, the leading axis shared by every leaf of ``jac``, checking that it is shared.

    Raises:
      ValueError: if ``jac`` has no leaves, a leaf is a scalar, or two leaves disagree on K.
      TypeError: if a leaf is not floating point.
    """
    leaves = jax.tree_util.tree_leaves_with_path(jac)
    if not leaves:
        raise ValueError(f"`{arg_name}` has no array leaves; expected a pytree of (K, ...) arrays.")
    first_path: tuple[Any, ...] = ()
    first: int | None = None
    for path, leaf in leaves:
        shape, dtype = jnp.shape(leaf), jnp.result_type(leaf)
        if not jnp.issubdtype(dtype, jnp.floating):
            raise TypeError(
                f"`{arg_name}` leaf {_leaf_name(path)} has dtype {dtype}; "
                "expected floating-point gradients (integer leaves have no gradient)."
            )
        if len(shape) == 0:
            raise ValueError(
                f"`{arg_name}` leaf {_leaf_name(path)} is a scalar; every leaf needs a leading "
                "task axis of size K (stack the per-task gradients along axis 0)."
            )
        if first is None:
            first_path, first = path, shape[0]
        elif shape[0] != first:
            raise ValueError(
                f"`{arg_name}` leaves disagree on the number of tasks: "
                f"{_leaf_name(first_path)} has leading axis {first} but "
                f"{_leaf_name(path)} has {shape[0]} (shape {shape})."
            )
    assert first is not None
    return int(first)


def check_against_params(jac: PyTree, params: PyTree, num_tasks: int) -> None:
    """Checks that every leaf of ``jac`` has shape ``(K, *p.shape)`` for its parameter ``p``.

    A plain gradient whose first axis happens to equal K, or an update already reshaped by an
    optimizer placed before the aggregation, would otherwise be combined as if it were a
    Jacobian and broadcast into the parameters.

    Raises:
      ValueError: naming the first leaf that does not match, or the leaves that only one of
        the two trees has.
    """
    jac_leaves = {_leaf_name(p): x for p, x in jax.tree_util.tree_leaves_with_path(jac)}
    param_leaves = {_leaf_name(p): x for p, x in jax.tree_util.tree_leaves_with_path(params)}
    if jac_leaves.keys() != param_leaves.keys():
        only_params = sorted(param_leaves.keys() - jac_leaves.keys())[:4]
        only_jac = sorted(jac_leaves.keys() - param_leaves.keys())[:4]
        raise ValueError(
            "`updates` (the Jacobian) and `params` hold different leaves: only in `params`: "
            f"{only_params}; only in the Jacobian: {only_jac}. With "
            "camegrad_jax.nnx.value_and_jacobian, pass the same `wrt` filter as the "
            "nnx.Optimizer."
        )
    for name, leaf in jac_leaves.items():
        param_shape = jnp.shape(param_leaves[name])
        expected = (num_tasks, *param_shape)
        if jnp.shape(leaf) == expected:
            continue
        what = (
            "the shape of its parameter: a gradient, not a stacked Jacobian"
            if jnp.shape(leaf) == param_shape
            else f"but its parameter has shape {param_shape}"
        )
        raise ValueError(
            f"`updates` leaf {name} has shape {jnp.shape(leaf)}, {what}; expected (K, "
            f"*param.shape) = {expected}. The aggregation must be the first transformation of "
            "the chain and receive the stacked Jacobian of the K task losses (e.g. from "
            "cg.value_and_jacobian)."
        )


def all_finite(tree: PyTree) -> Array:
    """Whether every element of every leaf of ``tree`` is finite (a scalar bool array)."""
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree_util.tree_leaves(tree)]))


def gram_dtype(jac: PyTree) -> jnp.dtype:
    """The Gram matrix's dtype: the widest leaf dtype, and never narrower than float32."""
    return jnp.result_type(jnp.float32, *jax.tree_util.tree_leaves(jac))


def gramian(jac: PyTree) -> Array:
    r"""The Gram matrix $G = J J^\top$ of a stacked Jacobian.

    Each leaf contributes $J_l J_l^\top$, contracted over its trailing axes with the
    products accumulated in float32 or wider (bf16 and fp16 gradients are fine).

    Args:
      jac: a pytree whose leaves have shape ``(K, ...)``.

    Returns:
      A ``(K, K)`` symmetric positive semi-definite matrix, float32 (float64 if any leaf is).

    Examples:
      >>> import jax.numpy as jnp, camegrad_jax as cg
      >>> jac = {"w": jnp.array([[1.0, 0.0], [1.0, 1.0]]), "b": jnp.array([[2.0], [0.0]])}
      >>> cg.gramian(jac)
      Array([[5., 1.],
             [1., 2.]], dtype=float32)
    """
    num_tasks_of(jac)
    dtype = gram_dtype(jac)

    def leaf_gram(leaf: Array) -> Array:
        if _mesh_of(leaf) is None:
            on_cpu = _cpu_route(leaf, dtype)
            if on_cpu is not None:
                return jax.lax.platform_dependent(
                    leaf, cpu=on_cpu, default=lambda x: _contract(as_rows(x), dtype)
                )
        return _contract(as_rows(leaf), dtype)

    leaves = jax.tree_util.tree_leaves(jac)
    grams = [leaf_gram(leaf) for leaf in leaves if not _is_short(leaf)]
    short = [leaf for leaf in leaves if _is_short(leaf)]
    if short:
        grams.append(_short_leaves_gram(short, dtype))
    return sum(grams[1:], start=grams[0])


# Leaves shorter than this (per task: biases, norms' scales) are contracted together, one
# product for all of them: each product is a kernel launch (on CPU a thunk) whose fixed cost
# is far above its arithmetic. `python -m benchmarks.device` (the RRG step, 44 such leaves of
# 65) measures it.
_SHORT_COLUMNS = 1024


def _is_short(leaf: Array) -> bool:
    """Whether ``leaf`` is unsharded and has fewer than `_SHORT_COLUMNS` entries per task."""
    return _mesh_of(leaf) is None and leaf.size < _SHORT_COLUMNS * max(leaf.shape[0], 1)


def _short_leaves_gram(leaves: list[Array], dtype: Any) -> Array:
    r"""$\sum_l J_l J_l^\top$ of short unsharded leaves: one product of their rows side by side."""
    if len(leaves) == 1:
        return _contract(leaves[0], dtype)
    rows = [leaf.reshape(leaf.shape[0], -1).astype(dtype) for leaf in leaves]
    return _contract(jnp.concatenate(rows, axis=1), dtype)


def _contract(leaf: Array, dtype: Any) -> Array:
    """$J_l J_l^\top$ in one contraction over the trailing axes."""
    trailing = tuple(range(1, jnp.ndim(leaf)))
    return jax.lax.dot_general(
        leaf,
        leaf,
        ((trailing, trailing), ((), ())),
        precision=FULL,
        preferred_element_type=dtype,
        out_sharding=replicated_sharding(leaf),
    ).astype(dtype)


# XLA:CPU's dot of a (K, n) matrix with its transpose runs far below memory bandwidth, the
# more so the longer the rows. For K <= _FUSED_MAX_TASKS one fused reduction of the K² row
# products is several times faster on JAX 0.10 and 0.12 alike (at K = 4 and up it is not, and
# not on both); for more tasks long rows are contracted in blocks of about _BLOCK_BYTES.
# The `gram` column of `python -m benchmarks.scaling` measures both.
_LANES = 256
_MIN_LANES = 64
_MIN_FUSED_COLUMNS = 1 << 15
_FUSED_MAX_TASKS = 3
_BLOCK_BYTES = 1 << 19
_MIN_BLOCKS = 16


def _cpu_route(leaf: Array, dtype: Any) -> Callable[[Array], Array] | None:
    r"""The XLA:CPU kernel for $J_l J_l^\top$ of an unsharded leaf, or None for the one product."""
    num_tasks = leaf.shape[0]
    n = leaf.size // max(num_tasks, 1)
    if num_tasks <= _FUSED_MAX_TASKS and n >= _MIN_FUSED_COLUMNS:
        return lambda x: fused_rows_gram(as_rows(x), dtype)
    block = _block_size(num_tasks, leaf.dtype)
    if n >= _MIN_BLOCKS * block:
        return lambda x: blocked_rows_gram(as_rows(x), block, dtype)
    return None


def fused_rows_gram(rows: Array, dtype: Any) -> Array:
    r"""$R R^\top$ of a ``(K, n)`` matrix as $\sum_t R_{it} R_{jt}$, all $K^2$ sums in one pass.

    XLA:CPU runs one long reduction slowly, so the columns are folded into $L$ lanes,
    $R \to (K, n/L, L)$, and the products $R_{i,f,l} R_{j,f,l}$ are summed over the folds $f$
    and lanes $l$ in one fused reduction (they are never stored). $L$ is the largest power of
    two up to ``_LANES`` dividing $n$; when that is under ``_MIN_LANES``, $L$ = ``_LANES`` and
    the ``n mod L`` columns left over are contracted apart. The fold reads ``rows`` itself,
    behind an optimisation barrier: folded straight from the leaf, XLA would make a copy of
    its own for it besides the ``(K, n)`` one that $J^\top c$ reads. Entries $(i, j)$ and
    $(j, i)$ are the same sums in the same order, so the result is exactly symmetric.
    """
    num_tasks, n = rows.shape
    lanes = min(_LANES, n & -n)
    if lanes < _MIN_LANES:
        lanes = _LANES
    folds = n // lanes
    rows = jax.lax.optimization_barrier(rows)
    head = rows[:, : folds * lanes].astype(dtype).reshape(num_tasks, folds, lanes)
    gram = jnp.sum(head[:, None] * head[None, :], axis=(2, 3))
    if n % lanes:
        gram = gram + _contract(rows[:, folds * lanes :], dtype)
    return gram


def _block_size(num_tasks: int, dtype: Any) -> int:
    """Columns per block: a power of two with K·b·itemsize ≈ `_BLOCK_BYTES`, at least 1024."""
    per_column = num_tasks * jnp.dtype(dtype).itemsize
    return max(1024, 1 << max(0, (_BLOCK_BYTES // per_column).bit_length() - 1))


def blocked_rows_gram(rows: Array, block: int, dtype: Any) -> Array:
    r"""$R R^\top$ of a ``(K, n)`` matrix as $\sum_b R_b R_b^\top$ over column blocks.

    One pass over $R$, ``block`` columns at a time (a ``fori_loop`` of dynamic slices, so
    nothing is copied but the block), then the ``n mod block`` columns left over.
    """
    num_tasks, n = rows.shape
    num_blocks = n // block

    def add_block(i: Array, gram: Array) -> Array:
        part = jax.lax.dynamic_slice_in_dim(rows, i * block, block, axis=1)
        return gram + _contract(part, dtype)

    gram = jax.lax.fori_loop(0, num_blocks, add_block, jnp.zeros((num_tasks, num_tasks), dtype))
    if n % block:
        gram = gram + _contract(rows[:, num_blocks * block :], dtype)
    return gram


def as_rows(leaf: Array) -> Array:
    """``leaf`` viewed as a ``(K, n)`` matrix when that is free, else ``leaf`` itself.

    Merging the trailing axes of a row-major array moves no data, unless one of the merged
    axes other than the first is sharded: then the compiler would gather the leaf. Under
    explicit or manual (``shard_map``) mesh axes the leaf's type names its sharding; under
    automatic axes it is unknown at trace time and the leaf is left as it is.
    """
    if jnp.ndim(leaf) <= 2:
        return leaf
    mesh = _mesh_of(leaf)
    if mesh is not None:
        if AxisType.Auto in mesh.axis_types:
            return leaf
        if any(axis is not None for axis in tuple(jax.typeof(leaf).sharding.spec)[2:]):
            return leaf
    return leaf.reshape(leaf.shape[0], -1)


def _mesh_of(leaf: Array) -> Any:
    """The mesh that ``leaf``'s type is sharded over, or None on one device (no or empty mesh)."""
    mesh = getattr(jax.typeof(leaf).sharding, "mesh", None)
    return None if mesh is None or mesh.empty else mesh


def replicated_sharding(leaf: Array) -> NamedSharding | None:
    """A replicated ``out_sharding`` for a contraction of ``leaf``, or None when none is needed.

    Under explicit sharding (a mesh with ``AxisType.Explicit`` axes, the default of
    ``jax.make_mesh``) a contraction over a sharded axis must name its output sharding; the
    Gram matrix and other K×K quantities are small, so they are replicated (the compiler
    inserts the all-reduce). Under automatic sharding, inside ``shard_map`` and on one device
    the compiler decides and None is returned.
    """
    mesh = _mesh_of(leaf)
    if mesh is None or AxisType.Explicit not in mesh.axis_types:
        return None
    return NamedSharding(mesh, PartitionSpec())


def combine(jac: PyTree, coeffs: Array) -> PyTree:
    r"""The combination $d = J^\top c = \sum_k c_k J_k$, leaf by leaf.

    Args:
      jac: a pytree whose leaves have shape ``(K, ...)``.
      coeffs: a ``(K,)`` vector of coefficients.

    Returns:
      A pytree shaped like one task's gradient; each leaf keeps its dtype.

    Examples:
      >>> import jax.numpy as jnp, camegrad_jax as cg
      >>> cg.combine({"w": jnp.array([[1.0, 0.0], [1.0, 1.0]])}, jnp.array([2.0, -1.0]))
      {'w': Array([ 1., -1.], dtype=float32)}
    """
    num_tasks = num_tasks_of(jac)
    coeffs = jnp.asarray(coeffs)
    if coeffs.shape != (num_tasks,):
        raise ValueError(
            f"`coeffs` has shape {jnp.shape(coeffs)}; expected ({num_tasks},), one per task."
        )

    return jax.tree_util.tree_map(lambda leaf: combine_leaf(leaf, coeffs), jac)


def combine_leaf(leaf: Array, coeffs: Array) -> Array:
    """One leaf of $J^\top c$, accumulated in float32 or wider and cast to the leaf's dtype."""
    acc = jnp.result_type(leaf.dtype, jnp.float32)
    rows = as_rows(leaf)
    combined = jnp.tensordot(coeffs.astype(acc), rows.astype(acc), axes=1, precision=FULL)
    combined = combined.astype(leaf.dtype)
    return combined.reshape(leaf.shape[1:])
