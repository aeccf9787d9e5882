r"""CAME-Grad: conflict-averse direction, magnitude-enhanced energy, adaptive fusion.

Every stage works on the normalised Gram matrix $\hat G = G / \operatorname{tr} G$ and
returns coefficients, so the update is always $d = J^\top c$. With task weights
$\lambda$, $g_\lambda = J^\top\lambda$ and $\hat G = L^\top L$:

1. `rectify`: $a = \lambda + (\rho\|g_\lambda\| / \|g_{w^*}\|)\,w^*$, with
   $w^*$ the minimiser over the simplex of
   $w^\top\hat G\lambda + \rho\|g_\lambda\|\sqrt{w^\top\hat Gw}$; at the kink
   $g_{w^*} = 0$, $J^\top a$ is the projection of $g_\lambda$ onto the dual cone.
2. `inject_energy`: the gain
   $\gamma = \min(\kappa, \sum_i\lambda_i\|g_i\| / \|J^\top a\|)$.
3. `fuse`: $\nu_t = \min(\nu, \nu_{safe})$, the largest blend towards
   $g_\lambda$ that re-introduces no conflict.

Final coefficients $c = (1-\nu_t)\gamma a + \nu_t\lambda$.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from camegrad_jax._checks import check_in_range, weight_vector_size
from camegrad_jax._numerics import cosines, psd_sqrt, safe_norm, safe_sqrt
from camegrad_jax._solvers._conflict_dual import DualSolver, check_dual_solver, solve_conflict_dual
from camegrad_jax._solvers._nonneg_qp import QPSolver, project_to_dual_cone
from camegrad_jax._weighting import Weighting
from camegrad_jax.weightings._common import canonical_order, normalised_gram

Array = jax.Array


class CameState(NamedTuple):
    r"""State and diagnostics of the CAME-Grad weighting (read with ``optax.tree.get``).

    Attributes:
      dual_weights: $w^*$ of the last step, the warm start of the next.
      gain: the energy gain $\gamma$ of the last step.
      fusion: the fusion coefficient $\nu_t$ actually used at the last step.
      cosines: the K×K pairwise cosines of the task gradients at the last step.
      residual: how far stage 1 was from exact at the last step, in units of
        $\operatorname{tr}G$: the dual's Frank–Wolfe gap, or the dual-cone projection's KKT
        residual at the kink (0 up to round-off where the solve is exact, K ≤ 8).
    """

    dual_weights: Array
    gain: Array
    fusion: Array
    cosines: Array
    residual: Array


def _norm(factor: Array, coeffs: Array) -> Array:
    r"""$\|J^\top x\|$ in normalised units, computed as $\|Lx\|$ (no cancelling)."""
    return safe_norm(factor @ coeffs)


def _cancelled(length: Array, coeffs: Array, task_norms: Array) -> Array:
    r"""Whether $\|J^\top x\|$ is round-off next to the length with no cancellation."""
    reach = jnp.abs(coeffs) @ task_norms
    return length <= jnp.sqrt(jnp.finfo(length.dtype).eps) * reach


def rectify(
    gram: Array,
    factor: Array,
    task_weights: Array,
    rho: Array,
    w_init: Array,
    solver: DualSolver = DualSolver(),
) -> tuple[Array, Array, Array]:
    r"""Stage 1: the conflict-averse anchor $a$, the dual solution $w^*$ and a residual.

    Solves $\max_d \min_i \langle g_i, d\rangle$ subject to
    $\|d - g_\lambda\| \le \rho\|g_\lambda\|$ through its dual on the simplex, then
    $a = \lambda + (\rho\|g_\lambda\| / \|g_{w^*}\|)\,w^*$.

    At the dual's kink, $\|g_{w^*}\|$ at most $\sqrt\varepsilon\sum_i w^*_i\|g_i\|$
    (0 is in the hull of the tasks' gradients: no direction improves them all), the formula
    breaks down. There $a = \lambda + \mu$ with $\mu \ge 0$ minimising
    $\|J^\top(\lambda + \mu)\|$, so that $J^\top a$ is the projection of $g_\lambda$
    onto the dual cone $\{d: Jd \ge 0\}$ (spec §3, stage 1). $\|g_{w^*}\|$ is taken as the
    smaller of $\|Lw^*\|$ and $\sqrt{w^{*\top}\hat Gw^*}$: the second is exactly 0 on a
    task whose gradient is 0, which must not get a coefficient of $1/\text{round-off}$.

    The residual is the dual's Frank–Wolfe gap, or at the kink the projection's KKT residual
    $\max_i|\min(\mu_i, (\hat Ga)_i)|$: both 0 at an exact solution.
    """
    task_norms = safe_sqrt(jnp.diagonal(gram))
    radius = rho * _norm(factor, task_weights)
    w, gap = solve_conflict_dual(gram, factor, gram @ task_weights, radius, w_init, solver)
    w_norm = _norm(factor, w)
    form = safe_sqrt(w @ gram @ w)
    kink = _cancelled(jnp.minimum(w_norm, form), w, task_norms)
    qp_solver = QPSolver(enumerate_up_to=solver.enumerate_up_to)
    anchor, residual = jax.lax.cond(
        kink,
        lambda: project_to_dual_cone(gram, task_weights, qp_solver),
        lambda: (task_weights + (radius / jnp.where(kink, 1.0, w_norm)) * w, gap),
    )
    return anchor, w, residual


def inject_energy(
    gram: Array, factor: Array, task_weights: Array, anchor: Array, kappa: Array | None
) -> Array:
    r"""Stage 2, the gain $\gamma = \min(\kappa, E / \|J^\top a\|)$.

    $E = \sum_i \lambda_i\|g_i\|$ is the length the update would have if no gradient
    cancelled another; $\gamma = 1$ when $J^\top a$ vanishes or ``kappa`` is None.
    """
    if kappa is None:
        return jnp.ones((), gram.dtype)
    task_norms = safe_sqrt(jnp.diagonal(gram))
    energy = task_weights @ task_norms
    length = _norm(factor, anchor)
    degenerate = _cancelled(length, anchor, task_norms)
    gain = jnp.minimum(kappa, energy / jnp.where(degenerate, 1.0, length))
    return jnp.where(degenerate, 1.0, gain).astype(gram.dtype)


def fuse(gram: Array, task_weights: Array, scaled_anchor: Array, nu: Array) -> Array:
    r"""Stage 3, the fusion coefficient $\nu_t = \min(\nu, \nu_{safe})$.

    Along $d(\nu') = (1-\nu')J^\top\gamma a + \nu' g_\lambda$ each task's inner product
    moves linearly from $A_i = (\hat G\gamma a)_i$ to $B_i = (\hat G\lambda)_i$.
    Task i limits the blend where it would fall below $t_i = \min(0, A_i)$:
    $\nu'_i = (A_i - t_i)/(A_i - B_i)$ if $B_i < t_i$. $\nu_{safe}$ is the
    smallest limit (1 if none).
    """
    a = gram @ scaled_anchor
    b = gram @ task_weights
    floor = jnp.minimum(0.0, a)
    limited = b < floor
    limits = jnp.where(limited, (a - floor) / jnp.where(limited, a - b, 1.0), 1.0)
    return jnp.clip(jnp.minimum(nu, jnp.min(limits)), 0.0, 1.0).astype(gram.dtype)


def came_coefficients(
    gram: Array,
    state: CameState,
    task_weights: Array,
    rho: Array,
    kappa: Array | None,
    nu: Array,
    solver: DualSolver = DualSolver(),
) -> tuple[Array, CameState]:
    r"""The three stages on one Gram matrix: coefficients $c$ and the new state.

    A Gram matrix with zero (or non-finite) trace means every gradient is zero: the coefficients
    are then $\lambda$ (the update is zero whatever they are) and $w^*$ is kept.
    """
    gram_hat, valid = normalised_gram(gram)
    factor = psd_sqrt(gram_hat)
    anchor, w, residual = rectify(gram_hat, factor, task_weights, rho, state.dual_weights, solver)
    gain = inject_energy(gram_hat, factor, task_weights, anchor, kappa)
    fusion = fuse(gram_hat, task_weights, gain * anchor, nu)
    coeffs = (1.0 - fusion) * gain * anchor + fusion * task_weights
    new_state = CameState(
        dual_weights=jnp.where(valid, w, state.dual_weights),
        gain=jnp.where(valid, gain, 1.0),
        fusion=jnp.where(valid, fusion, 0.0),
        cosines=cosines(gram),
        residual=jnp.where(valid, residual, 0.0),
    )
    return jnp.where(valid, coeffs, task_weights), new_state


def check_came_hyperparams(rho: Any, kappa: Any, nu: Any) -> None:
    """Clear errors for out-of-range hyperparameters that are known at trace time."""
    check_in_range("rho", rho, 0.0, expected="a finite number >= 0 (the conflict radius)")
    if kappa is not None:
        check_in_range("kappa", kappa, 1.0, expected="a finite number >= 1 (the gain cap) or None")
    check_in_range("nu", nu, 0.0, 1.0, expected="in [0, 1] (the fusion coefficient)")


def came(
    task_weights: Any = None,
    rho: Any = 0.5,
    kappa: Any = 1.5,
    nu: Any = 0.2,
    *,
    solver: DualSolver = DualSolver(),
) -> Weighting:
    r"""The CAME-Grad weighting (Zhang et al., ICML 2026), Gram matrix in, coefficients out.

    The stages are those of the module docstring; ``rho = 0`` removes stage 1,
    ``kappa = None`` stage 2 and ``nu = 0`` stage 3, and ``rho = 0, kappa = 1`` is linear
    scalarisation $c = \lambda$. The coefficients are invariant to the scale of the Gram
    matrix and equivariant to permutations of the tasks.

    Args:
      task_weights: the user's task weights $\lambda \ge 0$ (default all ones). They can
        also be given per step as ``weigh(..., task_weights=...)``, which takes precedence.
      rho: conflict radius $\rho \ge 0$, relative to $\|g_\lambda\|$.
      kappa: gain cap $\kappa \ge 1$, or None to switch energy injection off.
      nu: fusion coefficient $\nu \in [0, 1]$.
      solver: the stage-1 solver: exact and loop-free up to ``solver.enumerate_up_to`` tasks
        (8), static iteration counts above.

    Returns:
      A [`Weighting`][camegrad_jax.Weighting] whose state is a
      [`CameState`][camegrad_jax.weightings.CameState].

    Examples:
      >>> import jax.numpy as jnp, camegrad_jax as cg
      >>> gram = jnp.array([[1.0, -0.5], [-0.5, 1.0]])  # two conflicting unit gradients
      >>> weighting = cg.weightings.came()
      >>> coeffs, state = weighting.weigh(gram, weighting.init(2))
      >>> coeffs  # a = 1.5 each, gamma = 4/3 restores the length, then a 20% blend with [1, 1]
      Array([1.8, 1.8], dtype=float32)
      >>> round(float(state.gain), 4)
      1.3333

    References:
      Zhang, Hao, Wang and Guo, *The Double Dilemma in Multi-Task Radiology Report Generation:
      A Gradient Dynamics Analysis and Solution*, ICML 2026 (arXiv:2605.22635).
      Liu, Liu, Jin, Stone and Liu, *Conflict-Averse Gradient Descent for Multi-task Learning*,
      NeurIPS 2021.
    """
    check_came_hyperparams(rho, kappa, nu)
    check_dual_solver(solver)
    default_size = (
        None if task_weights is None else weight_vector_size("task_weights", task_weights)
    )

    def init(num_tasks: int) -> CameState:
        if default_size is not None and default_size != num_tasks:
            raise ValueError(
                f"`task_weights` has {default_size} entries but the weighting was initialised "
                f"for {num_tasks} tasks."
            )
        return CameState(
            dual_weights=jnp.full((num_tasks,), 1.0 / num_tasks, jnp.float32),
            gain=jnp.ones((), jnp.float32),
            fusion=jnp.zeros((), jnp.float32),
            cosines=jnp.eye(num_tasks, dtype=jnp.float32),
            residual=jnp.zeros((), jnp.float32),
        )

    def weigh(gram: Array, state: CameState, **extra_args: Any) -> tuple[Array, CameState]:
        num_tasks = gram.shape[-1]
        weights = extra_args.get("task_weights")
        if weights is None:
            weights = task_weights
        if weights is None:
            weights = jnp.ones((num_tasks,), gram.dtype)
        elif weight_vector_size("task_weights", weights) != num_tasks:
            raise ValueError(
                f"`task_weights` has {np.shape(weights)[0]} entries but the Gram matrix is "
                f"{num_tasks}×{num_tasks}."
            )
        # Solved with the tasks in an order of their own (`canonical_order`), so that float32
        # round-off cannot depend on the order the user listed them in.
        order, back = canonical_order(gram)
        working = jax.tree_util.tree_map(lambda x: x.astype(gram.dtype), state)
        working = working._replace(dual_weights=working.dual_weights[order])
        weights = jnp.asarray(weights, gram.dtype)[order]
        coeffs, new_state = came_coefficients(
            gram[order][:, order], working, weights, rho, kappa, nu, solver
        )
        # The cosines are entrywise, hence the same in any order: computed on `gram` directly.
        new_state = new_state._replace(
            dual_weights=new_state.dual_weights[back], cosines=cosines(gram)
        )
        new_state = jax.tree_util.tree_map(lambda x, s: x.astype(s.dtype), new_state, state)
        return coeffs[back], new_state

    return Weighting(init, weigh, scale_invariant=True)
