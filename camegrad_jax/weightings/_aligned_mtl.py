r"""Aligned-MTL: align the task gradients' principal components, then sum them."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

from camegrad_jax._weighting import Weighting
from camegrad_jax.weightings._common import normalised_gram

Array = jax.Array

SCALE_MODES = ("min", "median", "rmse")


def balance_transformation(gram: Array, scale_mode: str = "min") -> Array:
    r"""The aligning matrix $B = s\,V\Sigma^{-1}V^\top$ of one Gram matrix.

    With $G = V\Sigma^2V^\top$ restricted to the eigenvalues above $K\varepsilon\lambda_{max}$
    (the official code's rank cut-off), $\Sigma$ holds the singular values of $J$ and $s$ is
    their smallest (``"min"``), their median (``"median"``; the lower median for an even rank,
    as ``torch.median``) or their root mean square (``"rmse"``). $B$ is the identity when
    $G$ is 0 or not finite. $G$ is divided by its trace first; $B$ does not depend on the
    scale of $G$.
    """
    if scale_mode not in SCALE_MODES:
        raise ValueError(f"`scale_mode` must be one of {SCALE_MODES}; got {scale_mode!r}.")
    k = gram.shape[-1]
    gram_hat, valid = normalised_gram(gram)
    eigvals, eigvecs = jnp.linalg.eigh(gram_hat)  # ascending
    kept = eigvals > k * jnp.finfo(gram.dtype).eps * jnp.max(eigvals)
    rank = jnp.sum(kept)
    safe = jnp.where(kept, eigvals, 1.0)
    if scale_mode == "min":
        scale_sq = jnp.min(jnp.where(kept, eigvals, jnp.inf))
    elif scale_mode == "median":
        # The kept eigenvalues are the last `rank` ones; the lower median is the
        # ((rank - 1) // 2)-th of them in ascending order.
        scale_sq = eigvals[jnp.clip(k - rank + (rank - 1) // 2, 0, k - 1)]
    else:
        scale_sq = jnp.sum(jnp.where(kept, eigvals, 0.0)) / jnp.maximum(rank, 1).astype(gram.dtype)
    scale = jnp.sqrt(jnp.where(rank > 0, scale_sq, 1.0))
    ratios = jnp.where(kept, scale / jnp.sqrt(safe), 0.0)
    aligning = (eigvecs * ratios[None, :]) @ eigvecs.T
    return jnp.where(valid & (rank > 0), aligning, jnp.eye(k, dtype=gram.dtype))


def aligned_mtl(scale_mode: str = "min") -> Weighting:
    r"""Aligned-MTL (Senushkin et al., CVPR 2023): gradients aligned to an orthogonal frame.

    Aligned-MTL replaces the task gradients $J$ (rows $g_i$) by $\hat J = BJ$ whose Gram
    matrix $\hat G = BGB = s^2 P$ ($P$ the projector on the range of $G$) has condition
    number 1 on its non-null space (for full-rank $J$ the aligned gradients are orthogonal and
    of equal length $s$), the paper's stability criterion. With the eigendecomposition
    $G = V\Sigma^2V^\top$ on the non-null space ($\Sigma$ the singular values of $J$),

    $$
    B = s\,V\Sigma^{-1}V^\top, \qquad c = B\,w, \qquad d = \hat J^\top w = J^\top c,
    $$

    where $s$ is the smallest singular value (``"min"``, the paper's Algorithm 1), their
    median or their root mean square (``"rmse"``, $\sqrt{\operatorname{tr}\Sigma^2/r}$).
    The preference vector is $w = 1$ (the aligned gradients are summed, as in the official
    code and LibMTL); TorchJD's default $w = 1/K$ gives our coefficients divided by K.
    A zero Gram matrix gives $c = w$ (a zero update).

    Args:
      scale_mode: ``"min"`` (the paper's default), ``"median"`` or ``"rmse"``. A static string.

    Returns:
      A stateless [`Weighting`][camegrad_jax.Weighting].

    Examples:
      >>> import jax.numpy as jnp
      >>> jac = jnp.array([[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]])
      >>> coeffs, _ = aligned_mtl().weigh(jac @ jac.T, None)
      >>> [round(float(c), 4) for c in coeffs]
      [1.1181, 0.8165]
      >>> [round(float(c), 4) for c in coeffs / 2]  # TorchJD's default preference 1/K
      [0.5591, 0.4083]

    References:
      Senushkin, Patakin, Kuznetsov and Konushin, *Independent Component Alignment for
      Multi-Task Learning*, CVPR 2023.
    """
    if not isinstance(scale_mode, str) or scale_mode not in SCALE_MODES:
        raise ValueError(f"`scale_mode` must be one of {SCALE_MODES}; got {scale_mode!r}.")

    def init(num_tasks: int) -> optax.EmptyState:
        del num_tasks
        return optax.EmptyState()

    def weigh(gram: Array, state: Any, **extra_args: Any) -> tuple[Array, Any]:
        del extra_args
        aligning = balance_transformation(gram, scale_mode)
        return jnp.sum(aligning, axis=1), state

    return Weighting(init, weigh, scale_invariant=True)
