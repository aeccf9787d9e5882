r"""Fixed-iteration solvers on the probability simplex $\Delta_K$.

Everything here works on K×K matrices, is jit-compiled and vmap-able, and runs a static number
of iterations, so a step costs the same every time and never synchronises with the host.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from camegrad_jax._numerics import safe_sqrt
from camegrad_jax._solvers import _enumeration
from camegrad_jax._solvers._optimality import conflict_dual_gap
from camegrad_jax._solvers._settings import check_solver

Array = jax.Array


def project_simplex(v: Array) -> Array:
    r"""Euclidean projection of ``v`` onto $\{w \ge 0, \sum_i w_i = 1\}$.

    The projection is $\max(v - \theta, 0)$ with $\theta = \max_j t_j$, where
    $t_j = (\sum_{i:\, v_i \ge v_j} v_i - 1) / |\{i : v_i \ge v_j\}|$ is the threshold
    that keeps the entries no smaller than $v_j$. (Held et al. 1974 state it on the sorted
    entries, $t_j = (\sum_{i \le j} u_i - 1)/j$; these rise while the next entry stays above
    them and fall after, so their maximum is the right one, Condat 2016.) A K×K comparison
    replaces the sort, which on CPU dominated a solver iteration at the small K of multi-task
    learning (the `weigh` column of ``python -m benchmarks.aggregators`` measures it).

    Examples:
      >>> import jax.numpy as jnp
      >>> project_simplex(jnp.array([0.5, 2.0, -1.0]))
      Array([0., 1., 0.], dtype=float32)
    """
    at_least = (v[None, :] >= v[:, None]).astype(v.dtype)  # [j, i] = [v_i >= v_j]
    thresholds = (at_least @ v - 1.0) / jnp.sum(at_least, axis=-1)
    return jnp.maximum(v - jnp.max(thresholds), 0.0)


def _norm(x: Array) -> Array:
    return jnp.sqrt(jnp.sum(x * x))


def conflict_dual_pair(gram: Array, linear: Array, radius: Array) -> Array:
    r"""Exact minimiser of $b^\top w + r\sqrt{w^\top G w}$ on $\Delta_2$.

    With $w = (t, 1-t)$ the objective is convex in $t$. Writing
    $A = \|g_1 - g_2\|^2$, $B = \langle g_1 - g_2, g_2\rangle$,
    $D = G_{11}G_{22} - G_{12}^2$ and $\delta = b_1 - b_2$, the stationarity
    condition $\delta + r(At + B)/\sqrt{q(t)} = 0$ has, when $\delta^2 < r^2 A$,
    the root $t = (u - B)/A$ with $u = -\delta\sqrt{D / (r^2A - \delta^2)}$;
    otherwise the objective is monotone and the minimiser is the vertex that $\delta$
    points away from. Clipping the root to [0, 1] gives the constrained minimiser.
    """
    a = gram[0, 0] - 2.0 * gram[0, 1] + gram[1, 1]
    b = gram[0, 1] - gram[1, 1]
    det = jnp.maximum(gram[0, 0] * gram[1, 1] - gram[0, 1] ** 2, 0.0)
    delta = linear[0] - linear[1]
    slack = radius**2 * a - delta**2
    interior = slack > 0.0
    u = -delta * safe_sqrt(jnp.where(interior, det, 0.0) / jnp.where(interior, slack, 1.0))
    t_root = (u - b) / jnp.where(interior, a, 1.0)
    t_vertex = jnp.where(delta > 0.0, 0.0, jnp.where(delta < 0.0, 1.0, 0.5))
    t = jnp.clip(jnp.where(interior, t_root, t_vertex), 0.0, 1.0)
    return jnp.stack([t, 1.0 - t])


def conflict_dual_pdhg(
    gram: Array, factor: Array, linear: Array, radius: Array, w_init: Array, num_iters: int
) -> Array:
    r"""Minimiser of $b^\top w + r\|L w\|$ on $\Delta_K$ by primal–dual splitting.

    Chambolle–Pock on $\min_w f(w) + h(Lw)$ with $f = b^\top w + \iota_\Delta$,
    $h = r\|\cdot\|$ and $L^\top L = G$ a K×K square root:

    $$
    \begin{aligned}
    y &\leftarrow \Pi_{\|y\| \le r}(y + \sigma L \bar w), \\
    w^+ &\leftarrow \Pi_\Delta(w - \tau(L^\top y + b)), \qquad \bar w = 2w^+ - w .
    \end{aligned}
    $$

    The splitting never differentiates the norm, so it does not stall where $Lw = 0$
    (rank-deficient Gram, Pareto-stationary points), unlike projected (sub)gradient descent.
    The dual starts at $r\,Lw_0/\|Lw_0\|$, its optimal value for a warm start $w_0$.
    The best iterate (lowest objective) is returned.
    """
    op_norm = jnp.sqrt(jnp.maximum(jnp.max(jnp.sum(factor * factor, axis=1)), 1e-30))
    # Step sizes balance the primal scale (the simplex, diameter ~1) and the dual one (radius r).
    weight = jnp.maximum(radius, 1e-3 * op_norm)
    tau = 0.95 / (op_norm * weight)
    sigma = 0.95 * weight / op_norm

    def objective(w: Array) -> Array:
        return linear @ w + radius * _norm(factor @ w)

    def project_ball(y: Array) -> Array:
        return y * jnp.minimum(1.0, radius / jnp.maximum(_norm(y), 1e-30))

    z0 = factor @ w_init
    y0 = project_ball(radius * z0 / jnp.maximum(_norm(z0), 1e-30))

    def body(_, carry):
        w, w_bar, y, best_w, best_f = carry
        y = project_ball(y + sigma * (factor @ w_bar))
        w_new = project_simplex(w - tau * (factor.T @ y + linear))
        f_new = objective(w_new)
        better = f_new < best_f
        best_w = jnp.where(better, w_new, best_w)
        best_f = jnp.where(better, f_new, best_f)
        return w_new, 2.0 * w_new - w, y, best_w, best_f

    init = (w_init, w_init, y0, w_init, objective(w_init))
    *_, best_w, _ = jax.lax.fori_loop(0, num_iters, body, init)
    return best_w


def _solve_on_support(
    gram: Array, linear: Array, radius: Array, mask: Array
) -> tuple[Array, Array, Array]:
    r"""The stationary points of the dual on the face whose support is ``mask``.

    Smooth case: with $v = (r/s) w$ (so that $a = \lambda + v$), optimality on the face
    reads $G_{SS} v_S - F 1 = -b_S$ and $v_S^\top G_{SS} v_S = r^2$, where $F$ is the
    optimal value. Hence $v_S = P(F1 - b_S)$ with $P = G_{SS}^+$, and $F$ is the larger
    root of $\alpha_2F^2 - 2\alpha_1F + \alpha_0 - r^2 = 0$ ($\alpha_2 = 1^\top P1$,
    $\alpha_1 = 1^\top Pb_S$, $\alpha_0 = b_S^\top Pb_S$), the one with $1^\top v > 0$.

    Kink case: when $G_{SS}$ is singular, its null vector $n$ gives $g_w = 0$ for
    $w = n / 1^\top n$, where the objective is $b^\top w = \lambda^\top G w = 0$; this is the
    optimum whenever 0 in the tasks' convex hull beats every smooth point.

    Returns the smooth candidate, the kink candidate (both may leave the simplex; the caller
    checks) and whether $G_{SS}$ is singular (the face is degenerate).
    """
    outer = mask[:, None] * mask[None, :]
    eigvals, eigvecs = jnp.linalg.eigh(outer * gram + jnp.diag(1.0 - mask))
    cutoff = jnp.finfo(gram.dtype).eps * gram.shape[0] * jnp.max(eigvals)
    inv = jnp.where(eigvals > cutoff, 1.0 / jnp.where(eigvals > cutoff, eigvals, 1.0), 0.0)
    pinv = outer * ((eigvecs * inv[None, :]) @ eigvecs.T)
    b = mask * linear
    a2, a1, a0 = mask @ pinv @ mask, mask @ pinv @ b, b @ pinv @ b
    disc = jnp.maximum(a1**2 - a2 * (a0 - radius**2), 0.0)
    value = (a1 + jnp.sqrt(disc)) / jnp.maximum(a2, jnp.finfo(gram.dtype).tiny)
    v = pinv @ (value * mask - b)
    null = mask * eigvecs[:, 0]
    singular = jnp.sum(eigvals > cutoff) < gram.shape[0]
    return v / jnp.sum(v), null / jnp.sum(null), singular


def refine_active_set(
    gram: Array, factor: Array, linear: Array, radius: Array, w: Array, num_rounds: int
) -> Array:
    """Primal active-set refinement of an approximate minimiser ``w`` of the stage-1 dual.

    First-order splitting finds the support of the optimum quickly but then converges slowly.
    Starting from ``w``'s support, each round solves the face problem exactly
    (`_solve_on_support`); a negative weight, or a degenerate face (more tasks than the
    rank of their Gram block), drops the task of smallest weight from the support; otherwise the
    task that most violates optimality (a gradient entry below the optimal value) joins it.
    Each round also scores the face's kink candidate ($g_w = 0$). Every candidate is scored
    with the true objective and only an improvement is kept, so the refinement never makes the
    answer worse. ``num_rounds`` is static.
    """
    eps = jnp.finfo(w.dtype).eps

    def objective(v: Array) -> Array:
        return linear @ v + radius * _norm(factor @ v)

    def keep_better(cand: Array, best_w: Array, best_f: Array) -> tuple[Array, Array, Array]:
        cand = jnp.where(jnp.all(jnp.isfinite(cand)), cand, best_w)
        feasible = project_simplex(jnp.maximum(cand, 0.0))
        f = objective(feasible)
        better = f < best_f
        return feasible, jnp.where(better, feasible, best_w), jnp.where(better, f, best_f)

    def body(_, carry):
        mask, best_w, best_f = carry
        cand, kink, singular = _solve_on_support(gram, linear, radius, mask)
        _, best_w, best_f = keep_better(kink, best_w, best_f)
        feasible, best_w, best_f = keep_better(cand, best_w, best_f)
        cand = jnp.where(jnp.all(jnp.isfinite(cand)), cand, feasible)
        negative = mask * cand < -eps
        shrink = jnp.any(negative) | (singular & (jnp.sum(mask) > 1))
        s = jnp.maximum(_norm(factor @ feasible), jnp.finfo(w.dtype).tiny)
        grad = linear + radius * (gram @ feasible) / s
        violation = jnp.where(mask > 0, 0.0, jnp.min(jnp.where(mask > 0, grad, jnp.inf)) - grad)
        drop = jnp.argmin(jnp.where(mask > 0, cand, jnp.inf))
        add = jnp.argmax(violation)
        mask = jnp.where(
            shrink,
            mask.at[drop].set(0.0),
            jnp.where(violation[add] > eps, mask.at[add].set(1.0), mask),
        )
        return mask, best_w, best_f

    mask = (w > eps).astype(w.dtype)
    _, best_w, _ = jax.lax.fori_loop(0, num_rounds, body, (mask, w, objective(w)))
    return best_w


class DualSolver(NamedTuple):
    r"""How the stage-1 dual is solved: exactly for small K, by static iteration counts above.

    K ≤ 2 has a closed form and K ≤ ``enumerate_up_to`` is solved exactly by enumerating every
    support (`camegrad_jax._solvers._enumeration.conflict_dual`: no loop, cost growing as
    $2^K K^3$). Larger K runs primal–dual iterations, then an active-set finish; the iterations
    are most of that solve's fixed cost. The active set makes the answer exact wherever the
    optimum has $g_{w^*} \ne 0$, even after 250 iterations; at the dual's kink
    ($g_{w^*} = 0$) only the iterations help. ``python -m benchmarks.stage1_iterations``
    measures the accuracy and cost per iteration count and ``python -m benchmarks.device`` the
    exact path against the iterative one.

    Attributes:
      pdhg_iters: primal–dual iterations (`conflict_dual_pdhg`), for K > ``enumerate_up_to``.
      active_set_rounds: exact active-set rounds after them (`refine_active_set`).
      enumerate_up_to: the largest K solved by support enumeration (static; 8 by default,
        where the enumeration stops being cheaper than the iterations on CPU).
    """

    pdhg_iters: int = 2000
    active_set_rounds: int = 8
    enumerate_up_to: int = 8


def solve_conflict_dual(
    gram: Array,
    factor: Array,
    linear: Array,
    radius: Array,
    w_init: Array,
    solver: DualSolver = DualSolver(),
) -> tuple[Array, Array]:
    r"""Minimiser of $b^\top w + r\|Lw\|$ over $\Delta_K$ ($L^\top L = G$).

    K = 1 is trivial, K = 2 exact (`conflict_dual_pair`) and K ≤ ``solver.enumerate_up_to``
    exact and loop-free (support enumeration); larger K runs the primal–dual iterations from
    ``w_init``, then exact active-set rounds (counts in ``solver``). Returns $w^*$ and its
    Frank–Wolfe gap (`conflict_dual_gap`).
    """
    k = gram.shape[0]
    if k == 1:
        return jnp.ones((1,), gram.dtype), jnp.zeros((), gram.dtype)
    if k == 2:
        w = conflict_dual_pair(gram, linear, radius)
        return w, conflict_dual_gap(gram, factor, linear, radius, w)
    if k <= solver.enumerate_up_to:
        return _enumeration.conflict_dual(gram, factor, linear, radius)
    w = conflict_dual_pdhg(gram, factor, linear, radius, w_init, solver.pdhg_iters)
    w = refine_active_set(gram, factor, linear, radius, w, solver.active_set_rounds)
    return w, conflict_dual_gap(gram, factor, linear, radius, w)


def check_dual_solver(solver: DualSolver) -> None:
    """Clear errors for solver settings, which are static."""
    check_solver(solver, DualSolver)
