"""ConFIG against a float64 reference, published values and the contract."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from contract import Subject, run_contract
from helpers import J_BASE, full_rank_jacobian
from references import config_np

import camegrad_jax as cg
from camegrad_jax.weightings._config import config


@jax.jit
def _config_coeffs(gram, pref):
    return config(pref_vector=pref).weigh(gram, None)[0]


def config_update(jac, pref=None):
    """Our ConFIG update Jᵀc for a float64 Jacobian (Gram in float32), in float64."""
    pref = np.ones(jac.shape[0]) if pref is None else pref
    coeffs = _config_coeffs(jnp.asarray(jac @ jac.T, jnp.float32), jnp.asarray(pref, jnp.float32))
    return jac.T @ np.asarray(coeffs, np.float64), np.asarray(coeffs, np.float64)


def test_config_torchjd_value():
    update, _ = config_update(J_BASE)
    np.testing.assert_allclose(update, [0.1588, 2.0706, 2.0706], atol=1e-4)


@pytest.mark.parametrize("k", [2, 3, 5])
def test_config_equal_cosines_and_float64_reference(k):
    rng = np.random.default_rng(k)
    worst = 0.0
    for _ in range(5):
        jac = full_rank_jacobian(rng, k)
        update, _ = config_update(jac)
        cosines = jac @ update / (np.linalg.norm(jac, axis=1) * np.linalg.norm(update))
        np.testing.assert_allclose(cosines, cosines[0], atol=1e-5)
        assert cosines[0] > 0.0
        expected = config_np(jac)
        worst = max(worst, np.linalg.norm(update - expected) / np.linalg.norm(expected))
        # Preferences: cos(g_i, d) is proportional to p_i.
        pref = rng.uniform(0.5, 2.0, k)
        update, _ = config_update(jac, pref)
        cosines = jac @ update / (np.linalg.norm(jac, axis=1) * np.linalg.norm(update))
        np.testing.assert_allclose(cosines / pref, cosines[0] / pref[0], rtol=1e-4)
        np.testing.assert_allclose(update, config_np(jac, pref), rtol=1e-4, atol=1e-6)
    assert worst < 1e-5, worst


def test_config_rank_deficient_and_zero_task_match_pinv():
    rng = np.random.default_rng(7)
    basis = rng.standard_normal((2, 8))
    rank_two = rng.standard_normal((5, 2)) @ basis  # five gradients in a plane
    update, coeffs = config_update(rank_two)
    assert np.all(np.isfinite(coeffs))
    np.testing.assert_allclose(update, config_np(rank_two), rtol=1e-4, atol=1e-6)
    # A zero task is ignored: the others get their own ConFIG update.
    jac = full_rank_jacobian(rng, 5)
    jac[2] = 0.0
    update, coeffs = config_update(jac)
    assert coeffs[2] == 0.0
    np.testing.assert_allclose(update, config_np(np.delete(jac, 2, axis=0)), rtol=1e-4)
    update, coeffs = config_update(np.zeros((5, 8)))
    np.testing.assert_array_equal(coeffs, np.zeros(5))


@pytest.mark.parametrize("gap", [2e-5, 4e-6, 1e-6])
def test_config_nearly_opposed_gradients_keep_their_bisector(gap):
    """1 + cos(g1, g2) = gap: the update is the small bisector, not zero (CAGrad toy's end game).

    The unit-gradient matrix's smallest eigenvalue is ``gap``; a pseudo-inverse cut-off above it
    stalls ConFIG short of the Pareto set (it once did, at 1 + cos ~ 5e-6).
    """
    d = 1.4 * np.sqrt(gap / 2)
    jac = np.array([[-1.4, d, 0.3 * d], [1.4, d, -0.1 * d]]) * np.array([[3.0], [0.5]])
    units = jac / np.linalg.norm(jac, axis=1, keepdims=True)
    assert 0.5 * gap < 1.0 + units[0] @ units[1] < 2.0 * gap
    update, _ = config_update(jac)
    expected = config_np(jac)
    assert np.linalg.norm(update - expected) <= 1e-4 * np.linalg.norm(expected)


def test_config_scale_invariant_coefficients_and_least_square_flag():
    rng = np.random.default_rng(8)
    jac = full_rank_jacobian(rng, 3)
    _, base = config_update(jac)
    for s in (1e-4, 3.0, 1e5):
        _, scaled = config_update(s * jac)
        np.testing.assert_allclose(scaled, base, rtol=1e-4)
    gram = jnp.asarray(jac @ jac.T, jnp.float32)
    lstsq = config(use_least_square=True).weigh(gram, None)[0]
    pinv = config(use_least_square=False).weigh(gram, None)[0]
    np.testing.assert_array_equal(lstsq, pinv)


def test_config_rejects_bad_arguments():
    with pytest.raises(ValueError, match="pref_vector"):
        config(pref_vector=jnp.array([1.0, -1.0]))
    with pytest.raises(ValueError, match="pref_vector"):
        config(pref_vector=jnp.ones((2, 2)))
    with pytest.raises(ValueError, match="pref_vector"):
        config(pref_vector=jnp.ones(2)).init(3)
    with pytest.raises(TypeError, match="use_least_square"):
        config(use_least_square=1)


# --------------------------------------------------------------------------------------------
# Contract
# --------------------------------------------------------------------------------------------

SUBJECTS = [
    Subject(
        "config-K3-pref",
        cg.transformation(config),
        {"pref_vector": jnp.array([1.0, 2.0, 1.0])},
        {"num_tasks": 3},
        3,
    ),
]


@pytest.mark.parametrize("subject", SUBJECTS, ids=[s.name for s in SUBJECTS])
def test_contract(subject):
    run_contract(subject, {"pref_vector": jnp.array([2.0, 0.5, 1.0])})
