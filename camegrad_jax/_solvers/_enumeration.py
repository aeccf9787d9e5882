r"""Exact, loop-free solvers for small K by enumerating every support at once.

A convex problem over the simplex or the non-negative orthant has a minimiser in the relative
interior of some face, and on that face it satisfies linear (or, for the stage-1 dual, linear
plus one quadratic) equations. Solving those equations on all $2^K - 1$ faces together, by an
unrolled Gauss–Jordan elimination on a batch of masked K×K systems, and keeping the candidate
with the best true objective gives the exact minimiser with no iteration: the jitted solve
has a fixed, small number of fused kernels and no while loop. The cost grows as $2^K K^3$, so
this is for the K of multi-task learning ($K \le 8$ by default, ``enumerate_up_to`` of the
solvers that use it; ``python -m benchmarks.device`` measures the crossover).

Candidates are clipped back to the feasible set and scored with the objective evaluated
through a square root $L^\top L = G$, so a wrong or ill-conditioned face can only lose.
Among the candidates that tie with the best (to round-off) those of the smallest support are
averaged: the average of minimisers is a minimiser, and neither the support sizes nor the
average depend on the order of the tasks, so ties cannot break permutation equivariance.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from camegrad_jax._numerics import safe_norm

Array = jax.Array


@functools.cache
def support_masks(num_tasks: int) -> np.ndarray:
    """The $2^K - 1$ non-empty supports as a static (2^K - 1, K) 0/1 float array."""
    codes = np.arange(1, 2**num_tasks)
    return ((codes[:, None] >> np.arange(num_tasks)) & 1).astype(np.float32)


def solve_masked(matrix: Array, masks: Array, rhs: Array) -> tuple[Array, Array]:
    r"""Solve $A_S x = y_S$ on every support $S$ (rows of ``masks``) at once.

    $A_S$ is $A$ restricted to $S$, with the identity elsewhere (so $x = 0$ off $S$). The
    elimination is Gauss–Jordan without pivoting, unrolled over the K columns; it is stable for
    the symmetric positive definite systems it is used on. Step $j$ is one rank-1 update of $A$
    and of the right-hand sides, $B \leftarrow B - (A_{:j} - e_j)\,B_{j:}/A_{jj}$ (row $j$ is
    divided by its pivot, the others lose their column $j$), which XLA fuses into few kernels.
    Returns the solutions (F, K, R) for ``rhs`` of shape (F, K, R), and whether each system is
    singular (a pivot at most $K\varepsilon\max|A_{ii}|$), whose solution is then meaningless
    but finite.
    """
    k = matrix.shape[-1]
    outer = masks[:, :, None] * masks[:, None, :]
    a = outer * matrix[None] + jax.vmap(jnp.diag)(1.0 - masks)
    x = masks[:, :, None] * rhs
    tol = k * jnp.finfo(matrix.dtype).eps * jnp.max(jnp.abs(jnp.diagonal(matrix)))
    singular = jnp.zeros(masks.shape[0], bool)
    eye = jnp.eye(k, dtype=matrix.dtype)
    for j in range(k):
        pivot = a[:, j, j]
        bad = pivot <= tol
        singular = singular | bad
        col = (a[:, :, j] - eye[j][None]) / jnp.where(bad, 1.0, pivot)[:, None]
        x = x - col[:, :, None] * x[:, j, None, :]
        a = a - col[:, :, None] * a[:, j, None, :]
    return x, singular


def _best(candidates: Array, sizes: Array, scores: Array, tol: Array) -> Array:
    """The mean of the smallest-support candidates whose score is within ``tol`` of the lowest."""
    scores = jnp.where(jnp.isfinite(scores), scores, jnp.inf)
    tied = scores <= jnp.min(scores) + tol
    sparsest = jnp.min(jnp.where(tied, sizes, jnp.inf))
    chosen = tied & (sizes == sparsest)
    # where, not a product with 0/1 weights: a discarded candidate may be inf or NaN.
    picked = jnp.where(chosen[:, None], candidates, 0.0)
    return jnp.sum(picked, axis=0) / jnp.sum(chosen).astype(candidates.dtype)


def _affine_faces(gram: Array, linear: Array) -> tuple[Array, Array, Array, Array]:
    r"""On every face $S$ of the simplex: the point $w_1$ of its affine hull nearest to 0, and
    the tangent direction $u$ of the linear term; also the masks and which faces are singular.

    With $c = \max_i G_{ii}$ and $M = G_{SS} + c\,11^\top$, non-singular exactly when the
    face's gradients are affinely independent, $p = M^{-1}1$, $q = M^{-1}b_S$,
    $\alpha = 1^\top p$, $\beta = 1^\top q$: $w_1 = p/\alpha$ and $u = \beta w_1 - q$
    ($1^\top u = 0$, $g_u \perp g_{w_1}$).
    """
    dtype = gram.dtype
    masks = jnp.asarray(support_masks(gram.shape[-1]), dtype)
    shift = jnp.maximum(jnp.max(jnp.diagonal(gram)), jnp.finfo(dtype).tiny)
    rhs = jnp.stack([masks, masks * linear[None]], axis=-1)
    sol, singular = solve_masked(gram + shift, masks, rhs)
    p, q = sol[..., 0], sol[..., 1]
    w1 = p / jnp.sum(p, axis=-1, keepdims=True)
    u = jnp.sum(q, axis=-1, keepdims=True) * w1 - q
    return masks, w1, u, singular


def _on_simplex(candidates: Array, valid: Array) -> tuple[Array, Array]:
    """Candidates clipped at 0 and renormalised; those with nothing left are invalid."""
    clipped = jnp.maximum(candidates, 0.0)
    total = jnp.sum(clipped, axis=-1, keepdims=True)
    return clipped / jnp.where(total > 0.0, total, 1.0), valid & (total[:, 0] > 0.0)


def conflict_dual(gram: Array, factor: Array, linear: Array, radius: Array) -> tuple[Array, Array]:
    r"""Exact $\arg\min_{w \in \Delta_K} b^\top w + r\|Lw\|$ with $L^\top L = G$, $b = G\lambda$.

    An optimal face with affinely independent gradients always exists (the objective depends on
    $w$ only through $g_w = J^\top w$). Each face (`_affine_faces`) gives two candidates:

    * $w_1$, the kink candidate ($g_w = 0$ if 0 is in the face's affine hull);
    * the smooth stationary point $w = w_1 + u\,\|Lw_1\| / \sqrt{r^2 - \|Lu\|^2}$, which
      solves $b_S + rG_{SS}w_S/\|Lw\| \propto 1$ and exists when $\|Lu\| < r$.

    Vertices ($|S| = 1$) give $w = e_i$, so $r = 0$ is covered. Returns $w^*$ and its
    Frank–Wolfe gap $\nabla f^\top w - \min_i \nabla_i f$, a bound on $f(w) - f^*$ where
    $g_{w^*} \ne 0$ (0 at the kink, where $f$ has no gradient).
    """
    k = gram.shape[-1]
    masks, w1, u, singular = _affine_faces(gram, linear)
    s1 = safe_norm(w1 @ factor.T, axis=-1)[:, None]
    slack = radius**2 - jnp.sum((u @ factor.T) ** 2, axis=-1, keepdims=True)
    smooth_ok = slack > 0.0
    smooth = w1 + u * s1 / jnp.sqrt(jnp.where(smooth_ok, slack, 1.0))
    candidates, valid = _on_simplex(
        jnp.concatenate([w1, smooth]), jnp.concatenate([~singular, ~singular & smooth_ok[:, 0]])
    )
    scores = candidates @ linear + radius * safe_norm(candidates @ factor.T, axis=-1)
    scale = jnp.max(jnp.abs(linear)) + radius * jnp.sqrt(jnp.max(jnp.diagonal(gram)))
    tol = 4.0 * k * jnp.finfo(gram.dtype).eps * scale
    sizes = jnp.sum(masks, axis=-1)
    w = _best(candidates, jnp.concatenate([sizes, sizes]), jnp.where(valid, scores, jnp.inf), tol)

    length = safe_norm(factor @ w)
    grad = linear + radius * (gram @ w) / jnp.where(length > 0.0, length, 1.0)
    gap = jnp.where(length > 0.0, grad @ w - jnp.min(grad), 0.0)
    return w, gap


def min_norm(gram: Array, factor: Array) -> tuple[Array, Array]:
    r"""Exact $\arg\min_{w \in \Delta_K} \|Lw\|$ (MGDA), the faces' nearest points $w_1$
    scored by $\|Lw\|$. Returns $w^*$ and its Frank–Wolfe gap
    $w^\top Gw - \min_i (Gw)_i \ge \|Lw\|^2 - \min_{\Delta}\|Lv\|^2$.
    """
    k = gram.shape[-1]
    masks, w1, _, singular = _affine_faces(gram, jnp.zeros(k, gram.dtype))
    candidates, valid = _on_simplex(w1, ~singular)
    scores = safe_norm(candidates @ factor.T, axis=-1)
    tol = 4.0 * k * jnp.finfo(gram.dtype).eps * jnp.sqrt(jnp.max(jnp.diagonal(gram)))
    w = _best(candidates, jnp.sum(masks, axis=-1), jnp.where(valid, scores, jnp.inf), tol)
    grad = gram @ w
    return w, grad @ w - jnp.min(grad)


def nonneg_qp(gram: Array, factor: Array, anchor: Array) -> tuple[Array, Array]:
    r"""Exact $x^* = \arg\min_{x \ge 0} \|L(u + x)\|^2$, i.e. of $\tfrac12 x^\top Gx + (Gu)^\top x$.

    A minimiser exists whose support $S$ has linearly independent gradients ($G_{SS}$
    non-singular: the objective depends on $x$ only through $J^\top x$); on it
    $G_{SS}x_S = -(Gu)_S$. Every such candidate, and $x = 0$, is clipped to $x \ge 0$ and
    scored by $\|L(u + x)\|$, which (unlike the quadratic form) cannot round below zero.
    Returns $x^*$ and its KKT residual $\max_i|\min(x_i, (G(u + x))_i)|$.
    """
    k = gram.shape[-1]
    dtype = gram.dtype
    masks = jnp.asarray(support_masks(k), dtype)
    linear = gram @ anchor
    sol, singular = solve_masked(gram, masks, -jnp.broadcast_to(linear, masks.shape)[..., None])
    candidates = jnp.concatenate([jnp.maximum(sol[..., 0], 0.0), jnp.zeros((1, k), dtype)])
    valid = jnp.concatenate([~singular, jnp.ones((1,), bool)])
    scores = safe_norm((anchor[None] + candidates) @ factor.T, axis=-1)
    scale = safe_norm(factor @ anchor) + jnp.sqrt(jnp.max(jnp.diagonal(gram)))
    tol = 4.0 * k * jnp.finfo(dtype).eps * scale
    sizes = jnp.concatenate([jnp.sum(masks, axis=-1), jnp.zeros((1,), dtype)])
    x = _best(candidates, sizes, jnp.where(valid, scores, jnp.inf), tol)
    residual = jnp.max(jnp.abs(jnp.minimum(x, gram @ (anchor + x))))
    return x, residual
