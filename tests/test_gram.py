"""`cg.gramian` and `cg.combine` against a float64 numpy reference, their dtype rules and errors."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import camegrad_jax as cg
from camegrad_jax._gram import blocked_rows_gram, fused_rows_gram

# Trailing shapes of the leaves of one task's gradient: a nested pytree with a list, so leaf
# paths mix dict keys and sequence indices.
TRAILING = {"w": (3, 2), "b": (4,), "nested": [(1, 2, 1), (2,)]}


def make_jac(k: int, dtype=jnp.float32, seed: int = 0):
    """A stacked Jacobian with leaves ``(K, *trailing)`` of ``dtype`` drawn from a normal."""
    rng = np.random.default_rng(seed)
    return jax.tree.map(
        lambda shape: jnp.asarray(rng.standard_normal((k, *shape)), dtype),
        TRAILING,
        is_leaf=lambda x: isinstance(x, tuple),
    )


def flat64(jac) -> np.ndarray:
    """The Jacobian as a float64 (K, n) numpy matrix: leaves flattened and concatenated."""
    leaves = jax.tree.leaves(jac)
    k = leaves[0].shape[0]
    return np.concatenate(
        [np.asarray(leaf).astype(np.float64).reshape(k, -1) for leaf in leaves],
        axis=1,
    )


# Eager dispatch compiles each leaf's ops separately; one jitted entry point per input signature
# is cheaper. Eager mode has its own tests.
gramian_jit = jax.jit(cg.gramian)
combine_jit = jax.jit(cg.combine)


def assert_close_to(gram, expected: np.ndarray, rtol: float) -> None:
    """Entrywise error at most ``rtol`` times the largest entry (entries may cancel to ~0)."""
    got = np.asarray(gram, np.float64)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=0, atol=rtol * np.max(np.abs(expected)))


# --- gramian --------------------------------------------------------------------------------


@pytest.mark.parametrize("k", [1, 3])
def test_gramian_float32_matches_float64_reference(k):
    jac = make_jac(k)
    gram = gramian_jit(jac)
    ref = flat64(jac)
    assert gram.dtype == jnp.float32
    assert gram.shape == (k, k)
    assert_close_to(gram, ref @ ref.T, 1e-6)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("k", [1, 3])
def test_gramian_low_precision_gives_float32(k, dtype):
    """The products of the rounded values are exact in float32: only the sums round."""
    jac = make_jac(k, dtype)
    gram = gramian_jit(jac)
    ref = flat64(jac)  # the float64 reference of the *rounded* values
    assert gram.dtype == jnp.float32
    assert_close_to(gram, ref @ ref.T, 1e-6)


def test_gramian_mixed_bf16_and_float32_leaves_gives_float32():
    jac = make_jac(3)
    jac["w"] = jac["w"].astype(jnp.bfloat16)
    gram = gramian_jit(jac)
    ref = flat64(jac)
    assert gram.dtype == jnp.float32
    assert_close_to(gram, ref @ ref.T, 1e-6)


@pytest.mark.parametrize("k", [1, 3])
def test_gramian_float64_under_x64(k):
    with jax.enable_x64(True):
        jac = make_jac(k, jnp.float64)
        assert all(leaf.dtype == jnp.float64 for leaf in jax.tree.leaves(jac))
        gram = gramian_jit(jac)
        ref = flat64(jac)
        assert gram.dtype == jnp.float64
        assert_close_to(gram, ref @ ref.T, 1e-13)


def test_gramian_is_symmetric():
    gram = np.asarray(gramian_jit(make_jac(3, seed=1)))
    np.testing.assert_array_equal(gram, gram.T)
    assert np.all(np.linalg.eigvalsh(gram.astype(np.float64)) > -1e-5 * np.trace(gram))


def test_gramian_eager():
    jac = make_jac(3)
    ref = flat64(jac)
    gram = cg.gramian(jac)
    assert gram.dtype == jnp.float32
    assert_close_to(gram, ref @ ref.T, 1e-6)


# --- combine --------------------------------------------------------------------------------


def unflatten_like(jac, flat: np.ndarray):
    """Splits a flat (n,) vector back into a pytree shaped like one task's gradient."""
    leaves, treedef = jax.tree.flatten(jac)
    sizes = [int(np.prod(leaf.shape[1:])) for leaf in leaves]
    pieces = np.split(flat, np.cumsum(sizes)[:-1])
    return jax.tree.unflatten(
        treedef, [p.reshape(leaf.shape[1:]) for p, leaf in zip(pieces, leaves, strict=True)]
    )


@pytest.mark.parametrize("k", [1, 3])
def test_combine_matches_numpy(k):
    jac = make_jac(k)
    coeffs = np.linspace(-1.0, 2.0, k)
    out = combine_jit(jac, jnp.asarray(coeffs, jnp.float32))
    expected = unflatten_like(jac, flat64(jac).T @ coeffs)
    assert jax.tree.structure(out) == jax.tree.structure(expected)
    for got, want in zip(jax.tree.leaves(out), jax.tree.leaves(expected), strict=True):
        assert got.dtype == jnp.float32
        assert got.shape == want.shape
        np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-6)


