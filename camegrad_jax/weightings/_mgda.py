r"""MGDA: the minimum-norm element of the convex hull of the task gradients.

$w^* = \arg\min_{w \in \Delta_K} w^\top G w$ and the update is $d = J^\top w^*$. For K = 2
the minimiser has a closed form, for K ≤ 8 (``MgdaSolver.enumerate_up_to``) support enumeration
finds it exactly with no loop; above, Frank–Wolfe (Sener and Koltun's Algorithm 2) finds the
support of $w^*$ and Wolfe's exact active-set method finishes on it.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from camegrad_jax._solvers._min_norm import MgdaSolver, check_mgda_solver, solve_min_norm
from camegrad_jax._weighting import Weighting
from camegrad_jax.weightings._common import normalised_gram, warm_started

Array = jax.Array


class MgdaState(NamedTuple):
    r"""State of the [`mgda`][camegrad_jax.weightings.mgda] weighting.

    Attributes:
      weights: $w^*$ of the last step (the coefficients, on the simplex), the warm start of
        the next.
      residual: the Frank–Wolfe gap $w^\top\hat Gw - \min_i(\hat Gw)_i$ of the last solve
        ($\hat G = G/\operatorname{tr}G$), a bound on how far $\|J^\top w\|^2$ is from the
        minimum, relative to the trace (0 up to round-off when the solve is exact).
    """

    weights: Array
    residual: Array


def mgda(*, solver: MgdaSolver = MgdaSolver()) -> Weighting:
    r"""MGDA (Désidéri 2012; Sener and Koltun 2018): the minimum-norm convex combination.

    $$
    c = w^* = \arg\min_{w \in \Delta_K} \Big\|\sum_i w_i g_i\Big\|^2
            = \arg\min_{w \in \Delta_K} w^\top G w .
    $$

    $d = J^\top w^*$ is the minimum-norm point of the convex hull of the task gradients. It is
    non-conflicting: $\langle g_i, d\rangle \ge \|d\|^2 \ge 0$ for every task, with equality
    on the support of $w^*$; $d = 0$ exactly when the point is Pareto-stationary. The
    gradients are not normalised (the paper's ``normalization_type='none'``), so the result
    does not depend on the scale of $G$ and is equivariant to task permutations.

    K = 2 uses the closed form of the paper's Algorithm 1; K ≤ ``solver.enumerate_up_to``
    (8) is exact and loop-free (every face's nearest point to 0, the best kept). Above, the
    paper's Frank–Wolfe
    (Algorithm 2, exact line search, official ``MAX_ITER = 250`` iterations by default) starts
    from the better of the previous step's $w^*$ (kept in the state) and the best pair, as
    the official code does, and Wolfe's exact active-set method then finishes the solve on the
    support Frank–Wolfe found (Frank–Wolfe alone converges as $O(1/t)$). All iteration
    counts are static, set by ``solver``. A zero (or non-finite) Gram matrix keeps the
    previous weights.

    Args:
      solver: where enumeration stops and the static iteration counts above it.

    Returns:
      A [`Weighting`][camegrad_jax.Weighting] whose state is an
      [`MgdaState`][camegrad_jax.weightings.MgdaState].

    Examples:
      >>> import jax.numpy as jnp
      >>> jac = jnp.array([[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]])
      >>> weighting = mgda()
      >>> coeffs, state = weighting.weigh(jac @ jac.T, weighting.init(2))
      >>> [round(float(c), 4) for c in coeffs]  # TorchJD's MGDAWeighting: the same
      [0.6, 0.4]
      >>> [round(float(x), 4) for x in coeffs @ jac]  # d = [0, 1, 1]: <g_i, d> = 2 = |d|^2
      [0.0, 1.0, 1.0]

    References:
      Sener and Koltun, *Multi-Task Learning as Multi-Objective Optimization*, NeurIPS 2018.
      Désidéri, *Multiple-gradient descent algorithm (MGDA) for multiobjective optimization*,
      Comptes Rendus Mathématique 350, 2012.
      Wolfe, *Finding the nearest point in a polytope*, Mathematical Programming 11, 1976.
    """

    check_mgda_solver(solver)

    def init(num_tasks: int) -> MgdaState:
        return MgdaState(
            weights=jnp.full((num_tasks,), 1.0 / num_tasks, jnp.float32),
            residual=jnp.zeros((), jnp.float32),
        )

    def weigh(gram: Array, state: MgdaState, **extra_args: Any) -> tuple[Array, MgdaState]:
        del extra_args
        previous = state.weights.astype(gram.dtype)
        gram_hat, valid = normalised_gram(gram)
        w, gap = solve_min_norm(gram_hat, previous, solver)
        return warm_started(state, valid, w, gap)

    return Weighting(init, weigh, scale_invariant=True)
