r"""One interface over the two Jacobian forms an aggregation takes: ``gram``, then ``combine``.

- [`StackedJacobian`][camegrad_jax._inputs.StackedJacobian]: the full Jacobian, a pytree of
  ``(K, ...)`` leaves (from [`value_and_jacobian`][camegrad_jax.value_and_jacobian]).
  $G = JJ^\top$ leaf by leaf (per parameter group), and $d = J^\top c$.
- [`RepresentationInput`][camegrad_jax._inputs.RepresentationInput]: a
  [`RepresentationJacobian`][camegrad_jax.RepresentationJacobian]. $G_z = ZZ^\top$ from the
  features' Jacobian, and $d$ from one backward pass of $\sum_k c_k L_k$.

``jacobian_input(updates)`` picks the form; [`aggregate`][camegrad_jax.aggregate],
[`accumulate`][camegrad_jax.accumulate], [`apply_if_finite`][camegrad_jax.apply_if_finite]
and `camegrad_jax.nnx.update` see nothing else.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Protocol

import jax
import jax.numpy as jnp

from camegrad_jax._gram import (
    all_finite,
    as_rows,
    combine_leaf,
    gramian,
    num_tasks_of,
)
from camegrad_jax._groups import Grouping, leaf_groups, parameter_shapes
from camegrad_jax._representation import RepresentationJacobian

Array = jax.Array


class Grams(NamedTuple):
    r"""Gram matrices of one step, one per parameter group.

    Attributes:
      matrices: ``(groups, K, K)``, the Gram matrix of $J/s$ of each group.
      scales: ``(groups,)``, the power of two $s$ (1 unless rescaling was asked for and needed).
      finite: whether the Jacobian (every group) holds no NaN or Inf.
    """

    matrices: Array
    scales: Array
    finite: Array


class JacobianInput(Protocol):
    """What an aggregation needs from a Jacobian, whatever its form."""

    @property
    def rows(self) -> Any:
        """The pytree of ``(K, ...)`` leaves whose Gram matrix is taken."""

    @property
    def is_parameter_tree(self) -> bool:
        """Whether ``rows`` is the parameters' Jacobian (it can be averaged and combined)."""

    def gram(self, groups: Grouping, *, rescale: bool) -> Grams:
        """The Gram matrix of each parameter group (rescaled only if ``rescale``)."""

    def combine(self, coeffs: Array, groups: Grouping) -> Any:
        """The update from ``(groups, K)`` coefficients, shaped like the parameters."""


def _scale_exponent(largest: Array) -> Array:
    r"""$e$ with ``largest`` $/2^e \in [2, 4)$, clipped so that $2^e$ and $2^{-e}$ are normal."""
    info = jnp.finfo(largest.dtype)
    _, exponent = jnp.frexp(largest)  # largest = m 2^exponent, m in [0.5, 1)
    exponent = jnp.where(largest > 0.0, exponent - 2, 0)
    return jnp.clip(exponent, info.minexp, -info.minexp)


@jax.custom_batching.custom_vmap
def _any_lane(flag: Array) -> Array:
    """``flag`` itself; under ``jax.vmap``, one unbatched flag: whether any lane's is set.

    A ``lax.cond`` on a batched predicate becomes a select that runs both branches; on this
    flag it stays a branch, so a vmapped update contracts the Gram matrix once unless some
    lane needs the rescaled one.
    """
    return flag


@_any_lane.def_vmap
def _any_lane_vmap(axis_size: int, in_batched: list[bool], flag: Array) -> tuple[Array, bool]:
    del axis_size
    return (jnp.any(flag) if in_batched[0] else flag), False


def rescaled_gramian(rows: list[Array]) -> tuple[Array, Array, Array]:
    r"""The Gram matrix of $J/s$, the scale $s$ and whether $J$ is finite.

    The plain Gram matrix ($s = 1$) is computed first; only when it is non-finite or its trace
    is too small to be accurate (gradients around 1e-20 or 1e20 in float32) is it recomputed
    from $J / s$ with $s = 2^e$ the power of two that puts $\max|J|/s$ in $[2, 4)$:
    $J/s$ is then exact, and so is $1/s$, which stays a normal number (a reciprocal of
    $\max|J|$ itself is subnormal above ~8.5e37 in float32 and flushed to zero under jit).
    Under ``jax.vmap`` the recomputation runs for every lane when any lane needs it (a lane
    that did not gets the Gram matrix of $J/s$ and its own $s$, equally exact).
    """
    # The (K, n) views, also in the rescaled branch: handing the leaves themselves to the cond
    # made XLA:CPU materialise a second, transposed copy of the Jacobian for it.
    rows = [as_rows(leaf) for leaf in rows]
    gram = gramian(rows)
    dtype = gram.dtype
    tiny = jnp.finfo(dtype).tiny / jnp.finfo(dtype).eps
    suspicious = ~jnp.all(jnp.isfinite(gram)) | (jnp.trace(gram) < tiny)

    def rescaled() -> tuple[Array, Array, Array]:
        leaves = [leaf.astype(dtype) for leaf in rows]
        finite = all_finite(leaves)
        largest = jnp.max(jnp.stack([jnp.max(jnp.abs(leaf)) for leaf in leaves]))
        exponent = _scale_exponent(jnp.where(finite, largest, 0.0))
        one = jnp.ones((), dtype)
        inverse = jnp.ldexp(one, -exponent)
        return gramian([leaf * inverse for leaf in leaves]), jnp.ldexp(one, exponent), finite

    plain = (gram, jnp.ones((), dtype), jnp.array(True))
    return jax.lax.cond(_any_lane(suspicious), rescaled, lambda: plain)


