r"""Random Loss Weighting: coefficients drawn afresh at every step, independent of the gradients."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax

from camegrad_jax._weighting import Weighting
from camegrad_jax.weightings._common import key_data, split_key_data

Array = jax.Array


class RandomState(NamedTuple):
    """State of the [`rlw`][camegrad_jax.weightings.rlw] weighting.

    Attributes:
      key: the raw data (``uint32``) of the PRNG key the next step splits; wrap it with
        ``jax.random.wrap_key_data`` to use it as a key.
    """

    key: Array


def rlw(seed: int = 0) -> Weighting:
    r"""Random Loss Weighting (RLW, Lin et al., TMLR 2022): $c = \operatorname{softmax}(z)$.

    At every step $z \sim \mathcal N(0, I_K)$ is drawn from a PRNG key kept in the state
    (split at every step) and the coefficients are its softmax,
    $c_k = e^{z_k} / \sum_j e^{z_j}$, so $c \in \Delta_K$ and $\mathbb E[c_k] = 1/K$.
    The Gram matrix is not used (only its size and dtype), so RLW is also a linear
    scalarisation of the losses with random weights. The normal distribution and the
    softmax normalisation are the paper's default (its "Normal" RLW), as in LibMTL's ``RLW``.

    Args:
      seed: the integer seed of the first key. It is read by ``init`` only, so it is a static
        argument (under ``optax.inject_hyperparams`` pass it in ``static_args``); two weightings
        with the same seed draw the same coefficients.

    Returns:
      A [`Weighting`][camegrad_jax.Weighting] whose state is a
      [`RandomState`][camegrad_jax.weightings.RandomState].

    Examples:
      >>> import jax.numpy as jnp
      >>> weighting = rlw(seed=0)
      >>> coeffs, state = weighting.weigh(jnp.eye(3), weighting.init(3))
      >>> coeffs.shape, bool(jnp.all(coeffs > 0)), round(float(coeffs.sum()), 5)
      ((3,), True, 1.0)

    References:
      Lin, Ye, Xu, Shi and Zhang, *Reasonable Effectiveness of Random Weighting: A Litmus Test
      for Multi-Task Learning*, TMLR 2022 (arXiv:2111.10603).
    """

    def init(num_tasks: int) -> RandomState:
        del num_tasks
        return RandomState(key=key_data(seed))

    def weigh(gram: Array, state: RandomState, **extra_args: Any) -> tuple[Array, RandomState]:
        del extra_args
        key, subkey = split_key_data(state.key)
        logits = jax.random.normal(subkey, (gram.shape[-1],), gram.dtype)
        return jax.nn.softmax(logits), RandomState(key=key)

    return Weighting(init, weigh, uses_gram=False)
