"""The ready optax transformations: one explicit, typed function per weighting.

Each is [`aggregate`][camegrad_jax.aggregate] of one weighting; the weighting's own page has
the maths. Besides its own arguments, every one takes the keyword-only ``num_tasks`` (K, which
``init`` needs) and ``groups`` (parameter groups aggregated separately), and returns an
``optax.GradientTransformationExtraArgs`` with an ``AggregateState``, to put first in an
``optax.chain``. CAME-Grad's also takes K from ``task_weights``.
"""

from __future__ import annotations

import jax
import optax

from camegrad_jax import weightings
from camegrad_jax._checks import resolve_num_tasks
from camegrad_jax._groups import Grouping
from camegrad_jax._solvers import DualSolver, MgdaSolver, NewtonSolver, QPSolver
from camegrad_jax._transform import aggregate


def came_grad(
    task_weights: jax.typing.ArrayLike | None = None,
    rho: jax.typing.ArrayLike = 0.5,
    kappa: jax.typing.ArrayLike | None = 1.5,
    nu: jax.typing.ArrayLike = 0.2,
    *,
    solver: DualSolver = DualSolver(),
    num_tasks: int | None = None,
    groups: Grouping = None,
) -> optax.GradientTransformationExtraArgs:
    r"""CAME-Grad as an optax transformation: stacked Jacobian in, update out.

    ``aggregate(weightings.came(task_weights, rho, kappa, nu), num_tasks=K)`` with K taken from
    ``task_weights`` or ``num_tasks`` (both given: they must agree). Put it first in a chain,
    e.g. ``optax.chain(came_grad(task_weights=jnp.array([1.0, 4.0])), optax.adamw(5e-5))``.
    Per-step weights can be passed as ``update(..., task_weights=...)``. ``rho``, ``kappa``,
    ``nu`` and ``task_weights`` may be traced (``optax.inject_hyperparams``, ``jax.vmap``);
    values are range-checked when known at trace time, so a traced value (e.g. weights computed
    inside a jitted step) must be valid by construction.

    A non-finite Jacobian gives a zero update from this transformation; optimizers chained after
    it still apply their momentum to that zero, so wrap the chain to skip the whole step.

    Args:
      task_weights: task weights $\lambda \ge 0$ (default all ones).
      rho: conflict radius $\rho \ge 0$.
      kappa: gain cap $\kappa \ge 1$, or None to switch energy injection off.
      nu: fusion coefficient $\nu \in [0, 1]$.
      solver: the stage-1 solver: exact and loop-free up to ``solver.enumerate_up_to`` tasks
        (8), static iteration counts above.
      num_tasks: K, when ``task_weights`` is not given.
      groups: parameter groups aggregated separately (see
        [`aggregate`][camegrad_jax.aggregate]).

    Returns:
      An ``optax.GradientTransformationExtraArgs`` with an
      [`AggregateState`][camegrad_jax.AggregateState].

    Examples:
      >>> import jax, jax.numpy as jnp, optax, camegrad_jax as cg
      >>> tx = optax.chain(cg.came_grad(task_weights=jnp.array([1.0, 4.0])), optax.sgd(0.1))
      >>> params = {"w": jnp.zeros(2)}
      >>> jac = {"w": jnp.array([[1.0, 0.0], [-0.5, 1.0]])}
      >>> updates, state = jax.jit(tx.update)(jac, tx.init(params))
      >>> jax.tree.map(lambda u: u.shape, updates)
      {'w': (2,)}
    """
    k = resolve_num_tasks(task_weights, num_tasks)
    weighting = weightings.came(task_weights, rho, kappa, nu, solver=solver)
    return aggregate(weighting, num_tasks=num_tasks if k is None else k, groups=groups)


def aligned_mtl(
    scale_mode: str = "min",
    *,
    num_tasks: int | None = None,
    groups: Grouping = None,
) -> optax.GradientTransformationExtraArgs:
    r"""Aligned-MTL (Senushkin et al., CVPR 2023) as an optax transformation.

    The maths: [`weightings.aligned_mtl`][camegrad_jax.weightings.aligned_mtl].

    Args:
      scale_mode: how the aligned frame is scaled: ``"min"``, ``"median"`` or ``"rmse"``.
    """
    return aggregate(weightings.aligned_mtl(scale_mode), num_tasks=num_tasks, groups=groups)


