r"""PCGrad (gradient surgery) in Gram space, with its random projection orders in the state.

Every projected gradient stays a combination of the task gradients, $g_i^{PC} = J^\top v_i$,
so projecting it away from $g_j$ only changes the coefficient $v_{ij}$, and the inner product
it needs is $\langle g_j, g_i^{PC}\rangle = (Gv_i)_j$. The update is
$d = \sum_i g_i^{PC} = J^\top\sum_i v_i$.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from camegrad_jax._checks import concrete
from camegrad_jax._weighting import Weighting
from camegrad_jax.weightings._common import key_data, split_key_data

Array = jax.Array


class PCGradState(NamedTuple):
    """State and diagnostics of the PCGrad weighting (read with ``optax.tree.get``).

    Attributes:
      key: the PRNG key (``uint32[2]``) the next step's orders are drawn from; every step
        splits it (`projection_orders`).
      orders: ``(K, K)`` int32, the orders used at the last step: task i was projected
        against ``orders[i, 0]``, then ``orders[i, 1]``, ... (itself skipped). Before the first
        step every row is ``0, 1, ..., K-1``.
    """

    key: Array
    orders: Array


def projection_orders(key: Array, num_tasks: int) -> tuple[Array, Array]:
    """The next key and the step's ``(K, K)`` orders, one independent permutation per task.

    ``key`` is raw key data (`split_key_data`); row i of the orders is
    ``jax.random.permutation(k_i, K)`` with ``k_0, ..., k_{K-1} =
    jax.random.split(step_key, K)``.
    """
    key, step_key = split_key_data(key)
    task_keys = jax.random.split(step_key, num_tasks)
    orders = jax.vmap(lambda k: jax.random.permutation(k, num_tasks))(task_keys)
    return key, orders.astype(jnp.int32)


def pcgrad_coefficients(gram: Array, orders: Array) -> Array:
    r"""$c = \sum_i v_i$ after projecting each $g_i$ away from the gradients it conflicts with.

    For task i and $j$ = ``orders[i, t]`` ($t = 0, \dots, K-1$, $j \ne i$): if
    $\langle g_j, g_i^{PC}\rangle = (Gv_i)_j < 0$, then
    $g_i^{PC} \leftarrow g_i^{PC} - \frac{(Gv_i)_j}{G_{jj}}\,g_j$, i.e.
    $v_{ij} \leftarrow v_{ij} - (Gv_i)_j / G_{jj}$. The K tasks advance together through a
    static loop over the K positions. A zero gradient ($G_{jj} = 0$) has no conflict.
    """
    num_tasks = gram.shape[-1]
    tasks = jnp.arange(num_tasks)
    diagonal = jnp.diagonal(gram)

    def body(t, coeffs):
        other = orders[:, t]
        inner = jnp.sum(gram[other] * coeffs, axis=1)  # <g_j, g_i^PC> for j = other[i]
        norm_sq = diagonal[other]
        conflict = (other != tasks) & (inner < 0.0) & (norm_sq > 0.0)
        step = jnp.where(conflict, inner / jnp.where(conflict, norm_sq, 1.0), 0.0)
        return coeffs.at[tasks, other].add(-step)

    projected = jax.lax.fori_loop(0, num_tasks, body, jnp.eye(num_tasks, dtype=gram.dtype))
    return jnp.sum(projected, axis=0)


def _check_seed(seed: Any) -> None:
    known = concrete(seed)
    if known is None:
        return
    if known.shape != () or not np.issubdtype(known.dtype, np.integer):
        raise ValueError(
            f"`seed` must be an integer (the PRNG seed of the projection orders); got {seed!r}."
        )


def pcgrad(seed: int = 0) -> Weighting:
    r"""PCGrad (Yu et al., NeurIPS 2020): project away conflicting components, then sum.

    For each task i, in a random order of the other tasks j, the gradient being built,
    $g_i^{PC}$ (initially $g_i$), loses its component along $g_j$ when the two conflict:

    $$
    g_i^{PC} \leftarrow g_i^{PC} - \frac{\min(0, \langle g_i^{PC}, g_j\rangle)}{\|g_j\|^2}\,g_j ,
    \qquad d = \sum_i g_i^{PC} .
    $$

    This follows the paper's Algorithm 1 and TorchJD: the original $g_j$ (not the projected
    ones) are projected against, each task has its own random order, and the projected
    gradients are summed (the authors' PyTorch re-implementation in the CAGrad repository
    takes their mean instead, $d/K$). Everything is done in Gram space (module docstring),
    with a static loop over the K positions of the orders.

    Randomness is explicit: the state holds a PRNG key, split every step
    (`projection_orders`), and the orders
    used at the last step are a diagnostic. For K = 2 the order does not matter and PCGrad
    equals [`upgrad`][camegrad_jax.weightings._projection.upgrad] with ``pref_vector = ones``.

    Args:
      seed: the seed of the PRNG key in the state (a Python int; not a hyperparameter to
        inject: the key is drawn at ``init``).

    Returns:
      A [`Weighting`][camegrad_jax.Weighting] whose state is a
      [`PCGradState`][camegrad_jax.weightings._pcgrad.PCGradState].

    Examples:
      >>> import jax.numpy as jnp
      >>> from camegrad_jax.weightings import pcgrad
      >>> jac = jnp.array([[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]])  # TorchJD's example
      >>> weighting = pcgrad()
      >>> coeffs, state = weighting.weigh(jac @ jac.T, weighting.init(2))
      >>> coeffs  # (1 + 22/18, 1 + 22/38), as TorchJD's [2.2222, 1.5789]
      Array([2.2222, 1.5789], dtype=float32)

    References:
      Yu, Kumar, Gupta, Levine, Hausman and Finn, *Gradient Surgery for Multi-Task Learning*,
      NeurIPS 2020 (arXiv:2001.06782), Algorithm 1; TorchJD (github.com/SimplexLab/TorchJD),
      ``PCGrad``.
    """
    _check_seed(seed)

    def init(num_tasks: int) -> PCGradState:
        orders = jnp.broadcast_to(jnp.arange(num_tasks, dtype=jnp.int32), (num_tasks, num_tasks))
        return PCGradState(key=key_data(seed), orders=orders)

    def weigh(gram: Array, state: PCGradState, **extra_args: Any) -> tuple[Array, PCGradState]:
        del extra_args
        key, orders = projection_orders(state.key, gram.shape[-1])
        coeffs = pcgrad_coefficients(gram, orders)
        return coeffs.astype(gram.dtype), PCGradState(key=key, orders=orders)

    return Weighting(init, weigh, scale_invariant=True)
