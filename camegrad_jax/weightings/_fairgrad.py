r"""FairGrad: $\alpha$-fair allocation of the update between the tasks, solved on the device.

FairGrad (Ban & Ji, ICML 2024) looks for weights $w > 0$ whose update $d = J^\top w$ gives
every task the improvement $\langle g_i, d\rangle = (Gw)_i = w_i^{-1/\alpha}$. That
equation is the stationarity condition of the strictly convex

$$
f(w) = \tfrac12 w^\top G w - \sum_i h(w_i), \qquad h'(w) = w^{-1/\alpha}
$$

on $w > 0$ (Hessian $G + \operatorname{diag}(w^{-1/\alpha - 1}/\alpha) \succ 0$), so a
damped Newton method with a backtracking line search converges to it from any positive start.
With $\alpha = 1$ it is the Nash bargaining equation $Gw = 1/w$ of Nash-MTL, which
[`nash_mtl`][camegrad_jax.weightings.nash_mtl] solves with the same `solve_fair_weights`.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from camegrad_jax._checks import check_in_range
from camegrad_jax._solvers._newton import NewtonSolver, check_newton_solver, solve_fair_weights
from camegrad_jax._weighting import Weighting
from camegrad_jax.weightings._common import gram_scale, in_canonical_order, warm_started

Array = jax.Array


class FairGradState(NamedTuple):
    r"""State and diagnostics of [`fairgrad`][camegrad_jax.weightings.fairgrad].

    Attributes:
      weights: the weights $w$ of the last step (the warm start of the next).
      residual: $\max_i |(Gw)_i / w_i^{-1/\alpha} - 1|$ at the last solve, how far a task's
        improvement is from its target, relatively (it includes the ridge's bias, so a large
        value flags a Gram matrix for which no positive solution exists).
    """

    weights: Array
    residual: Array


def fairgrad(alpha: Any = 1.0, *, solver: NewtonSolver = NewtonSolver()) -> Weighting:
    r"""FairGrad (Ban & Ji, ICML 2024): the $\alpha$-fair weights $G w = w^{-1/\alpha}$.

    The update $d = J^\top w$ maximises the $\alpha$-fair utility
    $\sum_i (\langle g_i, d\rangle)^{1-\alpha}/(1-\alpha)$ (the sum of logs at
    $\alpha = 1$) on a ball; its optimality condition is
    $\langle g_i, d\rangle = (Gw)_i = w_i^{-1/\alpha}$ with $w > 0$.
    $\alpha = 0$ is linear scalarisation, $w = 1/K$, as in the official code;
    $\alpha = 1$ is proportional fairness (the Nash-MTL equation, without its clipping);
    $\alpha \to \infty$ approaches max-min fairness.

    The official code solves the equation on the host with ``scipy.optimize.least_squares``
    from $w = 1/K$ at every step; here `solve_fair_weights` runs a fixed number of damped
    Newton iterations on the device, warm-started from the previous weights. The equation is
    solved for $G/m$ with $m = \operatorname{tr}(G)/K$ and mapped back with
    $w = m^{-\alpha/(1+\alpha)}\,w_{G/m}$: the weights are **not** scale invariant,
    $J \to sJ$ gives $w \to s^{-2\alpha/(1+\alpha)}w$ ($1/s$ at $\alpha = 1$).
    When no positive solution exists (rank-deficient $G$ such as opposite gradients, or a zero
    task gradient) the ridge $\delta$ of ``solver`` makes one exist: its weights are finite and
    large, of order $\delta^{-\alpha/(1+\alpha)}$, on the directions with no solution.
    A zero Gram matrix keeps the previous weights (the update is zero).

    Args:
      alpha: the fairness parameter $\alpha \ge 0$ (official default 1.0). May be traced.
      solver: static [`NewtonSolver`][camegrad_jax.weightings.NewtonSolver] settings
        (default ``NewtonSolver()``: 20 iterations, 8 step sizes, ridge 1e-6).

    Returns:
      A [`Weighting`][camegrad_jax.Weighting] whose state is a `FairGradState`.

    Examples:
      >>> import jax.numpy as jnp
      >>> from camegrad_jax.weightings import fairgrad
      >>> jac = jnp.array([[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]])
      >>> weighting = fairgrad(alpha=1.0)
      >>> weights, state = weighting.weigh(jac @ jac.T, weighting.init(2))
      >>> jnp.round(weights, 4)  # TorchJD's FairGrad(alpha=1) gives [0.5915, 0.4071]
      Array([0.5915, 0.4071], dtype=float32)
      >>> jnp.round(jac @ (jac.T @ weights) * weights, 4)  # (Gw)_i w_i = 1
      Array([1., 1.], dtype=float32)

    References:
      Ban and Ji, *Fair Resource Allocation in Multi-Task Learning*, ICML 2024
      (arXiv:2402.15638); official code https://github.com/OptMN-Lab/fairgrad.
    """
    check_in_range("alpha", alpha, 0.0, expected="a finite number >= 0 (the fairness parameter)")
    check_newton_solver(solver)

    def init(num_tasks: int) -> FairGradState:
        return FairGradState(
            weights=jnp.full((num_tasks,), 1.0 / num_tasks, jnp.float32),
            residual=jnp.zeros((), jnp.float32),
        )

    def weigh(
        gram: Array, state: FairGradState, *, jacobian_scale: Any = 1.0, **extra_args: Any
    ) -> tuple[Array, Any]:
        del extra_args
        k = gram.shape[-1]
        dtype = gram.dtype
        a = jnp.asarray(alpha, dtype)
        positive = a > 0.0
        a_safe = jnp.where(positive, a, 1.0)
        mean_sq, valid = gram_scale(gram, per_task=True)
        exponent = a_safe / (1.0 + a_safe)
        previous = state.weights.astype(dtype)
        # The state holds w for G; the solver works on G / m, where it is m^{α/(1+α)} w.
        # log m of the true Gram s^2 G, finite where m itself would overflow.
        log_mean = jnp.log(mean_sq) + 2.0 * jnp.log(jnp.asarray(jacobian_scale, dtype))
        warm = previous * jnp.exp(exponent * log_mean)
        v, residual = in_canonical_order(
            lambda g, w: solve_fair_weights(g, w, a_safe, solver), gram / mean_sq, warm
        )
        w = v * jnp.exp(-exponent * log_mean)
        w = jnp.where(positive, w, jnp.full((k,), 1.0 / k, dtype))
        residual = jnp.where(positive, residual, 0.0)
        return warm_started(state, valid, w, residual)

    return Weighting(init, weigh, uses_jacobian_scale=True)
