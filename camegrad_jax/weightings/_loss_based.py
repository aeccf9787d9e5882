r"""Weightings driven by the task losses, not the Gram matrix: DWA, uncertainty, FAMO.

They need the current task losses, given to the transformation's ``update`` as the extra
argument ``losses`` (a ``(K,)`` vector, e.g. the first output of
[`value_and_jacobian`][camegrad_jax.value_and_jacobian]). The Gram matrix only fixes K and the
dtype. Their own small optimisers (Adam on FAMO's logits and on the uncertainty weights' log
variances) live in the state. A step whose losses hold NaN or Inf is skipped by
[`aggregate`][camegrad_jax.aggregate], which keeps the state as it was, so one bad loss does
not stay in the loss history.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from camegrad_jax._checks import check_in_range, concrete
from camegrad_jax._weighting import Weighting

Array = jax.Array


def _losses(extra_args: dict[str, Any], num_tasks: int, name: str) -> Array:
    losses = extra_args.get("losses")
    if losses is None:
        raise ValueError(
            f"`{name}` weights tasks by their losses: pass them to the transformation as "
            "`update(jac, state, params, losses=losses)` with `losses` of shape (K,)."
        )
    if jnp.shape(losses) != (num_tasks,):
        raise ValueError(
            f"`losses` has shape {jnp.shape(losses)}; expected ({num_tasks},), one per task."
        )
    return jnp.asarray(losses, jnp.float32)


class DwaState(NamedTuple):
    """Diagnostics of [`dwa`][camegrad_jax.weightings.dwa]: the last two steps' losses."""

    previous_losses: Array
    steps: Array


def dwa(temperature: Any = 2.0) -> Weighting:
    r"""Dynamic Weight Average (Liu, Johns and Davison, CVPR 2019), per step.

    With the loss ratios $r_k = L_k(t-1) / L_k(t-2)$,
    $c_k = K\exp(r_k / T) / \sum_i \exp(r_i / T)$, and $c_k = 1$ for the first two steps.
    The paper uses epoch-average losses; pass running averages as ``losses`` for that behaviour.

    Args:
      temperature: $T > 0$ (the paper's default 2).

    Examples:
      >>> import jax.numpy as jnp, camegrad_jax as cg
      >>> w = cg.weightings.dwa()
      >>> state = w.init(2)
      >>> for losses in ([1.0, 1.0], [0.5, 1.0], [0.25, 1.0]):
      ...     coeffs, state = w.weigh(jnp.eye(2), state, losses=jnp.array(losses))
      >>> coeffs  # ratios (0.5, 1): 2 e^0.25 / (e^0.25 + e^0.5), the faster task weighs less
      Array([0.8756..., 1.1243...], dtype=float32)

    References:
      Liu, Johns and Davison, *End-to-End Multi-Task Learning with Attention*, CVPR 2019.
    """
    check_in_range("temperature", temperature, 1e-12, expected="a positive number")

    def init(num_tasks: int) -> DwaState:
        return DwaState(jnp.ones((2, num_tasks), jnp.float32), jnp.zeros((), jnp.int32))

    def weigh(gram: Array, state: DwaState, **extra_args: Any) -> tuple[Array, DwaState]:
        k = gram.shape[-1]
        losses = _losses(extra_args, k, "dwa")
        ratios = state.previous_losses[1] / jnp.maximum(state.previous_losses[0], 1e-30)
        coeffs = k * jax.nn.softmax(ratios / temperature)
        coeffs = jnp.where(state.steps >= 2, coeffs, jnp.ones((k,), jnp.float32))
        history = jnp.stack([state.previous_losses[1], losses])
        return coeffs.astype(gram.dtype), DwaState(history, state.steps + 1)

    return Weighting(init, weigh, uses_gram=False)


class UncertaintyState(NamedTuple):
    """State of [`uncertainty`][camegrad_jax.weightings.uncertainty]: $s_k$ and its Adam."""

    log_variances: Array
    optimizer_state: Any


def uncertainty(learning_rate: Any = 1e-3) -> Weighting:
    r"""Homoscedastic uncertainty weighting (Kendall, Gal and Cipolla, CVPR 2018).

    The scalarised loss $\sum_k \tfrac12 e^{-s_k} L_k + \tfrac12 s_k$ (LibMTL's form) gives the
    parameters the coefficients $c_k = \tfrac12 e^{-s_k}$; the log variances $s$ descend its
    gradient $\tfrac12(1 - e^{-s_k}L_k)$ with Adam at ``learning_rate`` (in the paper they are
    trained with the model's optimiser). At the optimum $e^{s_k} = L_k$.

    Args:
      learning_rate: Adam's step size for the log variances.

    Examples:
      >>> import jax.numpy as jnp, camegrad_jax as cg
      >>> w = cg.weightings.uncertainty()
      >>> coeffs, state = w.weigh(jnp.eye(2), w.init(2), losses=jnp.array([4.0, 0.25]))
      >>> coeffs  # s = 0 at first: c = 1/2
      Array([0.5, 0.5], dtype=float32)
      >>> state.log_variances  # the large loss raises its variance, the small one lowers it
      Array([ 0.001, -0.001], dtype=float32)

    References:
      Kendall, Gal and Cipolla, *Multi-Task Learning Using Uncertainty to Weigh Losses for Scene
      Geometry and Semantics*, CVPR 2018.
    """
    check_in_range("learning_rate", learning_rate, 0.0, expected="a non-negative number")
    adam = optax.adam(learning_rate)

    def init(num_tasks: int) -> UncertaintyState:
        s = jnp.zeros((num_tasks,), jnp.float32)
        return UncertaintyState(s, adam.init(s))

    def weigh(
        gram: Array, state: UncertaintyState, **extra_args: Any
    ) -> tuple[Array, UncertaintyState]:
        losses = _losses(extra_args, gram.shape[-1], "uncertainty")
        s = state.log_variances
        coeffs = 0.5 * jnp.exp(-s)
        grad = 0.5 * (1.0 - jnp.exp(-s) * losses)
        step, opt_state = adam.update(grad, state.optimizer_state, s)
        return coeffs.astype(gram.dtype), UncertaintyState(s + step, opt_state)

    return Weighting(init, weigh, uses_gram=False)


