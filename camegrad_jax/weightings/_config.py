r"""ConFIG: the direction with equal cosine to every task gradient, in Gram space."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from camegrad_jax._numerics import safe_sqrt
from camegrad_jax._weighting import Weighting
from camegrad_jax.weightings._common import (
    in_canonical_order,
    normalised_gram,
    pref_vector_init,
    preferences,
)

Array = jax.Array


def config_coefficients(gram: Array, pref_vector: Array) -> Array:
    r"""ConFIG's coefficients $c$ ($d = J^\top c$) from the Gram matrix alone.

    With $D = \operatorname{diag}(\|g_i\|)$ the unit gradients are $U = D^{+}J$ (a zero
    gradient gives a zero row) and their Gram matrix is the cosine matrix
    $\hat C = D^{+}GD^{+}$. The official direction $b = U^{+}p$ is
    $U^\top\hat C^{+}p$, i.e. $b = J^\top D^{+}y$ with $y = \hat C^{+}p$; then

    $$
    \|b\|^2 = y^\top\hat Cy, \qquad \sum_i\langle g_i, b\rangle = \|g\|^\top\hat Cy,
    \qquad c = \frac{\|g\|^\top\hat Cy}{y^\top\hat Cy}\,D^{+}y ,
    $$

    which is $b/\|b\|$ scaled to the sum of the gradients' projections on it. The
    pseudo-inverse comes from an eigendecomposition of $\hat C$, dropping eigenvalues below
    $2K\epsilon$ times the largest (the cosines are only known to a few $\epsilon$). This is
    the Gram route's resolution limit: two gradients with $1 + \cos < 2K\epsilon$ (~5e-7 for
    $K = 2$ in float32) count as exactly opposed and get no update, where a pseudo-inverse of the
    unit gradients themselves would still resolve their bisector. Likewise $b = 0$ (a zero
    update, as TorchJD's) when the part of $p$ in the range of $\hat C$ is round-off, e.g.
    rank-one gradients whose signs cancel $p$. The coefficients are invariant to the scale of
    $G$.
    """
    k = gram.shape[-1]
    dtype = gram.dtype
    eps = jnp.finfo(dtype).eps
    gram_hat, valid = normalised_gram(gram, per_task=True)
    norms = safe_sqrt(jnp.diagonal(gram_hat))
    nonzero = norms > 0.0
    inv_norms = jnp.where(nonzero, 1.0 / jnp.where(nonzero, norms, 1.0), 0.0)
    cosines = inv_norms[:, None] * gram_hat * inv_norms[None, :]
    eigvals, eigvecs = jnp.linalg.eigh(cosines)
    kept = eigvals > 2.0 * k * eps * jnp.maximum(jnp.max(eigvals), 0.0)
    z = eigvecs.T @ pref_vector
    inv = jnp.where(kept, 1.0 / jnp.where(kept, eigvals, 1.0), 0.0)
    y = eigvecs @ (inv * z)
    projected = eigvecs @ jnp.where(kept, z, 0.0)  # C y, the part of p that U can reach
    length_sq = jnp.sum(inv * z * z)  # y^T C y
    projections = norms @ projected
    # b = 0 when no part of p beyond round-off lies in the range of C (e.g. rank-one gradients
    # whose signs cancel p): its direction would be round-off, so the update is 0.
    reach = jnp.sum(projected * projected)
    ok = valid & (length_sq > 0.0) & (reach > (4.0 * k * eps) ** 2 * jnp.sum(pref_vector**2))
    scale = jnp.where(ok, projections / jnp.where(ok, length_sq, 1.0), 0.0)
    return scale * inv_norms * y


def config(pref_vector: Any = None, use_least_square: bool = True) -> Weighting:
    r"""ConFIG (Liu et al., ICLR 2025): a conflict-free direction of equal cosine to every task.

    The direction $b = U^{+}p$, with $U$ the unit task gradients $g_i/\|g_i\|$ and $p$
    the preference vector (default all ones), satisfies $\langle g_i/\|g_i\|, b\rangle = p_i$
    when the gradients are linearly independent, so with $p = \mathbf 1$ it has the same
    cosine with every task gradient (and a positive one: no conflict). Its length is the sum of
    the gradients' projections on it: $d = (\sum_i\langle g_i, \hat b\rangle)\,\hat b$,
    $\hat b = b/\|b\|$. Everything is computed from the Gram matrix
    (`config_coefficients`): $d = J^\top c$ with $c$ invariant to the gradients' scale
    ($J \to sJ$ gives $d \to sd$).

    The official ``ConFIG_update`` computes $b$ either with ``torch.linalg.lstsq``
    (``use_least_square=True``, its default) or with ``torch.linalg.pinv``; both give the
    minimum-norm least-squares solution of $Ub = p$, and in Gram space there is a single
    computation of it, so ``use_least_square`` is accepted for parity and does not change the
    result. For two tasks the official operator switches to a closed form with the same result.
    With dependent gradients (rank-deficient $G$) $b$ is the least-squares solution and the
    cosines are no longer all equal; a zero Gram matrix gives zero coefficients.

    Args:
      pref_vector: the preference vector $p \ge 0$, shape ``(K,)`` (default all ones, the
        official ``EqualWeight`` and TorchJD's default). May be traced.
      use_least_square: the official switch between ``lstsq`` and ``pinv``; no effect here.

    Returns:
      A stateless [`Weighting`][camegrad_jax.Weighting] (``optax.EmptyState``).

    Examples:
      >>> import jax.numpy as jnp, camegrad_jax as cg
      >>> jac = jnp.array([[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]])
      >>> weighting = cg.weightings.config()
      >>> coeffs, _ = weighting.weigh(jac @ jac.T, weighting.init(2))
      >>> [round(float(x), 4) for x in jac.T @ coeffs]  # TorchJD's ConFIG: same values
      [0.1588, 2.0706, 2.0706]

    References:
      Liu, Chu and Thuerey, *ConFIG: Towards Conflict-free Training of Physics Informed Neural
      Networks*, ICLR 2025 (arXiv:2408.11104); official code https://github.com/tum-pbs/ConFIG.
    """
    if not isinstance(use_least_square, bool):
        raise TypeError(f"`use_least_square` must be a bool; got {use_least_square!r}.")
    init = pref_vector_init(pref_vector)

    def weigh(gram: Array, state: Any, **extra_args: Any) -> tuple[Array, Any]:
        del extra_args
        pref = preferences(pref_vector, gram.shape[-1], gram.dtype, 1.0)
        return in_canonical_order(config_coefficients, gram, pref), state

    return Weighting(init, weigh, scale_invariant=True)
