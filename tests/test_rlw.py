"""Random Loss Weighting: the distribution of its weights, its seed, the contract."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from contract import Subject, contract_cases

import camegrad_jax as cg
from camegrad_jax.weightings import rlw


@functools.partial(jax.jit, static_argnames=("num_tasks", "num_steps", "seed"))
def _random_steps(num_tasks: int, num_steps: int, seed: int = 0):
    weighting = rlw(seed)

    def step(state, _):
        coeffs, state = weighting.weigh(jnp.eye(num_tasks), state)
        return state, coeffs

    return jax.lax.scan(step, weighting.init(num_tasks), None, length=num_steps)[1]


def test_random_weights_on_the_simplex_and_changing():
    coeffs = np.asarray(_random_steps(4, 4000), np.float64)
    assert coeffs.shape == (4000, 4)
    assert np.all(coeffs > 0.0)
    np.testing.assert_allclose(coeffs.sum(axis=1), 1.0, atol=1e-6)
    assert np.all(np.abs(np.diff(coeffs, axis=0)).max(axis=1) > 1e-4)  # every step differs


def test_random_distribution():
    """E[c_k] = 1/K, and log(c_i / c_j) = z_i - z_j ~ N(0, 2) (softmax of a standard normal)."""
    coeffs = np.asarray(_random_steps(4, 4000), np.float64)
    np.testing.assert_allclose(coeffs.mean(axis=0), 0.25, atol=0.01)
    log_ratio = np.log(coeffs[:, 0] / coeffs[:, 1])
    assert abs(log_ratio.mean()) < 0.1
    assert abs(log_ratio.var() - 2.0) < 0.2
    # z - mean(z) is recovered exactly from the log-coefficients: its per-step variance is 1.
    centred = np.log(coeffs) - np.log(coeffs).mean(axis=1, keepdims=True)
    assert abs(centred.var(axis=1, ddof=1).mean() - 1.0) < 0.05


def test_random_reproducible_by_seed():
    a = np.asarray(_random_steps(3, 5, seed=0))
    np.testing.assert_array_equal(a, np.asarray(_random_steps(3, 5, seed=0)))
    assert not np.allclose(a, np.asarray(_random_steps(3, 5, seed=1)))


def test_random_ignores_the_gram():
    weighting = rlw(3)
    state = weighting.init(3)
    c1, s1 = weighting.weigh(jnp.eye(3), state)
    c2, s2 = weighting.weigh(jnp.ones((3, 3)) * 7.0, state)
    np.testing.assert_array_equal(np.asarray(c1), np.asarray(c2))
    np.testing.assert_array_equal(np.asarray(s1.key), np.asarray(s2.key))
    assert s1.key.dtype == jnp.uint32


# ---------------------------------------------------------------------------------------------
# The contract suite.

SUBJECTS = [Subject("random-K3", cg.rlw, {}, {"num_tasks": 3, "seed": 0}, 3)]


@pytest.mark.parametrize(("subject", "check"), contract_cases(SUBJECTS, SUBJECTS, eager=True))
def test_contract(subject, check):
    check(subject)