def _grams_of(tree: Any, groups: Grouping, rescale: bool) -> Grams:
    """The Gram matrices of ``tree``'s parameter groups (see `rescaled_gramian`)."""
    leaves = jax.tree_util.tree_leaves(tree)
    labels, count = leaf_groups(parameter_shapes(tree, stacked=True), groups)
    members = [[x for x, g in zip(leaves, labels, strict=True) if g == i] for i in range(count)]
    if rescale:
        parts = [rescaled_gramian(m) for m in members]
        return Grams(
            jnp.stack([p[0] for p in parts]),
            jnp.stack([p[1] for p in parts]),
            jnp.all(jnp.stack([p[2] for p in parts])),
        )
    matrices = jnp.stack([gramian(m) for m in members])
    ones = jnp.ones((count,), matrices.dtype)
    return Grams(matrices, ones, jnp.all(jnp.isfinite(matrices)))


class StackedJacobian(NamedTuple):
    """The full Jacobian: a pytree whose leaves are ``(K, *param.shape)``."""

    rows: Any
    num_tasks: int

    @property
    def is_parameter_tree(self) -> bool:
        return True

    def gram(self, groups: Grouping, *, rescale: bool) -> Grams:
        return _grams_of(self.rows, groups, rescale)

    def combine(self, coeffs: Array, groups: Grouping) -> Any:
        r"""$J^\top c$, leaf by leaf, each leaf with its group's row of ``coeffs``."""
        leaves, treedef = jax.tree_util.tree_flatten(self.rows)
        labels, _ = leaf_groups(parameter_shapes(self.rows, stacked=True), groups)
        return jax.tree_util.tree_unflatten(
            treedef,
            [combine_leaf(leaf, coeffs[g]) for leaf, g in zip(leaves, labels, strict=True)],
        )


def _check_one_group(groups: Grouping) -> None:
    if groups is not None:
        raise ValueError(
            "`groups` needs the parameters' Jacobian; a RepresentationJacobian has one Gram "
            "matrix (of the shared features) only. Drop `groups` or use value_and_jacobian."
        )


class RepresentationInput(NamedTuple):
    """A [`RepresentationJacobian`][camegrad_jax.RepresentationJacobian] behind the interface."""

    jacobian: RepresentationJacobian
    num_tasks: int

    @property
    def rows(self) -> Any:
        return self.jacobian.features

    @property
    def is_parameter_tree(self) -> bool:
        return False

    def gram(self, groups: Grouping, *, rescale: bool) -> Grams:
        _check_one_group(groups)
        return _grams_of(self.rows, None, rescale)

    def combine(self, coeffs: Array, groups: Grouping) -> Any:
        r"""$\nabla_\theta \sum_k c_k L_k$ from one backward pass (one group only)."""
        _check_one_group(groups)
        return self.jacobian.backward(coeffs[0])


def jacobian_input(
    updates: Any, *, arg_name: str = "updates"
) -> StackedJacobian | RepresentationInput:
    """``updates`` behind the interface, its number of tasks checked (K, the leading axis)."""
    if is_representation(updates):
        k = num_tasks_of(updates.features, arg_name=f"{arg_name}.features")
        return RepresentationInput(updates, k)
    return StackedJacobian(updates, num_tasks_of(updates, arg_name=arg_name))


def is_representation(updates: Any) -> bool:
    """Whether ``updates`` is a shared-representation Jacobian (unchecked otherwise: a plain
    gradient passes as a parameter tree)."""
    return isinstance(updates, RepresentationJacobian)


def jacobian_rows(updates: Any) -> Any:
    """The pytree whose Gram matrix an aggregation takes, unchecked (for finiteness tests)."""
    return updates.features if is_representation(updates) else updates
