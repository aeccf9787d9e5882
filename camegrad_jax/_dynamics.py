r"""Gradient dynamics: how much the task gradients conflict and cancel, read off the Gram matrix.

The "double dilemma" of multi-task training, in numbers: the *direction* dilemma (task gradients
$g_i$ pointing against each other, so a summed step $g_\lambda = \sum_i \lambda_i g_i$ may go
against one task) and the *magnitude* dilemma (the sum losing length to cancellation, and one
task's weighted gradient dwarfing the others). All of it follows from $G = JJ^\top$.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from camegrad_jax._numerics import cosines
from camegrad_jax._precision import FULL

Array = jax.Array


class GradientDynamics(NamedTuple):
    r"""Statistics of one step's task gradients (fields are arrays; ``vmap`` gives a history).

    Attributes:
      norms: $\|g_i\|$, shape ``(K,)``.
      cosines: $\cos(g_i, g_j)$, ``(K, K)`` (0 where a gradient is zero).
      weighted_norms: $\lambda_i \|g_i\|$, ``(K,)``: ``weighted_norms[0] / weighted_norms[1]``
        is the magnitude ratio of a two-task run.
      conflict: whether some pair of tasks has a negative cosine.
      alignment: $\min_i \cos(g_i, g_\lambda)$; negative when the weighted sum increases some
        task's loss to first order (0 where a gradient or the sum is zero).
      retention: $\|g_\lambda\| / \sum_i \lambda_i \|g_i\|$ in $[0, 1]$: the share of the
        weighted gradients' length the sum keeps (1 when they are parallel, or all zero).
      dominance: $\max_i \lambda_i\|g_i\| / \min_i \lambda_i\|g_i\|$ over tasks with
        $\lambda_i > 0$ (``inf`` when one of them has a zero gradient).
    """

    norms: Array
    cosines: Array
    weighted_norms: Array
    conflict: Array
    alignment: Array
    retention: Array
    dominance: Array


def gradient_dynamics(gram: Array, task_weights: Array | None = None) -> GradientDynamics:
    r"""The [`GradientDynamics`][camegrad_jax.GradientDynamics] of a Gram matrix $G = JJ^\top$.

    Pure ``jnp``: works under ``jit`` and ``vmap``, so a train step can return it every step.
    Pair it with [`gramian`][camegrad_jax.gramian] of the Jacobian the step already computed.

    Args:
      gram: $G$, shape ``(K, K)``, symmetric positive semi-definite.
      task_weights: $\lambda \ge 0$, shape ``(K,)``; default all ones.

    Returns:
      The statistics; with $\langle g_i, g_\lambda\rangle = (G\lambda)_i$ and
      $\|g_\lambda\|^2 = \lambda^\top G \lambda$.

    Examples:
      >>> import jax.numpy as jnp, camegrad_jax as cg
      >>> jac = jnp.array([[1.0, 0.0], [-1.0, 1.0]])  # two tasks, 135° apart
      >>> d = cg.gradient_dynamics(cg.gramian(jac))
      >>> bool(d.conflict), round(float(d.cosines[0, 1]), 4), round(float(d.retention), 4)
      (True, -0.7071, 0.4142)
    """
    gram = jnp.asarray(gram)
    if gram.ndim != 2 or gram.shape[0] != gram.shape[1]:
        raise ValueError(f"gram must be a square (K, K) matrix; got shape {gram.shape}")
    k = gram.shape[0]
    dtype = jnp.result_type(gram.dtype, jnp.float32)
    gram = gram.astype(dtype)
    if task_weights is None:
        weights = jnp.ones((k,), dtype)
    else:
        weights = jnp.asarray(task_weights, dtype)
        if weights.shape != (k,):
            raise ValueError(
                f"task_weights must have shape ({k},) to match gram; got {weights.shape}"
            )
    norms = jnp.sqrt(jnp.maximum(jnp.diagonal(gram), 0.0))
    cos = cosines(gram)
    off_diagonal = ~jnp.eye(k, dtype=bool)
    weighted = weights * norms
    inner = jnp.matmul(gram, weights, precision=FULL)  # <g_i, g_λ>
    sum_norm = jnp.sqrt(jnp.maximum(jnp.matmul(weights, inner, precision=FULL), 0.0))
    denominator = norms * sum_norm
    with_sum = jnp.where(
        denominator > 0.0, inner / jnp.where(denominator > 0.0, denominator, 1.0), 0.0
    )
    total = jnp.sum(weighted)
    retention = jnp.where(total > 0.0, sum_norm / jnp.where(total > 0.0, total, 1.0), 1.0)
    active = weights > 0.0
    largest = jnp.max(jnp.where(active, weighted, 0.0))
    smallest = jnp.min(jnp.where(active, weighted, jnp.inf))
    dominance = jnp.where(
        smallest > 0.0, largest / jnp.where(smallest > 0.0, smallest, 1.0), jnp.inf
    )
    return GradientDynamics(
        norms=norms,
        cosines=cos,
        weighted_norms=weighted,
        conflict=jnp.any((cos < 0.0) & off_diagonal),
        alignment=jnp.min(with_sum),
        retention=jnp.minimum(retention, 1.0),
        dominance=dominance,
    )
