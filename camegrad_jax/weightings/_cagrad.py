r"""CAGrad (Liu et al., NeurIPS 2021): conflict-averse gradient descent, in Gram space.

CAGrad looks for the update, within a ball around the mean gradient $g_0$, that most
improves the worst task, $\max_d \min_i\langle g_i, d\rangle$ subject to
$\|d - g_0\| \le c\|g_0\|$. Its dual is a problem on the simplex,

$$
w^* = \arg\min_{w \in \Delta_K}\ g_w^\top g_0 + \sqrt{\phi}\,\|g_w\|, \qquad
\phi = c^2\|g_0\|^2, \quad g_w = J^\top w ,
$$

and the primal solution is $d = g_0 + (\sqrt\phi / \|g_w\|)\,g_w$. This is stage 1 of
CAME-Grad with task weights $\mathbf 1/K$ and radius $\rho = c$, so it is computed by
`camegrad_jax.weightings._came.rectify` (the dual solved exactly and loop-free for K ≤ 8 by support
enumeration, by primal–dual splitting plus an exact active-set finish above).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from camegrad_jax._checks import check_in_range, concrete
from camegrad_jax._numerics import psd_sqrt
from camegrad_jax._solvers._conflict_dual import DualSolver, check_dual_solver
from camegrad_jax._weighting import Weighting
from camegrad_jax.weightings._came import rectify
from camegrad_jax.weightings._common import in_canonical_order, normalised_gram

Array = jax.Array

RESCALES = (0, 1, 2)
"""The official code's ``rescale`` options: none, divide by $1 + c^2$, divide by $1 + c$."""


class CAGradState(NamedTuple):
    """Diagnostics of [`cagrad`][camegrad_jax.weightings.cagrad] (nothing is carried over).

    Attributes:
      residual: how far the last step's dual solve was from exact (see
        [`CameState`][camegrad_jax.weightings.CameState]).
    """

    residual: Array


def cagrad_coefficients(
    gram: Array, c: Array, rescale: Array, solver: DualSolver = DualSolver()
) -> tuple[Array, Array]:
    r"""CAGrad's coefficients $a/s$, computed on $\hat G = G/\operatorname{tr}G$.

    $a = \mathbf 1/K + (\sqrt\phi / \|g_{w^*}\|)\,w^*$ (when $g_{w^*}$ vanishes the tasks
    are Pareto-stationary and $J^\top a$ is the projection of $g_0$ onto the dual cone), and
    $s$ is 1, $1 + c^2$ or $1 + c$ for ``rescale`` 0, 1 or 2. The dual solver starts from the
    uniform weights every step, as the official code. A Gram matrix with zero or non-finite
    trace gives $\mathbf 1/K$ (the update is zero). Also returns stage 1's residual.
    """
    num_tasks = gram.shape[-1]
    gram_hat, valid = normalised_gram(gram)
    mean = jnp.full((num_tasks,), 1.0 / num_tasks, gram.dtype)
    anchor, _, residual = rectify(gram_hat, psd_sqrt(gram_hat), mean, c, mean, solver)
    divisor = jnp.where(rescale == 0, 1.0, jnp.where(rescale == 1, 1.0 + c * c, 1.0 + c))
    return jnp.where(valid, anchor, mean) / divisor, jnp.where(valid, residual, 0.0)


def _check_rescale(rescale: Any) -> None:
    known = concrete(rescale)
    if known is None:
        return
    integral = known.shape == () and (
        np.issubdtype(known.dtype, np.integer) or np.issubdtype(known.dtype, np.bool_)
    )
    if not integral or int(known) not in RESCALES:
        raise ValueError(
            "`rescale` must be 0 (none), 1 (divide by 1 + c**2) or 2 (divide by 1 + c); "
            f"got {rescale!r}."
        )


