"""The Weighting protocol: a Gram matrix (and a state) in, one coefficient per task out."""

from __future__ import annotations

from typing import Any, NamedTuple, Protocol

import jax

from camegrad_jax._precision import float32_products

Array = jax.Array
WeightingState = Any


class WeightingInitFn(Protocol):
    def __call__(self, num_tasks: int) -> WeightingState: ...


class WeightingWeighFn(Protocol):
    def __call__(
        self, gram: Array, state: WeightingState, **extra_args: Any
    ) -> tuple[Array, WeightingState]: ...


class _WeightingFields(NamedTuple):
    init: WeightingInitFn
    weigh: WeightingWeighFn
    uses_gram: bool = True
    scale_invariant: bool = False
    uses_jacobian_scale: bool = False


class Weighting(_WeightingFields):
    r"""A pair of pure functions mapping the K×K Gram matrix to K combination coefficients.

    ``state = init(num_tasks)`` builds the state (its shapes depend on K only);
    ``coeffs, state = weigh(gram, state, **extra_args)`` returns the ``(K,)`` coefficients
    $c$ of the update $d = J^\top c$. ``extra_args`` are the keyword arguments given
    to the transformation's ``update`` (e.g. per-step ``task_weights``); a weighting ignores
    those it does not use. Diagnostics live in the state, so ``optax.tree.get`` reads them.

    Three declarations tell [`aggregate`][camegrad_jax.aggregate] which Gram matrix to pass:

    - ``uses_gram=False``: the coefficients never depend on the Gram matrix's values (fixed,
      random or loss-based weightings). No $O(K^2 n)$ contraction is made; the weighting gets a
      zero matrix of the right shape and dtype, and a NaN or Inf in $J$ is found from the
      update $J^\top c$, so the step costs one pass over $J$, like a summed loss.
    - ``scale_invariant=True``: the coefficients of $sJ$ equal those of $J$ for every
      $s > 0$. The weighting may then get the Gram matrix of $J/s$, with $s$ a power of two
      chosen where float32 would overflow or underflow ($s = 1$ otherwise).
    - ``uses_jacobian_scale=True``: the weighting is not scale invariant but maps its
      coefficients back itself: it gets the Gram matrix of $J/s$ and ``jacobian_scale=s``
      (Nash-MTL, FairGrad).

    A weighting that declares neither (the default) gets the true Gram matrix $JJ^\top$,
    computed once; where it overflows the step is skipped and counted, never silently rescaled.

    ``weigh`` is kept wrapped so that its matrix products are float32 on every backend (not
    TensorFloat-32 on a GPU nor bfloat16 on a TPU, JAX's defaults there): a solver reading
    the K×K Gram matrix needs its digits, and such products cost nothing that matters.
    """

    __slots__ = ()

    def __new__(
        cls,
        init: WeightingInitFn,
        weigh: WeightingWeighFn,
        uses_gram: bool = True,
        scale_invariant: bool = False,
        uses_jacobian_scale: bool = False,
    ) -> Weighting:
        return super().__new__(
            cls, init, float32_products(weigh), uses_gram, scale_invariant, uses_jacobian_scale
        )