def test_combine_keeps_each_leaf_dtype():
    jac = make_jac(3)
    jac["w"] = jac["w"].astype(jnp.bfloat16)
    jac["nested"][1] = jac["nested"][1].astype(jnp.float16)
    coeffs = np.array([0.5, -1.0, 2.0])
    out = combine_jit(jac, jnp.asarray(coeffs, jnp.float32))
    for got, leaf in zip(jax.tree.leaves(out), jax.tree.leaves(jac), strict=True):
        assert got.dtype == leaf.dtype
    expected = unflatten_like(jac, flat64(jac).T @ coeffs)
    # bf16 output: one rounding of the float32-accumulated result (8 bits of mantissa).
    np.testing.assert_allclose(
        np.asarray(out["w"], np.float64), expected["w"], rtol=2**-7, atol=1e-2
    )
    np.testing.assert_allclose(np.asarray(out["b"]), expected["b"], rtol=1e-5, atol=1e-6)


def test_combine_eager():
    jac = make_jac(3)
    jac["w"] = jac["w"].astype(jnp.bfloat16)
    coeffs = np.array([1.0, 0.25, -0.5])
    out = cg.combine(jac, jnp.asarray(coeffs, jnp.float32))
    assert out["w"].dtype == jnp.bfloat16 and out["b"].dtype == jnp.float32
    expected = unflatten_like(jac, flat64(jac).T @ coeffs)
    np.testing.assert_allclose(np.asarray(out["b"]), expected["b"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        np.asarray(out["w"], np.float64), expected["w"], rtol=2**-7, atol=1e-2
    )


def test_combine_float64_under_x64():
    with jax.enable_x64(True):
        jac = make_jac(3, jnp.float64)
        coeffs = np.array([1.0, -2.0, 0.5])
        out = combine_jit(jac, jnp.asarray(coeffs))
        expected = unflatten_like(jac, flat64(jac).T @ coeffs)
        for got, want in zip(jax.tree.leaves(out), jax.tree.leaves(expected), strict=True):
            assert got.dtype == jnp.float64
            np.testing.assert_allclose(np.asarray(got), want, rtol=1e-13, atol=1e-13)


# --- errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize("fn", [cg.gramian, lambda j: cg.combine(j, jnp.ones(3))])
def test_leading_axes_differ(fn):
    jac = {"a": jnp.ones((3, 2)), "b": [jnp.ones((3,)), jnp.ones((2, 4))]}
    msg = re.escape("['a'] has leading axis 3 but ['b'][1] has 2")
    with pytest.raises(ValueError, match=msg):
        fn(jac)


@pytest.mark.parametrize("fn", [cg.gramian, lambda j: cg.combine(j, jnp.ones(3))])
def test_scalar_leaf(fn):
    jac = {"a": jnp.ones((3, 2)), "s": jnp.float32(1.0)}
    with pytest.raises(
        ValueError, match=re.escape("leaf ['s'] is a scalar") + ".*leading task axis"
    ):
        fn(jac)


@pytest.mark.parametrize("fn", [cg.gramian, lambda j: cg.combine(j, jnp.ones(3))])
def test_integer_leaf(fn):
    jac = {"a": jnp.ones((3, 2)), "count": jnp.ones((3, 2), jnp.int32)}
    msg = re.escape("leaf ['count'] has dtype int32") + ".*expected floating-point"
    with pytest.raises(TypeError, match=msg):
        fn(jac)


@pytest.mark.parametrize("empty", [{}, [], None], ids=["dict", "list", "None"])
def test_empty_pytree(empty):
    with pytest.raises(ValueError, match=r"`jac` has no array leaves; expected .*\(K, \.\.\.\)"):
        cg.gramian(empty)
    with pytest.raises(ValueError, match="`jac` has no array leaves"):
        cg.combine(empty, jnp.ones(3))


@pytest.mark.parametrize("shape", [(2,), (4,), (3, 1), ()])
def test_combine_coeffs_wrong_shape(shape):
    jac = make_jac(3)
    msg = re.escape(f"`coeffs` has shape {shape}; expected (3,)")
    with pytest.raises(ValueError, match=msg):
        cg.combine(jac, jnp.ones(shape))


@pytest.mark.parametrize("n", [7 * 64, 7 * 64 + 5], ids=["whole-blocks", "tail"])
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16], ids=["f32", "bf16"])
def test_blocked_rows_gram_matches_float64_reference(n, dtype):
    """Σ_b R_b R_bᵀ over 64-column blocks (and the columns left over) is R Rᵀ."""
    rows = jax.random.normal(jax.random.key(1), (3, n), dtype)
    gram = jax.jit(blocked_rows_gram, static_argnums=(1, 2))(rows, 64, jnp.float32)
    exact = np.asarray(rows, np.float64) @ np.asarray(rows, np.float64).T
    assert gram.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(gram), exact, rtol=1e-5, atol=1e-5 * np.max(exact))


