r"""Safe-where numerics: the plain value, with a derivative that stays finite where it would not.

``jnp.where(c, f(x), y)`` has a NaN derivative wherever ``f``'s derivative at ``x`` is infinite,
even where ``c`` is False: the backward pass multiplies the zero cotangent by infinity. The
functions here evaluate ``f`` at a harmless point instead, so ``jax.grad`` of an update through
the aggregation stays finite at identical, zero or opposite gradients (meta-learning through
the optimizer).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array


def safe_sqrt(x: Array) -> Array:
    r"""$\sqrt{\max(x, 0)}$, with derivative 0 (not $\infty$) where $x \le 0$."""
    positive = x > 0.0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, x, 1.0)), 0.0)


def safe_norm(x: Array, axis: int | None = None) -> Array:
    r"""$\|x\|_2$ of a vector (or of each slice along ``axis``), with derivative 0 (not NaN)
    at $x = 0$."""
    return safe_sqrt(jnp.sum(x * x, axis=axis))


def psd_sqrt(gram: Array) -> Array:
    r"""A K×K factor $L$ with $L^\top L = G$ (negative round-off eigenvalues dropped).

    Working with $\|L w\|$ instead of $\sqrt{w^\top G w}$ avoids the cancellation
    that makes the quadratic form meaningless in float32 near its null space.
    """
    eigvals, eigvecs = jnp.linalg.eigh(gram)
    return safe_sqrt(eigvals)[:, None] * eigvecs.T


def cosines(gram: Array) -> Array:
    r"""Pairwise cosines $G_{ij} / \sqrt{G_{ii}G_{jj}}$ (0 for a zero gradient)."""
    norms = safe_sqrt(jnp.diagonal(gram))
    outer = norms[:, None] * norms[None, :]
    return jnp.where(outer > 0.0, gram / jnp.where(outer > 0.0, outer, 1.0), 0.0)
