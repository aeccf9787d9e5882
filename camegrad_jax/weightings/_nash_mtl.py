r"""Nash-MTL: the Nash bargaining solution $G\alpha = 1/\alpha$, solved on the device."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from camegrad_jax._checks import check_in_range, concrete
from camegrad_jax._solvers._newton import NewtonSolver, check_newton_solver, solve_fair_weights
from camegrad_jax._weighting import Weighting
from camegrad_jax.weightings._common import gram_scale, in_canonical_order

Array = jax.Array


class NashMTLState(NamedTuple):
    r"""State and diagnostics of [`nash_mtl`][camegrad_jax.weightings.nash_mtl].

    Attributes:
      alpha: the bargaining solution $\alpha$ (before clipping) of the last solve; the warm
        start of the next one and the weights reused between solves.
      step: how many steps have been taken (``update_weights_every`` counts them).
      residual: $\max_i |\alpha_i(G\alpha)_i - 1|$ at the last solve, how far a task's
        improvement is from its target $1/\alpha_i$, relatively (it includes the ridge's
        bias, so a large value flags a Gram matrix for which no positive solution exists).
      clip_scale: the factor the last step's $\alpha$ was multiplied by to respect
        ``max_norm`` (1 when the update was short enough).
    """

    alpha: Array
    step: Array
    residual: Array
    clip_scale: Array


def nash_mtl(
    max_norm: Any = 1.0,
    update_weights_every: Any = 1,
    *,
    solver: NewtonSolver = NewtonSolver(),
) -> Weighting:
    r"""Nash-MTL (Navon et al., ICML 2022): the Nash bargaining solution, then norm clipping.

    The update $d = J^\top\alpha$ with $\alpha > 0$ solving $G\alpha = 1/\alpha$
    (elementwise), i.e. $\langle g_i, d\rangle\,\alpha_i = 1$ for every task: the
    stationarity condition of the strictly convex
    $\tfrac12\alpha^\top G\alpha - \sum_i\log\alpha_i$, and of the bargaining problem
    $\max_d \sum_i \log\langle g_i, d\rangle$ on a ball. Then, as in the official code
    (``clip_grad_norm_`` on the shared parameters) and TorchJD, if
    $\|J^\top\alpha\| > \text{max\_norm} > 0$ the coefficients are scaled to
    $\alpha\,\text{max\_norm}/\|J^\top\alpha\|$.

    The official code approximates $\alpha$ on the host with a sequence of convex problems
    (cvxpy/ECOS, ``optim_niter = 20``) on $G/\|G\|_F$; here the same equation is solved on
    the device by damped Newton (`solve_fair_weights` with $\alpha_{FairGrad} = 1$,
    ``solver.newton_iters`` static iterations), warm-started from the previous $\alpha$.
    Rank-deficient $G$: where no positive solution exists (opposite gradients, a zero task
    gradient) the official solver fails and keeps its previous $\alpha$; here the equation is
    solved for $\hat G + \delta I$ instead ($\hat G = G/m$, $m = \operatorname{tr}(G)/K$,
    $\delta$ = ``solver.ridge``), which always has a finite solution, large (about
    $\delta^{-1/2}/\sqrt m$) on the directions without one. A zero Gram matrix keeps the
    previous $\alpha$.

    Scale: $\alpha$ is **not** scale invariant. $J \to sJ$ gives $\alpha \to \alpha/s$,
    so the unclipped update $J^\top\alpha$ keeps its length, which is always
    $\sqrt{\alpha^\top G\alpha} = \sqrt K$; with the default ``max_norm = 1`` every update
    with $K \ge 2$ is clipped to length 1 whatever the gradients' scale.

    Args:
      max_norm: the largest length of the update, $\ge 0$; 0 disables clipping (official
        default 1.0). May be traced.
      update_weights_every: solve every this many steps and reuse $\alpha$ in between
        (official default 1). A positive integer; may be traced.
      solver: static [`NewtonSolver`][camegrad_jax.weightings.NewtonSolver] settings
        (default ``NewtonSolver()``: 20 iterations, 8 step sizes, ridge 1e-6).

    Returns:
      A [`Weighting`][camegrad_jax.Weighting] whose state is a `NashMTLState`.

    Examples:
      >>> import jax.numpy as jnp, camegrad_jax as cg
      >>> jac = jnp.array([[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]])
      >>> weighting = cg.weightings.nash_mtl(max_norm=0.0)
      >>> alpha, state = weighting.weigh(jac @ jac.T, weighting.init(2))
      >>> jnp.round(alpha, 4)  # G alpha = 1 / alpha
      Array([0.5915, 0.4071], dtype=float32)
      >>> weighting = nash_mtl()  # max_norm = 1: the update has length sqrt(2), clipped to 1
      >>> coeffs, state = weighting.weigh(jac @ jac.T, weighting.init(2))
      >>> jnp.round(jac.T @ coeffs, 4)  # TorchJD's NashMTL gives [0.0542, 0.7061, 0.7061]
      Array([0.0542, 0.7061, 0.7061], dtype=float32)

    References:
      Navon, Shamsian, Achituve, Maron, Kawaguchi, Chechik and Fetaya, *Multi-Task Learning as
      a Bargaining Game*, ICML 2022 (arXiv:2202.01017); official code
      https://github.com/AvivNavon/nash-mtl.
    """
    check_in_range("max_norm", max_norm, 0.0, expected="a finite number >= 0 (0 disables it)")
    check_in_range("update_weights_every", update_weights_every, 1.0, expected="a positive integer")
    known = concrete(update_weights_every)
    if known is not None and (known.shape != () or float(known) != int(known)):
        raise ValueError(
            f"`update_weights_every` must be a positive integer; got {known.tolist()}."
        )
    check_newton_solver(solver)

    def init(num_tasks: int) -> NashMTLState:
        return NashMTLState(
            alpha=jnp.ones((num_tasks,), jnp.float32),  # the official initial alpha
            step=jnp.zeros((), jnp.int32),
            residual=jnp.zeros((), jnp.float32),
            clip_scale=jnp.ones((), jnp.float32),
        )

    def weigh(
        gram: Array, state: NashMTLState, *, jacobian_scale: Any = 1.0, **extra_args: Any
    ) -> tuple[Array, Any]:
        del extra_args
        dtype = gram.dtype
        every = jnp.maximum(jnp.asarray(update_weights_every, jnp.int32), 1)
        limit = jnp.asarray(max_norm, dtype)

        def bargain(gram: Array, previous: Array) -> tuple[Array, Array, Array]:
            mean_sq, valid = gram_scale(gram, per_task=True)
            gram_hat = gram / mean_sq
            # sqrt(m) of the true Gram s^2 G, kept finite where m itself would overflow.
            root = jnp.sqrt(mean_sq) * jnp.asarray(jacobian_scale, dtype)

            def solve() -> tuple[Array, Array]:
                # On G / m the solution is sqrt(m) alpha.
                one = jnp.ones((), dtype)
                v, residual = solve_fair_weights(gram_hat, previous * root, one, solver)
                return v / root, residual.astype(dtype)

            def reuse() -> tuple[Array, Array]:
                return previous, state.residual.astype(dtype)

            solve_now = valid & (state.step % every == 0)
            alpha, residual = jax.lax.cond(solve_now, solve, reuse)
            # ||J^T alpha||^2 = (sqrt(m) alpha)^T G_hat (sqrt(m) alpha), without overflow.
            scaled = alpha * root
            norm = jnp.sqrt(jnp.maximum(scaled @ (gram_hat @ scaled), 0.0))
            clip = (limit > 0.0) & (norm > limit) & valid
            return alpha, residual, jnp.where(clip, limit / jnp.where(clip, norm, 1.0), 1.0)

        # Solved with the tasks in an order of their own: where no positive solution exists
        # the ridge's solve is ill-conditioned and round-off would follow the task order.
        alpha, residual, clip_scale = in_canonical_order(bargain, gram, state.alpha.astype(dtype))
        new_state = NashMTLState(
            alpha=alpha.astype(state.alpha.dtype),
            step=state.step + 1,
            residual=residual.astype(state.residual.dtype),
            clip_scale=clip_scale.astype(state.clip_scale.dtype),
        )
        return clip_scale * alpha, new_state

    return Weighting(init, weigh, uses_jacobian_scale=True)
