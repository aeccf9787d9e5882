r"""IMTL-G: the update whose projections on the unit task gradients are all equal."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

from camegrad_jax._numerics import safe_sqrt
from camegrad_jax._weighting import Weighting
from camegrad_jax.weightings._common import in_canonical_order, normalised_gram

Array = jax.Array


def imtl_g_coefficients(gram: Array) -> Array:
    r"""IMTL-G coefficients $\alpha = G^+n / (1^\top G^+n)$ of one Gram matrix.

    $G$ is first divided by its trace (the result is scale-invariant). The pseudo-inverse drops
    eigenvalues below $K\varepsilon\lambda_{max}$ (NumPy's and PyTorch's default ``pinv``
    cut-off). The coefficients are 0 when the trace is 0 or not finite, or when
    $1^\top G^+n$ vanishes to round-off (no combination with $\sum\alpha = 1$ then has
    equal projections).
    """
    k = gram.shape[-1]
    eps = jnp.finfo(gram.dtype).eps
    gram_hat, valid = normalised_gram(gram)
    norms = safe_sqrt(jnp.diagonal(gram_hat))
    eigvals, eigvecs = jnp.linalg.eigh(gram_hat)
    kept = eigvals > k * eps * jnp.max(eigvals)
    inverse = jnp.where(kept, 1.0 / jnp.where(kept, eigvals, 1.0), 0.0)
    v = jnp.where(norms > 0.0, eigvecs @ (inverse * (eigvecs.T @ norms)), 0.0)
    total = jnp.sum(v)
    solvable = valid & (jnp.abs(total) > k * eps * jnp.sum(jnp.abs(v)))
    return jnp.where(solvable, v / jnp.where(solvable, total, 1.0), 0.0)


def imtl_g() -> Weighting:
    r"""IMTL-G (Liu et al., ICLR 2021): equal projections on every unit task gradient.

    IMTL-G looks for $d = J^\top\alpha$ with $\sum_i \alpha_i = 1$ whose projection on
    each unit gradient $u_i = g_i / \|g_i\|$ is the same,
    $\langle d, u_1\rangle = \dots = \langle d, u_K\rangle$. In Gram space this reads
    $G\alpha = \mu\,n$ with $n_i = \|g_i\| = \sqrt{G_{ii}}$, hence

    $$
    \alpha = \frac{G^+ n}{1^\top G^+ n},
    $$

    the closed form of the paper's $\alpha_{2:K} = g_1U^\top(DU^\top)^{-1}$,
    $\alpha_1 = 1 - \sum_{i \ge 2}\alpha_i$ whenever $G$ is invertible. With linearly
    dependent gradients the pseudo-inverse gives the least-squares generalisation of
    TorchJD's ``IMTLG`` (exact equal projections whenever $n$ lies in the range of $G$,
    e.g. duplicated tasks); a zero gradient gets $\alpha_i = 0$ exactly. The coefficients are 0
    (a zero update, as in TorchJD) for a zero Gram matrix and when $1^\top G^+n$ vanishes.

    As in the paper (and LibMTL, TorchJD), $\sum\alpha = 1$ is imposed literally: when
    $1^\top G^+n < 0$, which happens for some gradient configurations with $K \ge 3$, the
    common projection $1 / 1^\top G^+n$ is negative and the update increases every loss to
    first order.

    Returns:
      A stateless [`Weighting`][camegrad_jax.Weighting].

    Examples:
      >>> import jax.numpy as jnp, camegrad_jax as cg
      >>> jac = jnp.array([[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]])
      >>> coeffs, _ = cg.weightings.imtl_g().weigh(jac @ jac.T, None)
      >>> [round(float(c), 4) for c in coeffs]  # TorchJD's IMTLGWeighting: the same
      [0.5923, 0.4077]
      >>> [round(float(x), 4) for x in (jac @ (coeffs @ jac)) / jnp.linalg.norm(jac, axis=1)]
      [0.3991, 0.3991]

    References:
      Liu, Li, Kuang, Xue, Chen, Yang, Liao and Zhang, *Towards Impartial Multi-task Learning*,
      ICLR 2021.
      Quinton and Rey, *Jacobian Descent for Multi-Objective Optimization*, 2024
      (arXiv:2406.16232), for the pseudo-inverse generalisation.
    """

    def init(num_tasks: int) -> optax.EmptyState:
        del num_tasks
        return optax.EmptyState()

    def weigh(gram: Array, state: Any, **extra_args: Any) -> tuple[Array, Any]:
        del extra_args
        return in_canonical_order(imtl_g_coefficients, gram), state

    return Weighting(init, weigh, scale_invariant=True)