class FamoState(NamedTuple):
    """State of [`famo`][camegrad_jax.weightings.famo]: the task logits, their Adam, the last
    step's losses and whether there was one."""

    logits: Array
    optimizer_state: Any
    previous_losses: Array
    started: Array


def famo(learning_rate: Any = 0.025, weight_decay: Any = 1e-3, min_losses: Any = 0.0) -> Weighting:
    r"""Fast Adaptive Multitask Optimization (Liu, Liu, Stone and Liu, NeurIPS 2023).

    Task weights $z = \operatorname{softmax}(\xi)$; the update descends $\sum_k z_k\log L_k$
    normalised to unit total weight, i.e. $c_k = (z_k / L_k) / \sum_i (z_i / L_i)$ with
    $L_k$ shifted by ``min_losses``. Each step first moves the logits with the log-loss decrease
    since the previous step, $\delta = \log L(t-1) - \log L(t)$: the gradient
    $\partial z/\partial\xi^\top\delta$ goes to Adam (``learning_rate``, decoupled
    ``weight_decay``), as in the official code. The official code measures the decrease on the
    same batch with an extra forward pass; here the next step's losses are used, so no extra
    pass is needed.

    The losses minus ``min_losses`` must be positive (their log is taken): a concrete loss
    that is not raises a ``ValueError``; a traced one gives NaN coefficients, so the
    aggregation skips the step and keeps the state.

    Args:
      learning_rate: Adam's step size for the logits (official default 0.025).
      weight_decay: the logits' weight decay $\gamma$ (official default 0.001).
      min_losses: lower bounds $L^*_k$ subtracted from the losses (default 0).

    Examples:
      >>> import jax.numpy as jnp, camegrad_jax as cg
      >>> w = cg.weightings.famo()
      >>> coeffs, state = w.weigh(jnp.eye(2), w.init(2), losses=jnp.array([1.0, 3.0]))
      >>> coeffs  # equal logits: inverse-loss weights that sum to 1
      Array([0.75, 0.25], dtype=float32)

    References:
      Liu, Liu, Stone and Liu, *FAMO: Fast Adaptive Multitask Optimization*, NeurIPS 2023.
    """
    check_in_range("learning_rate", learning_rate, 0.0, expected="a non-negative number")
    check_in_range("weight_decay", weight_decay, 0.0, expected="a non-negative number")
    adam = optax.adamw(learning_rate, weight_decay=weight_decay)

    def init(num_tasks: int) -> FamoState:
        logits = jnp.zeros((num_tasks,), jnp.float32)
        return FamoState(
            logits, adam.init(logits), jnp.ones((num_tasks,), jnp.float32), jnp.array(False)
        )

    def weigh(gram: Array, state: FamoState, **extra_args: Any) -> tuple[Array, FamoState]:
        shifted = _losses(extra_args, gram.shape[-1], "famo") - min_losses + 1e-8
        known = concrete(shifted)
        if known is not None and np.any(np.isfinite(known) & (known <= 0.0)):
            raise ValueError(
                "`famo` takes the log of `losses` - `min_losses`, which must be positive; got "
                f"losses {np.asarray(extra_args['losses']).tolist()} and min_losses "
                f"{np.asarray(min_losses).tolist()}."
            )
        decrease = jnp.log(state.previous_losses) - jnp.log(shifted)
        _, pullback = jax.vjp(jax.nn.softmax, state.logits)
        (grad,) = pullback(decrease)
        step, opt_state = adam.update(grad, state.optimizer_state, state.logits)
        logits = jnp.where(state.started, state.logits + step, state.logits)
        opt_state = jax.tree_util.tree_map(
            lambda new, old: jnp.where(state.started, new, old), opt_state, state.optimizer_state
        )
        weights = jax.nn.softmax(logits) / shifted
        # A traced non-positive loss: NaN coefficients make the aggregation skip the step.
        coeffs = jnp.where(jnp.all(shifted > 0.0), weights / jnp.sum(weights), jnp.nan)
        return coeffs.astype(gram.dtype), FamoState(logits, opt_state, shifted, jnp.array(True))

    return Weighting(init, weigh, uses_gram=False)
