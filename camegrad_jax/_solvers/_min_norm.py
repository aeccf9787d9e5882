r"""The minimum-norm point of the convex hull of the task gradients (MGDA's problem).

$\min_{w \in \Delta_K} w^\top G w$: closed form for K = 2, support enumeration up to
``MgdaSolver.enumerate_up_to``, Frank–Wolfe then Wolfe's active-set method above.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from camegrad_jax._numerics import psd_sqrt
from camegrad_jax._solvers import _enumeration
from camegrad_jax._solvers._optimality import min_norm_gap
from camegrad_jax._solvers._settings import check_solver

Array = jax.Array


class MgdaSolver(NamedTuple):
    """How MGDA's minimum-norm problem is solved: exactly for small K, by iterations above.

    K ≤ 2 has a closed form and K ≤ ``enumerate_up_to`` is solved exactly and loop-free by
    support enumeration (`camegrad_jax._solvers._enumeration.min_norm`).

    Attributes:
      frank_wolfe_iters: Frank–Wolfe iterations (`frank_wolfe`); 250 is the official code's
        ``MAX_ITER``.
      active_set_rounds: rounds of Wolfe's exact active-set method after them
        (`refine_min_norm`); None means $2K + 2$.
      enumerate_up_to: the largest K solved by support enumeration (static, default 8).
    """

    frank_wolfe_iters: int = 250
    active_set_rounds: int | None = None
    enumerate_up_to: int = 8


def _sq_norm(factor: Array, w: Array) -> Array:
    r"""$\|J^\top w\|^2$ as $\|Lw\|^2$ ($L^\top L = G$), free of cancellation."""
    z = factor @ w
    return jnp.sum(z * z)


def min_norm_pair(gram: Array) -> Array:
    r"""Exact $\arg\min_{w \in \Delta_2} w^\top G w$: $w = (t, 1 - t)$ with
    $t = \operatorname{clip}(\langle g_2 - g_1, g_2\rangle / \|g_1 - g_2\|^2, 0, 1)$
    (Sener and Koltun's Algorithm 1), $t = 1/2$ when $g_1 = g_2$.
    """
    gap = gram[0, 0] - 2.0 * gram[0, 1] + gram[1, 1]
    positive = gap > 0.0
    t = jnp.where(positive, (gram[1, 1] - gram[0, 1]) / jnp.where(positive, gap, 1.0), 0.5)
    t = jnp.clip(t, 0.0, 1.0)
    return jnp.stack([t, 1.0 - t])


def best_pair(gram: Array) -> Array:
    """The best two-task minimum-norm point over all pairs, the official code's starting point."""
    k = gram.shape[0]
    diag = jnp.diagonal(gram)
    gap = diag[:, None] - 2.0 * gram + diag[None, :]
    positive = gap > 0.0
    t = jnp.where(positive, (diag[None, :] - gram) / jnp.where(positive, gap, 1.0), 0.5)
    t = jnp.clip(t, 0.0, 1.0)
    value = t**2 * diag[:, None] + 2.0 * t * (1.0 - t) * gram + (1.0 - t) ** 2 * diag[None, :]
    flat = jnp.argmin(value)
    i, j = flat // k, flat % k
    eye = jnp.eye(k, dtype=gram.dtype)
    return t[i, j] * eye[i] + (1.0 - t[i, j]) * eye[j]


def frank_wolfe(gram: Array, w_init: Array, num_iters: int) -> Array:
    r"""Frank–Wolfe on $\min_{w \in \Delta} w^\top G w$ (Sener and Koltun's Algorithm 2).

    Each step moves towards the vertex $e_t$, $t = \arg\min_i (Gw)_i$, with the exact line
    search $\gamma = \operatorname{clip}((w^\top Gw - (Gw)_t) / \|J^\top w - g_t\|^2, 0, 1)$.
    ``num_iters`` is static.
    """

    def body(_, w):
        grad = gram @ w
        t = jnp.argmin(grad)
        v1v1, v1v2, v2v2 = w @ grad, grad[t], gram[t, t]
        gap = v1v1 - 2.0 * v1v2 + v2v2
        positive = gap > 0.0
        gamma = jnp.clip((v1v1 - v1v2) / jnp.where(positive, gap, 1.0), 0.0, 1.0)
        gamma = jnp.where(positive, gamma, 0.0)
        return (1.0 - gamma) * w + gamma * jax.nn.one_hot(t, w.shape[0], dtype=w.dtype)

    return jax.lax.fori_loop(0, num_iters, body, w_init)


def _affine_min(gram: Array, mask: Array) -> Array:
    r"""A minimiser of $w^\top Gw$ on $\{\sum_{i \in S} w_i = 1, w_i = 0 \ (i \notin S)\}$.

    If $G_{SS}$ has a null vector $n$ with $1^\top n \ne 0$ (the origin lies in the affine
    hull of the support's gradients, e.g. more tasks than the rank plus one), the minimiser is
    $n / 1^\top n$, where the objective is 0; $n$ is the projection of $1$ on the null space.
    Otherwise $1$ lies in the range of $G_{SS}$ and the minimiser is
    $G_{SS}^+1 / 1^\top G_{SS}^+1$ (one of them when the support is affinely dependent, e.g.
    duplicated tasks). Eigenvalues below $K\varepsilon\lambda_{max}$ count as null.
    """
    k = gram.shape[0]
    eps = jnp.finfo(gram.dtype).eps
    outer = mask[:, None] * mask[None, :]
    fill = jnp.max(mask * jnp.diagonal(gram))
    eigvals, eigvecs = jnp.linalg.eigh(outer * gram + jnp.diag((1.0 - mask) * fill))
    null = eigvals <= k * eps * jnp.max(eigvals)
    coords = eigvecs.T @ mask
    kink = mask * (eigvecs @ jnp.where(null, coords, 0.0))
    inverse = jnp.where(null, 0.0, 1.0 / jnp.where(null, 1.0, eigvals))
    smooth = mask * (eigvecs @ (inverse * coords))
    is_kink = jnp.sum(kink) > jnp.sqrt(eps) * jnp.sum(mask)
    y = jnp.where(is_kink, kink, smooth)
    total = jnp.sum(y)
    return y / jnp.where(total > 0.0, total, 1.0)


def refine_min_norm(gram: Array, factor: Array, w: Array, num_rounds: int) -> Array:
    r"""Wolfe's active-set method for the minimum-norm point, started from ``w``.

    Each round takes the minimiser $y$ of $w^\top Gw$ on the affine hull of the support $S$
    (`_affine_min`). If $y > 0$ on $S$ (a major cycle) it becomes the iterate and the vertex
    that most violates optimality, $(Gy)_j < y^\top Gy$, joins $S$. Otherwise (a minor cycle)
    the iterate moves towards $y$ until a weight reaches 0, and that task leaves $S$. At the
    optimum a round changes nothing. Every iterate is scored with $\|Lw\|^2$ and the best is
    returned, so the refinement never makes ``w`` worse. ``num_rounds`` is static.

    References:
      Wolfe, *Finding the nearest point in a polytope*, Mathematical Programming 11, 1976.
    """
    dtype = w.dtype
    tol = gram.shape[0] * jnp.finfo(dtype).eps * jnp.max(jnp.diagonal(gram))

    def body(_, carry):
        x, mask, best_w, best_f = carry
        y = _affine_min(gram, mask)
        y = jnp.where(jnp.all(jnp.isfinite(y)), y, x)
        outside = (mask > 0) & (y <= 0.0)
        inside = ~jnp.any(outside)
        # Major cycle: y is feasible; add the most violating vertex.
        grad = gram @ y
        candidates = jnp.where(mask > 0, jnp.inf, grad)
        j = jnp.argmin(candidates)
        violated = candidates[j] < y @ grad - tol
        major_mask = jnp.where(violated, mask.at[j].set(1.0), mask)
        # Minor cycle: move from x towards y until the first weight hits 0, drop that task.
        ratios = jnp.where(outside, x / jnp.where(outside, x - y, 1.0), jnp.inf)
        drop = jnp.argmin(ratios)
        theta = jnp.clip(ratios[drop], 0.0, 1.0)
        minor_x = jnp.maximum(x + theta * (y - x), 0.0).at[drop].set(0.0) * mask
        minor_mask = mask * (minor_x > 0.0)
        x = jnp.where(inside, y, minor_x)
        mask = jnp.where(inside, major_mask, minor_mask)
        x = x / jnp.sum(x)
        f = _sq_norm(factor, x)
        better = jnp.all(jnp.isfinite(x)) & (f < best_f)
        return x, mask, jnp.where(better, x, best_w), jnp.where(better, f, best_f)

    mask = (w > 0.0).astype(dtype)
    init = (w, mask, w, _sq_norm(factor, w))
    *_, best_w, _ = jax.lax.fori_loop(0, num_rounds, body, init)
    return best_w


def solve_min_norm(
    gram: Array, w_init: Array, solver: MgdaSolver = MgdaSolver()
) -> tuple[Array, Array]:
    r"""$\arg\min_{w \in \Delta_K} w^\top G w$ for a Gram matrix of trace 1.

    K = 1 and K = 2 are exact (`min_norm_pair`), K ≤ ``solver.enumerate_up_to`` exact by
    support enumeration. Above, Frank–Wolfe starts from the better
    of ``w_init`` (the previous step's solution) and the best pair (`best_pair`), and Wolfe's
    active-set method (`refine_min_norm`) finishes. Returns $w^*$ and its Frank–Wolfe gap.
    """
    k = gram.shape[0]
    if k == 1:
        return jnp.ones((1,), gram.dtype), jnp.zeros((), gram.dtype)
    if k == 2:
        w = min_norm_pair(gram)
        return w, min_norm_gap(gram, w)
    factor = psd_sqrt(gram)
    if k <= solver.enumerate_up_to:
        return _enumeration.min_norm(gram, factor)
    warm = jnp.clip(w_init, 0.0, None)
    warm = jnp.where(jnp.sum(warm) > 0.0, warm / jnp.sum(warm), 1.0 / k)
    pair = best_pair(gram)
    start = jnp.where(_sq_norm(factor, warm) <= _sq_norm(factor, pair), warm, pair)
    w = frank_wolfe(gram, start, solver.frank_wolfe_iters)
    rounds = 2 * k + 2 if solver.active_set_rounds is None else solver.active_set_rounds
    w = jnp.maximum(refine_min_norm(gram, factor, w, rounds), 0.0)
    w = w / jnp.sum(w)
    return w, min_norm_gap(gram, w)


def check_mgda_solver(solver: MgdaSolver) -> None:
    """Clear errors for solver settings, which are static."""
    check_solver(solver, MgdaSolver)
