r"""A fixed-iteration solver for non-negativity constrained quadratic programs on a K×K Gram.

The problems are

$$
\min_{x \ge 0}\ f(x) = \tfrac12 x^\top G x + q^\top x
$$

with $G$ positive semi-definite (possibly singular) and, for the dual-cone projections of
UPGrad and DualProj, $\min_{v \ge u} v^\top G v$ (set $v = u + x$, $q = Gu$). Everything is
jit-compiled and vmap-able and runs a static number of iterations.

The solver has two phases:

1. accelerated projected gradient (FISTA with gradient-based restarts), which finds the set of
   positive coordinates (the support) of a minimiser quickly but converges slowly after that;
2. an exact active-set finish in the style of Lawson and Hanson's NNLS algorithm, started from
   phase 1's iterate: each round solves the stationarity equations $G_{PP}x_P = -q_P$ on the
   current support $P$ (with a pseudo-inverse, so singular faces are fine, and one step of
   iterative refinement, which brings the active constraints to round-off). A solution with a
   non-positive entry is not taken: the iterate moves towards it until the first coordinate
   hits zero, which leaves the support. A positive solution is taken, and the coordinate outside
   the support whose gradient is most negative joins it. Once no gradient is negative the
   Karush–Kuhn–Tucker conditions hold to round-off and the rounds change nothing.

Every iterate is scored by its KKT residual $\max_i|\min(x_i, \nabla_i f(x))|$ and the best
one is returned, so extra rounds never make the answer worse.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from camegrad_jax._numerics import psd_sqrt
from camegrad_jax._solvers import _enumeration

Array = jax.Array


class QPSolver(NamedTuple):
    """How the dual-cone projections are solved: exactly for small K, by iterations above.

    K ≤ ``enumerate_up_to`` is solved exactly and loop-free by enumerating every support
    (`camegrad_jax._solvers._enumeration.nonneg_qp`); larger K by `solve_nonneg_qp` with the
    static iteration counts below.

    Attributes:
      pgd_iters: accelerated projected gradient iterations (phase 1).
      active_set_rounds: exact active-set rounds after them (phase 2), each one K×K
        eigendecomposition; None (the default) means K + 4. A round adds or removes one
        coordinate of the support, so from a good phase-1 support a few suffice. K + 4 covers
        the Pareto-stationary case, where the projection is 0 and every coordinate is positive
        at the solution (measured up to K = 64).
      enumerate_up_to: the largest K solved by support enumeration (static, default 8).
    """

    pgd_iters: int = 100
    active_set_rounds: int | None = None
    enumerate_up_to: int = 8


def kkt_residual(gram: Array, linear: Array, x: Array) -> Array:
    r"""$\max_i |\min(x_i, (Gx + q)_i)|$: zero exactly at the minimisers of $f$ over $x \ge 0$."""
    grad = gram @ x + linear
    return jnp.max(jnp.abs(jnp.minimum(x, grad)))


def _accelerated_projected_gradient(
    gram: Array, linear: Array, x: Array, step: Array, num_iters: int
) -> Array:
    """FISTA on ``f`` over ``x >= 0``, momentum reset when it stops pointing downhill."""

    def body(_, carry):
        x, y, t = carry
        x_new = jnp.maximum(y - step * (gram @ y + linear), 0.0)
        # O'Donoghue & Candès' gradient restart: the gradient-mapping step opposes the momentum.
        restart = jnp.dot(y - x_new, x_new - x) > 0.0
        t_new = 0.5 * (1.0 + jnp.sqrt(1.0 + 4.0 * t * t))
        momentum = jnp.where(restart, 0.0, (t - 1.0) / t_new)
        y_new = x_new + momentum * (x_new - x)
        return x_new, y_new, jnp.where(restart, jnp.ones_like(t), t_new)

    x, _, _ = jax.lax.fori_loop(0, num_iters, body, (x, x, jnp.ones((), x.dtype)))
    return x


def _solve_on_support(gram: Array, linear: Array, mask: Array, scale: Array) -> Array:
    r"""A minimiser of $f$ on the face $\{x: x_i = 0 \text{ off the support}\}$.

    $x_P = -G_{PP}^+ q_P$ by a truncated pseudo-inverse. Where to truncate depends on the face:
    a cutoff of $\varepsilon\cdot$ ``scale`` (round-off of a Gram matrix whose largest
    diagonal entry is ``scale``) is needed on nearly singular faces, common when the tasks'
    gradients are Pareto-stationary, where a larger one returns the wrong minimiser; but on a
    rank-deficient face a round-off eigenvalue can land just above it, and inverting that
    eigenvalue ruins the solution. So both $\varepsilon$ and $K\varepsilon$ cutoffs are
    tried and the solution whose equations $G_{PP}x_P = -q_P$ hold better is kept. The inactive
    block is replaced by ``scale``$\cdot I$, so one K×K eigendecomposition serves every support
    and both cutoffs. One step of iterative refinement, $x \leftarrow x - G_{PP}^+(G_{PP}x_P +
    q_P)$, cuts the equations' residual (and with it the worst constraint violation $-(Gv)_i$
    of a projection) by one to two orders of magnitude in float32.
    """
    outer = mask[:, None] * mask[None, :]
    eigvals, eigvecs = jnp.linalg.eigh(outer * gram + jnp.diag((1.0 - mask) * scale))
    eps = jnp.finfo(gram.dtype).eps

    def solve(cutoff: Array) -> tuple[Array, Array]:
        kept = eigvals > cutoff
        inv = jnp.where(kept, 1.0 / jnp.where(kept, eigvals, 1.0), 0.0)
        pinv = outer * ((eigvecs * inv[None, :]) @ eigvecs.T)
        z = -(pinv @ (mask * linear))
        z = z - pinv @ (mask * (gram @ z + linear))
        residual = jnp.max(jnp.abs(mask * (gram @ z + linear)))
        return z, jnp.where(jnp.all(jnp.isfinite(z)), residual, jnp.inf)

    fine, fine_residual = solve(eps * scale)
    coarse, coarse_residual = solve(gram.shape[-1] * eps * scale)
    return jnp.where(coarse_residual < fine_residual, coarse, fine)


def _active_set(
    gram: Array, linear: Array, x: Array, scale: Array, num_rounds: int
) -> tuple[Array, Array]:
    """Lawson–Hanson rounds from a feasible ``x``; returns the best iterate and its residual.

    A coordinate dropped in one round may not rejoin in the next: on a nearly singular face
    round-off can make a just-added coordinate's solution non-positive, and the add/drop pair
    would otherwise repeat forever.
    """
    k = gram.shape[-1]
    eps = jnp.finfo(gram.dtype).eps
    index = jnp.arange(k)
    linear_scale = jnp.max(jnp.abs(linear))

    def body(_, carry):
        x, mask, tabu, best_x, best_r = carry
        z = _solve_on_support(gram, linear, mask, scale)
        z = jnp.where(jnp.isfinite(z), z, 0.0)
        on = mask > 0.0
        feasible = jnp.all(jnp.where(on, z > 0.0, True))
        # Infeasible: step from x towards z until the first coordinate reaches 0, drop it.
        blocking = on & (z <= 0.0)
        denom = jnp.where(blocking, x - z, 1.0)
        ratios = jnp.where(denom > 0.0, x / jnp.where(denom > 0.0, denom, 1.0), 0.0)
        ratios = jnp.where(blocking, ratios, jnp.inf)
        first = jnp.argmin(ratios)
        alpha = jnp.clip(jnp.where(jnp.any(blocking), ratios[first], 1.0), 0.0, 1.0)
        stepped = jnp.where(index == first, 0.0, jnp.maximum(x + alpha * (z - x), 0.0) * mask)
        kept = on & (stepped > eps * jnp.max(stepped)) & (index != first)
        # Feasible: take z, then add the coordinate whose gradient is most negative.
        taken = jnp.maximum(z, 0.0) * mask
        grad = gram @ taken + linear
        add = jnp.argmin(jnp.where(on | (index == tabu), jnp.inf, grad))
        tol = k * eps * (linear_scale + scale * jnp.max(taken))
        grown = jnp.where(grad[add] < -tol, mask.at[add].set(1.0), mask)
        x_new = jnp.where(feasible, taken, jnp.where(kept, stepped, 0.0))
        mask_new = jnp.where(feasible, grown, kept.astype(mask.dtype))
        tabu_new = jnp.where(feasible, -1, first)
        r = kkt_residual(gram, linear, x_new)
        better = r < best_r
        return (
            x_new,
            mask_new,
            tabu_new,
            jnp.where(better, x_new, best_x),
            jnp.where(better, r, best_r),
        )

    mask = (x > eps * jnp.max(x)).astype(x.dtype)
    x = x * mask
    init = (x, mask, jnp.array(-1), x, kkt_residual(gram, linear, x))
    *_, best_x, best_r = jax.lax.fori_loop(0, num_rounds, body, init)
    return best_x, best_r


def solve_nonneg_qp(
    gram: Array, linear: Array, solver: QPSolver = QPSolver(), x_init: Array | None = None
) -> tuple[Array, Array]:
    r"""A minimiser of $\tfrac12 x^\top Gx + q^\top x$ over $x \ge 0$ ($G$ PSD), and its KKT
    residual ([`kkt_residual`][camegrad_jax._solvers._nonneg_qp.kkt_residual]).

    Accelerated projected gradient from ``x_init`` (default 0) with step $1/\lambda_{\max}(G)$,
    then exact active-set rounds (module docstring); iteration counts are static, in
    ``solver``. The problem must be bounded below, e.g. $q$ in the range of $G$ (always the
    case for the dual-cone projections). With a singular $G$ the minimiser need not be unique;
    $Gx$ (and so the update $J^\top x$) is.

    Examples:
      >>> import jax.numpy as jnp
      >>> gram = jnp.array([[2.0, 1.0], [1.0, 2.0]])
      >>> x, residual = solve_nonneg_qp(gram, jnp.array([-2.0, 1.0]))
      >>> x  # x = (1, 0): gradient (0, 2) >= 0, so the KKT conditions hold exactly
      Array([1., 0.], dtype=float32)
      >>> residual
      Array(0., dtype=float32)
    """
    gram = 0.5 * (gram + gram.T)
    dtype = gram.dtype
    tiny = jnp.finfo(dtype).tiny
    lipschitz = jnp.maximum(jnp.linalg.eigvalsh(gram)[-1], tiny)
    scale = jnp.maximum(jnp.max(jnp.diagonal(gram)), tiny)
    x = jnp.zeros_like(linear) if x_init is None else jnp.maximum(x_init, 0.0)
    x = _accelerated_projected_gradient(gram, linear, x, 1.0 / lipschitz, solver.pgd_iters)
    rounds = gram.shape[-1] + 4 if solver.active_set_rounds is None else solver.active_set_rounds
    return _active_set(gram, linear, x, scale, rounds)


def project_to_dual_cone(
    gram: Array, anchor: Array, solver: QPSolver = QPSolver()
) -> tuple[Array, Array]:
    r"""Weights $v$ of the projection of $J^\top u$ onto the dual cone $\{d: Jd \ge 0\}$, and
    the KKT residual $\max_i|\min(v_i - u_i, (Gv)_i)|$ of the QP (0 at the exact projection).

    By Proposition 1 of Quinton & Rey (2024), $\pi(J^\top u) = J^\top v$ with
    $v = \arg\min_{v \ge u} v^\top G v$, which is $v = u + x$ for the minimiser $x$ of
    $\tfrac12 x^\top Gx + (Gu)^\top x$ over $x \ge 0$. Then $Gv \ge 0$ (every task
    improves, to first order) and $v_i > u_i$ only where $(Gv)_i = 0$. K ≤
    ``solver.enumerate_up_to`` is solved exactly by support enumeration, larger K by
    `solve_nonneg_qp`.

    Examples:
      >>> import jax.numpy as jnp
      >>> gram = jnp.array([[1.0, -0.5], [-0.5, 1.0]])
      >>> v, _ = project_to_dual_cone(gram, jnp.array([1.0, 0.0]))
      >>> v  # g1 - (<g1, g2>/|g2|^2) g2
      Array([1. , 0.5], dtype=float32)
    """
    if gram.shape[-1] <= solver.enumerate_up_to:
        gram = 0.5 * (gram + gram.T)
        x, residual = _enumeration.nonneg_qp(gram, psd_sqrt(gram), anchor)
    else:
        x, residual = solve_nonneg_qp(gram, gram @ anchor, solver)
    return anchor + x, residual
