r"""Float32 products on every backend, for the Gram matrix, $J^\top c$ and every K×K solve.

JAX lets an accelerator round the inputs of a float32 matrix product unless told otherwise:
recent NVIDIA GPUs to TensorFloat-32 (a 10-bit mantissa, relative error about $5\cdot10^{-4}$)
and TPUs to bfloat16 (8 bits, about $4\cdot10^{-3}$); a CPU computes it in float32. The
weightings' solvers cannot live with that: a stage-1 gap of $10^{-5}$, an active set or a
near-singular system read off a Gram matrix whose entries are only three digits right is no
longer the method. The products here are small (K×K) or read the Jacobian once (the Gram
matrix, $J^\top c$), so they are memory-bound and full precision costs no time that matters.
The user's model keeps whatever precision the user chose.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import jax

FULL = jax.lax.Precision.HIGHEST
"""The ``precision`` of the library's own products: float32 (or the inputs' wider) arithmetic."""

F = TypeVar("F", bound=Callable[..., Any])


def float32_products(fn: F) -> F:
    """``fn`` with every matrix product it traces computed at `FULL` precision.

    The products that name no precision of their own (inside ``jnp.linalg`` too) take
    JAX's default, which this sets for the duration of the trace; nested ``jit`` functions
    are traced, and cached, under it.
    """

    @functools.wraps(fn)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        with jax.default_matmul_precision("highest"):
            return fn(*args, **kwargs)

    return wrapped  # type: ignore[return-value]
