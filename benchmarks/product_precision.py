"""Stage 1's accuracy when float32 products round their inputs, as a GPU's or TPU's default does.

Unasked, JAX lets a recent NVIDIA GPU round the inputs of a float32 matrix product to
TensorFloat-32 (11 significant bits) and a TPU to bfloat16 (8); a CPU computes it in float32.
That is emulated here, on any backend: while a function is traced, every ``dot_general`` that
does not ask for HIGHEST precision has its float32 inputs rounded first. For each rounding the
table gives the worst relative stage-1 gap of the exact solver (support enumeration) against
the float64 oracle on ``benchmarks.device``'s problems, away from the dual's kink and at it,
with the library's products as shipped (float32, ``camegrad_jax/_precision.py``) and left at
the backend's default, as they were before they asked. Run::

    python -m benchmarks.product_precision [--quick]
        [--out outputs/benchmarks/product_precision.json]
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from jax._src.lax import lax as lax_internal

import camegrad_jax as cg
from benchmarks import _stage1, device
from benchmarks import _timing as timing


def to_tf32(x: jax.Array) -> jax.Array:
    """float32 ``x`` rounded to the nearest TensorFloat-32 value (10 stored mantissa bits, ties
    to even), kept in float32."""
    bits = jax.lax.bitcast_convert_type(x.astype(jnp.float32), jnp.uint32)
    bits = (bits + jnp.uint32(0xFFF) + ((bits >> 13) & jnp.uint32(1))) & jnp.uint32(0xFFFFE000)
    return jax.lax.bitcast_convert_type(bits, jnp.float32)


def to_bf16(x: jax.Array) -> jax.Array:
    """float32 ``x`` rounded to the nearest bfloat16 value, kept in float32."""
    return x.astype(jnp.bfloat16).astype(jnp.float32)


ROUNDINGS: dict[str, Callable[[jax.Array], jax.Array] | None] = {
    "none": None,
    "tf32": to_tf32,
    "bf16": to_bf16,
}


@contextlib.contextmanager
def rounded_products(rounding: Callable[[jax.Array], jax.Array] | None) -> Iterator[None]:
    """While active, products traced without HIGHEST precision see their float32 inputs
    rounded by ``rounding`` (None: unchanged). JAX's caches are cleared on the way in and
    out, so that no function traced outside is reused inside, nor the other way round."""
    original = lax_internal.dot_general

    def dot_general(
        lhs: Any, rhs: Any, dimension_numbers: Any, precision: Any = None, *args: Any, **kwargs: Any
    ) -> Any:
        asked = lax_internal.canonicalize_precision(precision)
        full = isinstance(asked, tuple) and all(p == jax.lax.Precision.HIGHEST for p in asked)
        floats = jnp.result_type(lhs) == jnp.float32 and jnp.result_type(rhs) == jnp.float32
        if rounding is not None and floats and not full:
            lhs, rhs = rounding(lhs), rounding(rhs)
        return original(lhs, rhs, dimension_numbers, precision, *args, **kwargs)

    jax.clear_caches()
    lax_internal.dot_general = dot_general  # what jax.numpy calls
    jax.lax.dot_general = dot_general  # what the library calls
    try:
        yield
    finally:
        lax_internal.dot_general = original
        jax.lax.dot_general = original
        jax.clear_caches()


def gaps(ks: Sequence[int]) -> list[dict[str, Any]]:
    """One row per (K, rounding, products) with the worst smooth and kink gaps."""
    rows = []
    for k in ks:
        solver = cg.DualSolver(enumerate_up_to=max(k, cg.DualSolver().enumerate_up_to))
        problems = device.stage1_problems(k)
        for rounding, fn in ROUNDINGS.items():
            for products in ("float32", "default"):
                with rounded_products(fn):
                    solve = _stage1.dual(solver, float32=products == "float32")
                    worst = _stage1.worst_gaps(solve, problems)
                rows.append({"k": k, "rounding": rounding, "products": products, **worst})
    return rows


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.product_precision", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--quick", action="store_true", help="K = 3 only (CI)")
    parser.add_argument(
        "--out",
        default="outputs/benchmarks/product_precision.json",
        help="JSON results (default outputs/benchmarks/product_precision.json)",
    )
    args = parser.parse_args(argv)
    rows = gaps((3,) if args.quick else (3, 4, 6, 8))
    print(f"{'K':>3}  {'rounding':>8}  {'products':>8}  {'gap smooth':>10}  {'gap kink':>10}")
    for r in rows:
        cells = f"{r['k']:>3}  {r['rounding']:>8}  {r['products']:>8}"
        print(f"{cells}  {r['smooth']:>10.2e}  {r['kink']:>10.2e}")
    payload = {"meta": timing.machine(), "rows": rows}
    print(f"wrote {timing.write_json(args.out, payload)}")
    return payload


if __name__ == "__main__":
    main()
