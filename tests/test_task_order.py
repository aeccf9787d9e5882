"""The sort-free task order (`ranks`, `sort_small`, `canonical_order`) against numpy's sorts."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from camegrad_jax.weightings._common import canonical_order, gram_scale, ranks, sort_small

K = 5
# One compilation per function for the whole file.
ranks_jit = jax.jit(ranks)
sort_jit = jax.jit(sort_small)
canonical_jit = jax.jit(canonical_order)


@pytest.mark.parametrize("seed", range(4))
def test_sort_small_matches_numpy_with_ties_and_nan(seed):
    rng = np.random.default_rng(seed)
    rows = rng.integers(-2, 3, size=(3, K)).astype(np.float32)  # many ties
    rows[1, rng.integers(K)] = np.nan
    rows[2, :2] = [np.inf, -np.inf]
    np.testing.assert_array_equal(np.asarray(sort_jit(jnp.asarray(rows))), np.sort(rows, axis=-1))


@pytest.mark.parametrize("seed", range(4))
def test_ranks_are_the_inverse_of_a_stable_lexsort(seed):
    rng = np.random.default_rng(seed)
    first, second = rng.integers(0, 3, size=(2, K)).astype(np.float32)
    if seed % 2:
        first[rng.integers(K)] = np.nan  # sorts last, as numpy puts NaN
    got = np.asarray(ranks_jit(jnp.asarray(first), jnp.asarray(second)))
    expected = np.argsort(np.lexsort((second, first)), kind="stable")
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("seed", range(3))
def test_canonical_order_does_not_depend_on_the_tasks_positions(seed):
    """Two orders of the same tasks give the same canonical Gram matrix to the last bit, and
    ``rank`` inverts ``order``; the diagonal ties are broken by the rows."""
    rng = np.random.default_rng(seed)
    jac = rng.standard_normal((K, 7)).astype(np.float32)
    jac /= np.linalg.norm(jac, axis=1, keepdims=True)  # equal norms: the row key decides
    gram = jac @ jac.T
    perm = rng.permutation(K)
    canonical = []
    for matrix in (gram, gram[perm][:, perm]):
        order, rank = (np.asarray(x) for x in canonical_jit(jnp.asarray(matrix)))
        np.testing.assert_array_equal(order[rank], np.arange(K))
        canonical.append(matrix[order][:, order])
    np.testing.assert_array_equal(canonical[0], canonical[1])


def test_trace_is_the_same_to_the_last_bit_in_every_order():
    rng = np.random.default_rng(0)
    diag = (10.0 ** rng.uniform(-4, 4, K)).astype(np.float32)
    scales = {
        float(jax.jit(gram_scale)(jnp.diag(jnp.asarray(diag[perm])))[0])
        for perm in (rng.permutation(K) for _ in range(6))
    }
    assert len(scales) == 1
    assert scales.pop() == pytest.approx(float(np.sum(diag.astype(np.float64))), rel=1e-6)