def cagrad(
    c: jax.typing.ArrayLike = 0.5,
    rescale: int = 1,
    *,
    solver: DualSolver = DualSolver(),
    num_tasks: int | None = None,
    groups: Grouping = None,
) -> optax.GradientTransformationExtraArgs:
    r"""CAGrad (Liu et al., NeurIPS 2021) as an optax transformation.

    The maths: [`weightings.cagrad`][camegrad_jax.weightings.cagrad].

    Args:
      c: the conflict radius $c \ge 0$, relative to the mean gradient's norm.
      rescale: the official code's ``rescale`` (0, 1 or 2).
      solver: the stage-1 dual's solver settings.
    """
    return aggregate(
        weightings.cagrad(c, rescale, solver=solver), num_tasks=num_tasks, groups=groups
    )


def config(
    pref_vector: jax.typing.ArrayLike | None = None,
    use_least_square: bool = True,
    *,
    num_tasks: int | None = None,
    groups: Grouping = None,
) -> optax.GradientTransformationExtraArgs:
    r"""ConFIG (Liu et al., ICLR 2025) as an optax transformation.

    The maths: [`weightings.config`][camegrad_jax.weightings.config].

    Args:
      pref_vector: the preference weights (default all ones).
      use_least_square: solve for the direction by least squares (the paper's default).
    """
    return aggregate(
        weightings.config(pref_vector, use_least_square), num_tasks=num_tasks, groups=groups
    )


def dualproj(
    pref_vector: jax.typing.ArrayLike | None = None,
    *,
    solver: QPSolver = QPSolver(),
    num_tasks: int | None = None,
    groups: Grouping = None,
) -> optax.GradientTransformationExtraArgs:
    r"""DualProj (Quinton & Rey, 2024) as an optax transformation.

    The maths: [`weightings.dualproj`][camegrad_jax.weightings.dualproj].

    Args:
      pref_vector: the weights $u$ of the combination $J^\top u$ that is projected onto the
        dual cone (default $\mathbf 1/K$, the mean gradient).
      solver: the settings of the one projection.
    """
    return aggregate(
        weightings.dualproj(pref_vector, solver=solver), num_tasks=num_tasks, groups=groups
    )


def dwa(
    temperature: jax.typing.ArrayLike = 2.0,
    *,
    num_tasks: int | None = None,
    groups: Grouping = None,
) -> optax.GradientTransformationExtraArgs:
    r"""Dynamic Weight Average (Liu, Johns and Davison, CVPR 2019) as an optax transformation.

    The maths: [`weightings.dwa`][camegrad_jax.weightings.dwa].

    Args:
      temperature: the softmax temperature $T > 0$.
    """
    return aggregate(weightings.dwa(temperature), num_tasks=num_tasks, groups=groups)


def fairgrad(
    alpha: jax.typing.ArrayLike = 1.0,
    *,
    solver: NewtonSolver = NewtonSolver(),
    num_tasks: int | None = None,
    groups: Grouping = None,
) -> optax.GradientTransformationExtraArgs:
    r"""FairGrad (Ban & Ji, ICML 2024) as an optax transformation.

    The maths: [`weightings.fairgrad`][camegrad_jax.weightings.fairgrad].

    Args:
      alpha: the fairness exponent $\alpha > 0$ (1: Nash bargaining).
      solver: the Newton solver's settings.
    """
    return aggregate(weightings.fairgrad(alpha, solver=solver), num_tasks=num_tasks, groups=groups)


def famo(
    learning_rate: jax.typing.ArrayLike = 0.025,
    weight_decay: jax.typing.ArrayLike = 1e-3,
    min_losses: jax.typing.ArrayLike = 0.0,
    *,
    num_tasks: int | None = None,
    groups: Grouping = None,
) -> optax.GradientTransformationExtraArgs:
    r"""FAMO (Liu, Liu, Stone and Liu, NeurIPS 2023) as an optax transformation.

    The maths: [`weightings.famo`][camegrad_jax.weightings.famo].

    Args:
      learning_rate: the step size of the task logits.
      weight_decay: the logits' weight decay.
      min_losses: lower bounds of the losses (their logs are taken).
    """
    return aggregate(
        weightings.famo(learning_rate, weight_decay, min_losses), num_tasks=num_tasks, groups=groups
    )


