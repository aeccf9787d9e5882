r"""Damped Newton for $(\hat G + \delta I)w = w^{-1/\alpha}$, $w > 0$ (FairGrad, Nash-MTL)."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from camegrad_jax._checks import check_in_range
from camegrad_jax._solvers._settings import check_solver

Array = jax.Array


class NewtonSolver(NamedTuple):
    r"""Static settings of the Newton solver of $Gw = w^{-1/\alpha}$ (FairGrad, Nash-MTL).

    Attributes:
      newton_iters: Newton iterations per step (static; each solves one K×K system).
      backtracks: step sizes tried by the line search of each iteration, halving from the
        largest step that keeps $w > 0$ (static; evaluated together, not one by one).
      ridge: $\delta$, the equation is solved for $\hat G + \delta I$, with $\hat G$ the
        Gram matrix divided by its mean diagonal. It gives a finite solution where none exists
        (rank-deficient $G$, a task with a zero gradient) and biases a full-rank one by
        $\delta w_i$, i.e. a relative residual of about $\delta w_i^{1 + 1/\alpha}$.
    """

    newton_iters: int = 20
    backtracks: int = 8
    ridge: float = 1e-6


def _antiderivative(w: Array, alpha: Array) -> Array:
    r"""$h(w) = (w^{1-1/\alpha} - 1)/(1 - 1/\alpha)$, which is $\log w$ at $\alpha = 1$."""
    q = 1.0 - 1.0 / alpha
    log_w = jnp.log(w)
    flat = q == 0.0
    return jnp.where(flat, log_w, jnp.expm1(q * log_w) / jnp.where(flat, 1.0, q))


def solve_fair_weights(
    gram_hat: Array, w_init: Array, alpha: Array, solver: NewtonSolver
) -> tuple[Array, Array]:
    r"""The positive solution $w$ of $(\hat G + \delta I)w = w^{-1/\alpha}$, and its residual.

    From the warm start $w_0$ (non-positive or non-finite entries are replaced by 1, then
    divided by their maximum) the solver first takes the best multiple $t w_0$ ($f(tw_0)$ is
    minimised in closed form,
    $t^{1 + 1/\alpha} = \sum_i w_{0,i}^{1-1/\alpha} / w_0^\top\hat Gw_0$), which absorbs
    any change of the gradients' scale, then runs ``solver.newton_iters`` Newton iterations on
    $f$. In the variables $w = D\mathbf 1$, $\Delta w = Ds$ the Newton
    system is

    $$
    (D\hat GD + \operatorname{diag}(w^{1-1/\alpha}/\alpha))\,s
      = w^{1-1/\alpha} - w \odot \hat Gw ,
    $$

    whose matrix is the identity plus a PSD matrix at $\alpha = 1$, well conditioned whatever
    the scale of $w$. The step is $w \leftarrow w \odot (1 + ts)$ with
    $t = t_{max}2^{-j}$, $t_{max} = \min(1, 0.9/\max_i(-s_i))$ so that no weight
    shrinks below a tenth of itself, and $j$ the smallest of ``solver.backtracks`` values
    (evaluated together) that passes an Armijo test on $f$ with an allowance for its round-off;
    with none, $w$ stays. Every iterate is positive and, up to round-off, $f$ never increases.

    Returns:
      ``(w, residual)`` with ``residual`` $= \max_i |w_i^{1/\alpha}(\hat Gw)_i - 1|$, each
      task's relative shortfall from its target, measured without the ridge.
    """
    k = gram_hat.shape[-1]
    dtype = gram_hat.dtype
    eps = jnp.finfo(dtype).eps
    alpha = jnp.asarray(alpha, dtype)
    q = 1.0 - 1.0 / alpha
    ridged = gram_hat + solver.ridge * jnp.eye(k, dtype=dtype)

    def objective(w: Array) -> tuple[Array, Array]:
        quad = 0.5 * w @ (ridged @ w)
        barrier = _antiderivative(w, alpha)
        scale = jnp.abs(quad) + jnp.sum(jnp.abs(barrier))
        return quad - jnp.sum(barrier), scale

    w0 = jnp.where(jnp.isfinite(w_init) & (w_init > 0.0), w_init, 1.0).astype(dtype)
    w0 = w0 / jnp.max(w0)  # t absorbs the scale; this keeps w0ᵀĜw0 clear of over/underflow
    curvature = w0 @ (ridged @ w0)
    power_sum = jnp.sum(jnp.exp(q * jnp.log(w0)))
    t = jnp.exp(alpha / (1.0 + alpha) * (jnp.log(power_sum) - jnp.log(curvature)))
    w0 = jnp.where(jnp.isfinite(t) & (t > 0.0), t, 1.0) * w0

    steps = 0.5 ** jnp.arange(solver.backtracks, dtype=dtype)

    def body(_: Any, w: Array) -> Array:
        wq = jnp.exp(q * jnp.log(w))
        scaled_grad = w * (ridged @ w) - wq
        hessian = w[:, None] * ridged * w[None, :] + jnp.diag(wq / alpha)
        s = jnp.linalg.solve(hessian, -scaled_grad)
        s = jnp.where(jnp.all(jnp.isfinite(s)), s, jnp.zeros_like(s))
        slope = scaled_grad @ s  # directional derivative of f along Δw = w ⊙ s (≤ 0)
        largest = jnp.minimum(1.0, 0.9 / jnp.maximum(jnp.max(-s), 1e-30))
        candidates = w[None, :] * (1.0 + (largest * steps)[:, None] * s[None, :])
        f0, scale = objective(w)
        values, _ = jax.vmap(objective)(candidates)
        tolerance = 16.0 * eps * scale
        accepted = values <= f0 + 1e-4 * largest * steps * slope + tolerance
        first = jnp.argmax(accepted)
        return jnp.where(jnp.any(accepted), candidates[first], w)

    w = jax.lax.fori_loop(0, solver.newton_iters, body, w0)
    residual = jnp.max(jnp.abs(jnp.exp(jnp.log(w) / alpha) * (gram_hat @ w) - 1.0))
    return w, residual


def check_newton_solver(solver: NewtonSolver) -> None:
    """Clear errors for solver settings, which are static."""
    check_solver(solver, NewtonSolver, positive=("newton_iters", "backtracks"))
    check_in_range("solver.ridge", solver.ridge, 0.0, expected="a finite number >= 0")
