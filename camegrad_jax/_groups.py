"""Parameter groups: which leaves of a pytree share one aggregation.

A grouping is ``None`` (one group), ``"top_level"`` (one group per top-level key or index, e.g.
per module of a Flax model) or a function ``(path, leaf) -> label``; leaves with equal labels
form a group. Groups are found from the tree's structure only, so they are static under jit.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any

import jax

Grouping = None | str | Callable[[tuple[Any, ...], Any], Hashable]


def leaf_groups(tree: Any, groups: Grouping) -> tuple[list[int], int]:
    """The group index of every leaf of ``tree`` (in leaf order) and the number of groups.

    Groups are numbered in order of first appearance. A grouping function is called with the
    leaf's key path and its parameter-shaped ``jax.ShapeDtypeStruct`` (see
    `parameter_shapes`), so it sees the same leaf whether given parameters or a Jacobian.

    Examples:
      >>> import jax.numpy as jnp
      >>> tree = {"decoder": {"w": jnp.ones(2)}, "encoder": {"b": jnp.ones(1), "w": jnp.ones(3)}}
      >>> leaf_groups(tree, "top_level")
      ([0, 1, 1], 2)
      >>> leaf_groups(parameter_shapes(tree, stacked=False), lambda path, leaf: leaf.shape[0] > 1)
      ([0, 1, 0], 2)
    """
    leaves = jax.tree_util.tree_leaves_with_path(tree)
    if groups is None:
        return [0] * len(leaves), 1
    if groups == "top_level":
        label_of: Callable[[tuple[Any, ...], Any], Hashable] = lambda path, leaf: path[:1]  # noqa: E731
    elif callable(groups):
        label_of = groups
    else:
        raise ValueError(
            "`groups` must be None, 'top_level' or a function (path, leaf) -> label; "
            f"got {groups!r}."
        )
    index: dict[Hashable, int] = {}
    labels = [index.setdefault(label_of(path, leaf), len(index)) for path, leaf in leaves]
    return labels, len(index)


def parameter_shapes(tree: Any, *, stacked: bool) -> Any:
    """``tree``'s leaves as parameter-shaped ``ShapeDtypeStruct`` (without the task axis)."""
    return jax.tree_util.tree_map(
        lambda leaf: jax.ShapeDtypeStruct(leaf.shape[1:] if stacked else leaf.shape, leaf.dtype),
        tree,
    )
