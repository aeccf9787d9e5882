"""cg.gradient_dynamics against a float64 numpy re-derivation from the Jacobian itself."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import camegrad_jax as cg

dynamics = jax.jit(cg.gradient_dynamics)


def _reference(jac: np.ndarray, weights: np.ndarray) -> dict[str, object]:
    """Straight from the gradients (rows of ``jac``), not from the Gram matrix."""
    g = jac.astype(np.float64)
    norms = np.linalg.norm(g, axis=1)
    k = len(g)
    cos = np.zeros((k, k))
    for i in range(k):
        for j in range(k):
            if norms[i] > 0 and norms[j] > 0:
                cos[i, j] = g[i] @ g[j] / (norms[i] * norms[j])
    total = weights @ g
    with_sum = [
        g[i] @ total / (norms[i] * np.linalg.norm(total))
        if norms[i] > 0 and np.linalg.norm(total) > 0
        else 0.0
        for i in range(k)
    ]
    weighted = weights * norms
    active = weighted[weights > 0]
    return {
        "norms": norms,
        "cosines": cos,
        "weighted_norms": weighted,
        "conflict": any(cos[i, j] < 0 for i in range(k) for j in range(k) if i != j),
        "alignment": min(with_sum),
        "retention": np.linalg.norm(total) / weighted.sum() if weighted.sum() > 0 else 1.0,
        "dominance": active.max() / active.min() if active.min() > 0 else np.inf,
    }


CASES = {
    "random": (np.random.default_rng(0).normal(size=(3, 7)), np.array([1.0, 4.0, 0.5])),
    "aligned": (np.outer([1.0, 2.0], [0.3, -0.2, 0.9]), np.array([1.0, 1.0])),
    "opposite": (np.array([[1.0, 2.0], [-2.0, -4.0]]), np.array([2.0, 1.0])),
    "one zero": (np.array([[0.0, 0.0, 0.0], [1.0, 2.0, 3.0]]), np.array([1.0, 1.0])),
    "zero weight": (np.random.default_rng(1).normal(size=(3, 5)), np.array([1.0, 0.0, 2.0])),
}


@pytest.mark.parametrize("case", CASES)
def test_matches_float64_reference(case: str):
    jac, weights = CASES[case]
    got = dynamics(cg.gramian(jnp.asarray(jac, jnp.float32)), jnp.asarray(weights, jnp.float32))
    want = _reference(jac, weights)
    for name, value in want.items():
        np.testing.assert_allclose(
            np.asarray(getattr(got, name), np.float64), value, rtol=2e-5, atol=2e-6, err_msg=name
        )
    assert 0.0 <= float(got.retention) <= 1.0


def test_default_weights_vmap_and_bad_input():
    jac = np.random.default_rng(2).normal(size=(4, 2, 6))
    grams = jax.vmap(cg.gramian)(jnp.asarray(jac, jnp.float32))
    batched = jax.vmap(cg.gradient_dynamics)(grams)
    for step in range(4):
        want = _reference(jac[step], np.ones(2))
        np.testing.assert_allclose(batched.retention[step], want["retention"], rtol=2e-5)
        assert bool(batched.conflict[step]) == want["conflict"]
    with pytest.raises(ValueError, match="gram must be a square"):
        cg.gradient_dynamics(jnp.ones((2, 3)))
    with pytest.raises(ValueError, match=r"task_weights must have shape \(2,\)"):
        cg.gradient_dynamics(jnp.eye(2), jnp.ones(3))
