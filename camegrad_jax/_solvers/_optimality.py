r"""How far a solution is from optimal: the residual each solve returns with its solution.

For a convex $f$ on the simplex the Frank–Wolfe gap
$\nabla f(w)^\top w - \min_i \nabla_i f(w) \ge f(w) - f^*$ is zero exactly at a minimiser;
it is what the states report for the stage-1 dual and MGDA.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from camegrad_jax._numerics import safe_norm

Array = jax.Array


def conflict_dual_gap(gram: Array, factor: Array, linear: Array, radius: Array, w: Array) -> Array:
    r"""The Frank–Wolfe gap of $b^\top w + r\|Lw\|$ at ``w`` (0 where $Lw = 0$: no gradient)."""
    length = safe_norm(factor @ w)
    grad = linear + radius * (gram @ w) / jnp.where(length > 0.0, length, 1.0)
    return jnp.where(length > 0.0, grad @ w - jnp.min(grad), 0.0)


def min_norm_gap(gram: Array, w: Array) -> Array:
    r"""The Frank–Wolfe gap $w^\top Gw - \min_i (Gw)_i$ of $\tfrac12 w^\top Gw$ at ``w``."""
    grad = gram @ w
    return grad @ w - jnp.min(grad)