def test_gramian_of_a_long_leaf_runs_blocked_on_cpu():
    """A (4, 2^20 + 3) leaf (over 16 blocks of 2^15 columns) goes through the blocked loop on
    CPU, a reshaped (K, r, c) kernel included, and matches the float64 Gram matrix.

    XLA:CPU sums a block's products in an order of its own (jax 0.12.1 loses ~60 ulps on
    the diagonal), so the tolerance is 2e-5 of the largest entry; the 3 columns after the last
    block are scaled by 30, so leaving them out (or any block, 1/32 of the sum) errs by > 1e-3.
    """
    long = jax.random.normal(jax.random.key(2), (4, 1 << 20 | 3))
    jac = {
        "long": long.at[:, -3:].multiply(30.0),
        "kernel": jax.random.normal(jax.random.key(3), (4, 1 << 14, 64)),
    }
    hlo = jax.jit(cg.gramian).lower(jac).compile().as_text()
    assert len(re.findall(r"\bwhile\(", hlo)) == 2
    flat = np.concatenate([np.asarray(x, np.float64).reshape(4, -1) for x in jac.values()], 1)
    assert_close_to(cg.gramian(jac), flat @ flat.T, rtol=2e-5)


@pytest.mark.parametrize(
    "k, n",
    [(2, 3 * (1 << 15)), (3, 1 << 15), (2, (1 << 15) + 100), (3, (1 << 15) + 5)],
    ids=["K2-lanes256", "K3-lanes256", "K2-lanes-4-tail", "K3-tail"],
)
def test_gramian_of_a_few_long_rows_is_one_fused_pass_on_cpu(k, n):
    """For K <= 3 a long leaf's Gram matrix is one fused sum of row products on CPU (no loop,
    no product of the whole leaf) that matches float64 and is exactly symmetric.

    n = 2^15 + 100 has no power-of-two divisor of 64 lanes or more, and 2^15 + 5 none above 1:
    both fold 256 lanes and contract the columns left over apart, scaled by 30 so that
    dropping them errs by more than 1e-3.
    """
    rows = jax.random.normal(jax.random.key(4), (k, n))
    rows = rows.at[:, (n // 256) * 256 :].multiply(30.0)
    hlo = jax.jit(cg.gramian).lower({"rows": rows}).compile().as_text()
    tail = n % 256 if (n & -n) < 64 else 0
    assert not re.findall(r"\bwhile\(", hlo)
    assert len(re.findall(r"\bdot\(", hlo)) == (1 if tail else 0)
    assert not tail or f"f32[{k},{tail}]" in hlo
    gram = np.asarray(cg.gramian({"rows": rows}))
    exact = np.asarray(rows, np.float64) @ np.asarray(rows, np.float64).T
    np.testing.assert_array_equal(gram, gram.T)
    assert_close_to(gram, exact, rtol=2e-6)


def test_gramian_contracts_all_short_leaves_in_one_product():
    """Ten leaves under 1024 entries per task (a (K,) one, rank-3 ones, bf16 and float32) are
    one product side by side; a 2048-column leaf keeps its own. Each short leaf is scaled by
    a different factor, so leaving one out errs far beyond the float32 tolerance."""
    key = jax.random.key(6)
    shapes = [(), (3,), (5, 7), (2, 3, 4), (64,), (8, 8), (1,), (100,), (3, 1, 2), (1023,)]
    jac = {
        f"short{i}": (1.0 + i) * jax.random.normal(jax.random.fold_in(key, i), (2, *shape))
        for i, shape in enumerate(shapes)
    }
    jac["short3"] = jac["short3"].astype(jnp.bfloat16)
    jac["long"] = jax.random.normal(jax.random.fold_in(key, 99), (2, 2048))
    hlo = jax.jit(cg.gramian).lower(jac).compile().as_text()
    assert len(re.findall(r"\bdot\(", hlo)) == 2
    ref = flat64(jac)
    assert_close_to(gramian_jit(jac), ref @ ref.T, rtol=2e-6)


def test_fused_rows_gram_of_bf16_rows_accumulates_in_float32():
    """bf16 rows are widened before the products: the sum of 2^15 bf16 squares is exact to
    float32 rounding, far inside bf16's own 2^-8."""
    rows = jax.random.normal(jax.random.key(5), (2, 1 << 15), jnp.bfloat16)
    gram = jax.jit(fused_rows_gram, static_argnums=1)(rows, jnp.float32)
    exact = np.asarray(rows, np.float64) @ np.asarray(rows, np.float64).T
    assert gram.dtype == jnp.float32
    assert_close_to(gram, exact, rtol=1e-6)