def gradvac(
    beta: jax.typing.ArrayLike = 0.01,
    seed: jax.typing.ArrayLike = 0,
    *,
    num_tasks: int | None = None,
    groups: Grouping = None,
) -> optax.GradientTransformationExtraArgs:
    r"""Gradient Vaccine (Wang et al., ICLR 2021) as an optax transformation.

    The maths: [`weightings.gradvac`][camegrad_jax.weightings.gradvac].

    Args:
      beta: the EMA rate of the target cosines, in $[0, 1]$.
      seed: the seed of the random visiting orders.
    """
    return aggregate(weightings.gradvac(beta, seed), num_tasks=num_tasks, groups=groups)


def imtl_g(
    *,
    num_tasks: int | None = None,
    groups: Grouping = None,
) -> optax.GradientTransformationExtraArgs:
    r"""IMTL-G (Liu et al., ICLR 2021) as an optax transformation.

    The maths: [`weightings.imtl_g`][camegrad_jax.weightings.imtl_g].

    """
    return aggregate(weightings.imtl_g(), num_tasks=num_tasks, groups=groups)


def mgda(
    *,
    solver: MgdaSolver = MgdaSolver(),
    num_tasks: int | None = None,
    groups: Grouping = None,
) -> optax.GradientTransformationExtraArgs:
    r"""MGDA (Désidéri 2012; Sener and Koltun 2018) as an optax transformation.

    The maths: [`weightings.mgda`][camegrad_jax.weightings.mgda].

    Args:
      solver: the minimum-norm solver's settings.
    """
    return aggregate(weightings.mgda(solver=solver), num_tasks=num_tasks, groups=groups)


def nash_mtl(
    max_norm: jax.typing.ArrayLike = 1.0,
    update_weights_every: int = 1,
    *,
    solver: NewtonSolver = NewtonSolver(),
    num_tasks: int | None = None,
    groups: Grouping = None,
) -> optax.GradientTransformationExtraArgs:
    r"""Nash-MTL (Navon et al., ICML 2022) as an optax transformation.

    The maths: [`weightings.nash_mtl`][camegrad_jax.weightings.nash_mtl].

    Args:
      max_norm: the update's norm is clipped to this (0: no clipping).
      update_weights_every: solve for new weights every this many steps.
      solver: the Newton solver's settings.
    """
    return aggregate(
        weightings.nash_mtl(max_norm, update_weights_every, solver=solver),
        num_tasks=num_tasks,
        groups=groups,
    )


def pcgrad(
    seed: int = 0,
    *,
    num_tasks: int | None = None,
    groups: Grouping = None,
) -> optax.GradientTransformationExtraArgs:
    r"""PCGrad (Yu et al., NeurIPS 2020) as an optax transformation.

    The maths: [`weightings.pcgrad`][camegrad_jax.weightings.pcgrad].

    Args:
      seed: the seed of the random projection orders.
    """
    return aggregate(weightings.pcgrad(seed), num_tasks=num_tasks, groups=groups)


def rlw(
    seed: int = 0,
    *,
    num_tasks: int | None = None,
    groups: Grouping = None,
) -> optax.GradientTransformationExtraArgs:
    r"""Random Loss Weighting (Lin et al., TMLR 2022) as an optax transformation.

    The maths: [`weightings.rlw`][camegrad_jax.weightings.rlw].

    Args:
      seed: the seed of the random weights.
    """
    return aggregate(weightings.rlw(seed), num_tasks=num_tasks, groups=groups)


def uncertainty(
    learning_rate: jax.typing.ArrayLike = 1e-3,
    *,
    num_tasks: int | None = None,
    groups: Grouping = None,
) -> optax.GradientTransformationExtraArgs:
    r"""Uncertainty weighting (Kendall, Gal and Cipolla, CVPR 2018) as an optax transformation.

    The maths: [`weightings.uncertainty`][camegrad_jax.weightings.uncertainty].

    Args:
      learning_rate: the step size of the log-variances.
    """
    return aggregate(weightings.uncertainty(learning_rate), num_tasks=num_tasks, groups=groups)


def upgrad(
    pref_vector: jax.typing.ArrayLike | None = None,
    *,
    solver: QPSolver = QPSolver(),
    num_tasks: int | None = None,
    groups: Grouping = None,
) -> optax.GradientTransformationExtraArgs:
    r"""UPGrad (Quinton & Rey, 2024) as an optax transformation.

    The maths: [`weightings.upgrad`][camegrad_jax.weightings.upgrad].

    Args:
      pref_vector: the weights $u$ combining the K projected task gradients (default
        $\mathbf 1/K$, their mean).
      solver: the settings of the K projections.
    """
    return aggregate(
        weightings.upgrad(pref_vector, solver=solver), num_tasks=num_tasks, groups=groups
    )