def cagrad(c: Any = 0.5, rescale: Any = 1, *, solver: DualSolver = DualSolver()) -> Weighting:
    r"""CAGrad (Liu et al., NeurIPS 2021), following the authors' official code.

    With $g_0 = J^\top\mathbf 1/K$ the mean gradient and $\phi = c^2\|g_0\|^2$,

    $$
    w^* = \arg\min_{w \in \Delta_K} g_w^\top g_0 + \sqrt\phi\,\|g_w\|, \qquad
    d = \Big(g_0 + \frac{\sqrt\phi}{\|g_{w^*}\|}\,g_{w^*}\Big) / s ,
    $$

    with $s = 1$ (``rescale=0``), $1 + c^2$ (``rescale=1``, the official default) or
    $1 + c$ (``rescale=2``). So $c = 0$ is the mean gradient, and for $c \ge 1$ the ball
    contains 0, so the update conflicts with no task. At a Pareto-stationary point
    ($g_{w^*} = 0$) we take the projection of $g_0$ onto the dual cone $\{d: Jd \ge 0\}$
    (spec §3, stage 1; TorchJD returns 0 there and the official code divides by
    $\|g_{w^*}\| + 10^{-8}$).

    ``rescale = 0`` is [`came`][camegrad_jax.weightings.came] with ``task_weights = 1/K``,
    ``rho = c``, ``kappa = None``, ``nu = 0`` (the same solver, exact for K ≤ 8). TorchJD's
    ``CAGrad(c)`` is ``rescale = 0``. The official code solves the dual with SLSQP; its
    objective's $\sqrt{\cdot + 10^{-8}}$ smoothing and step tolerances differ from this exact
    solution by about $10^{-4}$.

    Args:
      c: the conflict radius $c \ge 0$, relative to $\|g_0\|$ (the official ``alpha``,
        default 0.5). May be traced.
      rescale: 0, 1 or 2 (default 1, as the official code). Either a Python int or an integer
        array: it may be traced too (``optax.inject_hyperparams`` turns it into one), since it
        only selects the divisor $s$.
      solver: where enumeration stops (K ≤ 8 exact) and the iteration counts above.

    Returns:
      A [`Weighting`][camegrad_jax.Weighting] whose state only reports the last solve's
      residual ([`CAGradState`][camegrad_jax.weightings.CAGradState]). Each step is
      solved from scratch, as in the official code and TorchJD, so the same Gram matrix always
      gives the same update. The dual solution is recoverable from the coefficients $c$ when
      $g_{w^*} \ne 0$: $w^* \propto s\,c - \mathbf 1/K$.

    Examples:
      >>> import jax.numpy as jnp
      >>> from camegrad_jax.weightings import cagrad
      >>> jac = jnp.array([[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]])  # TorchJD's example
      >>> weighting = cagrad(c=0.5, rescale=0)
      >>> coeffs, _ = weighting.weigh(jac @ jac.T, weighting.init(2))
      >>> coeffs  # w* = e_1: 1/2 + c * |g_0| / |g_1| = 1/2 + sqrt(3) / (2 sqrt(18)); TorchJD's
      Array([0.7041, 0.5   ], dtype=float32)
      >>> weighting = cagrad()  # the official default: rescale=1 divides by 1 + 0.5**2
      >>> weighting.weigh(jac @ jac.T, weighting.init(2))[0]
      Array([0.5633, 0.4   ], dtype=float32)

    References:
      Liu, Liu, Jin, Stone and Liu, *Conflict-Averse Gradient Descent for Multi-task Learning*,
      NeurIPS 2021 (arXiv:2110.14048); official code github.com/Cranial-XIX/CAGrad
      (``cagrad`` in ``nyuv2/utils.py``); TorchJD (github.com/SimplexLab/TorchJD), ``CAGrad``.
    """
    check_in_range("c", c, 0.0, expected="a finite number >= 0 (the conflict radius)")
    _check_rescale(rescale)
    check_dual_solver(solver)

    def init(num_tasks: int) -> CAGradState:
        del num_tasks
        return CAGradState(residual=jnp.zeros((), jnp.float32))

    def weigh(gram: Array, state: CAGradState, **extra_args: Any) -> tuple[Array, CAGradState]:
        del extra_args
        # In the tasks' own order, as CAME-Grad (`canonical_order`): round-off cannot depend on
        # the order the tasks are listed in.
        coeffs, residual = in_canonical_order(
            lambda g: cagrad_coefficients(g, jnp.asarray(c, g.dtype), jnp.asarray(rescale), solver),
            gram,
        )
        return coeffs.astype(gram.dtype), CAGradState(residual.astype(state.residual.dtype))

    return Weighting(init, weigh, scale_invariant=True)
