"""The Weighting protocol: a Gram matrix (and a state) in, one coefficient per task out."""

from __future__ import annotations

from typing import Any, NamedTuple, Protocol

import jax

Array = jax.Array
WeightingState = Any


class WeightingInitFn(Protocol):
    def __call__(self, num_tasks: int) -> WeightingState: ...


class WeightingWeighFn(Protocol):
    def __call__(
        self, gram: Array, state: WeightingState, **extra_args: Any
    ) -> tuple[Array, WeightingState]: ...


class Weighting(NamedTuple):
    r"""A pair of pure functions mapping the K×K Gram matrix to K combination coefficients.

    ``state = init(num_tasks)`` builds the state (its shapes depend on K only);
    ``coeffs, state = weigh(gram, state, **extra_args)`` returns the ``(K,)`` coefficients
    $c$ of the update $d = J^\top c$. ``extra_args`` are the keyword arguments given
    to the transformation's ``update`` (e.g. per-step ``task_weights``); a weighting ignores
    those it does not use. [`aggregate`][camegrad_jax.aggregate] adds ``jacobian_scale``
    $s$: the Gram matrix it passes is that of $J/s$ ($s = 1$ unless float32 would overflow
    or underflow), which only weightings that are not scale invariant need. Diagnostics live
    in the state, so ``optax.tree.get`` reads them.

    ``uses_gram=False`` declares that the coefficients never depend on the Gram matrix's
    values (fixed, random or loss-based weightings): [`aggregate`][camegrad_jax.aggregate]
    then skips the $O(K^2 n)$ contraction, passes a zero matrix of the right shape and dtype,
    and finds a NaN or Inf in $J$ from the update $J^\top c$ instead, so the step costs one
    pass over $J$, like a summed loss.
    """

    init: WeightingInitFn
    weigh: WeightingWeighFn
    uses_gram: bool = True
