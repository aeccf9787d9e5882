r"""Projections onto the dual cone of the task gradients: UPGrad and DualProj.

The dual cone of the rows of $J$ is $C = \{d : Jd \ge 0\}$, the directions along which no
task gets worse to first order. By Proposition 1 of Quinton & Rey (2024) the projection of
$J^\top u$ onto it is $J^\top v$ with

$$
v = \arg\min_{v \ge u} v^\top G v ,
$$

a quadratic program in Gram space (`camegrad_jax._solvers._nonneg_qp.project_to_dual_cone`).
Both weightings work on $\hat G = G / \operatorname{tr} G$ (the projection's weights do not
depend on the scale of $G$) and follow TorchJD's conventions: the preference vector defaults
to the mean, $\lambda = \mathbf 1/K$. The QPs are solved with the tasks in an order of their own
(`camegrad_jax.weightings._common.in_canonical_order`), so that float32 round-off on an
ill-conditioned Gram matrix cannot depend on the order of the tasks.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from camegrad_jax._solvers._nonneg_qp import QPSolver, project_to_dual_cone
from camegrad_jax._weighting import Weighting
from camegrad_jax.weightings._common import (
    in_canonical_order,
    normalised_gram,
    pref_vector_init,
    preferences,
)

Array = jax.Array


class ProjectionState(NamedTuple):
    r"""Diagnostics of [`upgrad`][camegrad_jax.weightings.upgrad] and
    [`dualproj`][camegrad_jax.weightings.dualproj] (nothing is carried over).

    Attributes:
      residual: the last step's KKT residual $\max_i|\min(v_i - u_i, (\hat Gv)_i)|$ of the
        projection's QP on $\hat G = G/\operatorname{tr}G$ (UPGrad: the largest of its K), 0 at
        the exact projection: how far a task may still conflict with the update, relative to
        the trace.
    """

    residual: Array


def _projection_weighting(pref_vector: Any, coefficients: Any, solver: QPSolver) -> Weighting:
    check_size = pref_vector_init(pref_vector)

    def init(num_tasks: int) -> ProjectionState:
        check_size(num_tasks)
        return ProjectionState(residual=jnp.zeros((), jnp.float32))

    def weigh(gram: Array, state: Any, **extra_args: Any) -> tuple[Array, ProjectionState]:
        del state, extra_args
        k = gram.shape[-1]
        prefs = preferences(pref_vector, k, gram.dtype, 1.0 / k)
        coeffs, residual = in_canonical_order(lambda g, p: coefficients(g, p, solver), gram, prefs)
        return coeffs.astype(gram.dtype), ProjectionState(residual.astype(gram.dtype))

    return Weighting(init, weigh, scale_invariant=True)


def upgrad_coefficients(
    gram: Array, pref_vector: Array, solver: QPSolver = QPSolver()
) -> tuple[Array, Array]:
    r"""UPGrad's coefficients $c = \sum_i \lambda_i v^{(i)}$ and the largest KKT residual.

    $v^{(i)} = \arg\min_{v \ge e_i} v^\top\hat Gv$, so that $J^\top v^{(i)}$ is the
    projection of $g_i$ onto the dual cone; the K QPs are solved together (``jax.vmap``).
    For $\lambda_i \ge 0$, projecting $\lambda_i g_i$ gives $\lambda_i J^\top v^{(i)}$ (the
    projection onto a cone is positively homogeneous).
    """
    gram, _ = normalised_gram(gram)
    num_tasks = gram.shape[-1]
    anchors = jnp.eye(num_tasks, dtype=gram.dtype)
    projections, residuals = jax.vmap(lambda u: project_to_dual_cone(gram, u, solver))(anchors)
    return pref_vector @ projections, jnp.max(residuals)


def dualproj_coefficients(
    gram: Array, pref_vector: Array, solver: QPSolver = QPSolver()
) -> tuple[Array, Array]:
    r"""DualProj's coefficients $c = \arg\min_{v \ge \lambda} v^\top\hat Gv$ and the KKT
    residual."""
    return project_to_dual_cone(normalised_gram(gram)[0], pref_vector, solver)


def upgrad(pref_vector: Any = None, *, solver: QPSolver = QPSolver()) -> Weighting:
    r"""UPGrad (Quinton & Rey, 2024): project every task's gradient onto the dual cone, average.

    With $\pi_C$ the projection onto the dual cone $C = \{d : Jd \ge 0\}$ and preferences
    $\lambda \ge 0$ (TorchJD's default $\mathbf 1/K$, the mean),

    $$
    d = \sum_i \lambda_i\,\pi_C(g_i) = J^\top c, \qquad
    c = \sum_i \lambda_i v^{(i)}, \quad v^{(i)} = \arg\min_{v \ge e_i} v^\top\hat G v .
    $$

    Every $\pi_C(g_i)$ lies in $C$, so the update conflicts with no task: $Jd \ge 0$. Gradients
    that already agree are left alone ($v^{(i)} = e_i$ when $\hat G e_i \ge 0$), and a
    gradient's share of the update never shrinks ($v^{(i)} \ge e_i$). The QPs are solved in
    Gram space: exactly and loop-free by support enumeration for K ≤ 8
    (``QPSolver.enumerate_up_to``), above that by `camegrad_jax._solvers._nonneg_qp.solve_nonneg_qp`
    (accelerated projected gradient, then an exact active-set finish), a static number of
    iterations given by ``solver``.

    Cost above K = 8: K QPs of K + 4 active-set rounds, each a K×K eigendecomposition, so
    $O(K^5)$ flops per step (``python -m benchmarks.aggregators`` measures it). A smaller
    ``QPSolver(active_set_rounds=...)`` trades exactness for speed.

    Conventions: $d = J^\top c$ as in TorchJD, whose UPGrad weights are ours up to its
    regularisation ($\hat G + 10^{-4} I$ in its QP; we solve the exact projection, which shifts
    the 4th decimal on TorchJD's example below). Preferences are fixed; ``pref_vector = ones``
    gives the sum of the projections, which for K = 2 is PCGrad.

    Args:
      pref_vector: preferences $\lambda \ge 0$ combining the projected gradients
        (default $\mathbf 1/K$). May be traced (e.g. under ``optax.inject_hyperparams``).
      solver: where enumeration stops (K ≤ 8 exact) and the iteration counts above.

    Returns:
      A [`Weighting`][camegrad_jax.Weighting] whose state only reports the last solve's
      KKT residual ([`ProjectionState`][camegrad_jax.weightings.ProjectionState]).

    Examples:
      >>> import jax.numpy as jnp
      >>> from camegrad_jax.weightings import upgrad
      >>> jac = jnp.array([[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]])  # TorchJD's example
      >>> coeffs, state = upgrad().weigh(jac @ jac.T, None)  # nothing is carried over
      >>> coeffs  # ((1 + 11/9) / 2, (1 + 11/19) / 2); TorchJD (regularised): [1.1109, 0.7894]
      Array([1.1111 , 0.7895], dtype=float32)
      >>> jac @ (jac.T @ coeffs) >= 0  # no task conflicts with the update
      Array([ True,  True], dtype=bool)
      >>> float(state.residual) < 1e-6  # the QP's KKT conditions hold
      True

    References:
      Quinton and Rey, *Jacobian Descent for Multi-Objective Optimization*, 2024
      (arXiv:2406.16232); TorchJD (github.com/SimplexLab/TorchJD), ``UPGrad``.
    """
    return _projection_weighting(pref_vector, upgrad_coefficients, solver)


def dualproj(pref_vector: Any = None, *, solver: QPSolver = QPSolver()) -> Weighting:
    r"""DualProj: project the preference-weighted gradient onto the dual cone.

    With preferences $\lambda \ge 0$ (TorchJD's default $\mathbf 1/K$, the mean gradient),

    $$
    d = \pi_C(J^\top\lambda) = J^\top c, \qquad c = \arg\min_{v \ge \lambda} v^\top\hat G v ,
    $$

    the projection of Lopez-Paz & Ranzato's GEM (their Eq. 11) applied to multi-task learning, as
    in Quinton & Rey (2024). The update conflicts with no task ($Jd \ge 0$) and equals
    $J^\top\lambda$ when that already conflicts with none. Solved like
    [`upgrad`][camegrad_jax.weightings._projection.upgrad], with one QP instead of K.

    Conventions: TorchJD's (weights $c$ of $d = J^\top c$, default mean); TorchJD regularises
    its QP with $\hat G + 10^{-4}I$, we do not (4th decimal on the example below).

    Args:
      pref_vector: preferences $\lambda \ge 0$ (default $\mathbf 1/K$). May be traced.
      solver: where enumeration stops (K ≤ 8 exact) and the iteration counts above.

    Returns:
      A [`Weighting`][camegrad_jax.Weighting] whose state is a
      [`ProjectionState`][camegrad_jax.weightings.ProjectionState].

    Examples:
      >>> import jax.numpy as jnp, camegrad_jax as cg
      >>> jac = jnp.array([[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]])  # TorchJD's example
      >>> weighting = cg.weightings.dualproj()
      >>> coeffs, _ = weighting.weigh(jac @ jac.T, weighting.init(2))
      >>> coeffs  # (11/18, 1/2): the mean, moved until task 1 no longer conflicts
      Array([0.6111, 0.5   ], dtype=float32)

    References:
      Quinton and Rey, *Jacobian Descent for Multi-Objective Optimization*, 2024
      (arXiv:2406.16232); Lopez-Paz and Ranzato, *Gradient Episodic Memory for Continual
      Learning*, NeurIPS 2017; TorchJD (github.com/SimplexLab/TorchJD), ``DualProj``.
    """
    return _projection_weighting(pref_vector, dualproj_coefficients, solver)
