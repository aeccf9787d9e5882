"""IMTL-G against a float64 re-derivation, the paper's properties and the contract.

The reference works on the Jacobian itself (the paper's gradient-space formula), never on the Gram
matrix, so it shares no code path with the weighting.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from contract import Subject, contract_cases
from helpers import J_BASE, full_rank_cases, gram32, weigh_in_float64
from references import imtl_paper

import camegrad_jax as cg
from camegrad_jax.weightings._imtl import imtl_g


@jax.jit
def imtl_jit(gram):
    return imtl_g().weigh(gram, None)[0]


def imtl_np(jac: np.ndarray) -> np.ndarray:
    return np.asarray(imtl_jit(gram32(jac)), np.float64)


CASES, CASE_IDS = full_rank_cases()


def update_distance(jac: np.ndarray, c1: np.ndarray, c2: np.ndarray) -> float:
    d1, d2 = jac.T @ c1, jac.T @ c2
    return float(np.linalg.norm(d1 - d2) / max(np.linalg.norm(d2), 1e-3 * np.linalg.norm(jac)))


def test_imtl_torchjd_value():
    """TorchJD's IMTLGWeighting on J = [[-4, 1, 1], [6, 1, 1]] gives [0.5923, 0.4077]."""
    np.testing.assert_allclose(imtl_np(J_BASE), [0.5923, 0.4077], atol=1e-4)


@pytest.mark.parametrize("jac", CASES, ids=CASE_IDS)
def test_imtl_equal_projections_and_paper_formula(jac):
    coeffs = imtl_np(jac)
    assert coeffs.sum() == pytest.approx(1.0, abs=1e-5)
    projections = jac @ (jac.T @ coeffs) / np.linalg.norm(jac, axis=1)
    np.testing.assert_allclose(projections, projections.mean(), rtol=1e-4)
    np.testing.assert_allclose(coeffs, imtl_paper(jac), rtol=1e-4, atol=1e-5)


def test_imtl_negative_common_projection_follows_the_paper():
    """sum(alpha) = 1 is imposed literally: here the common projection is negative."""
    jac = np.array([[-0.2, -1.0, 0.6], [-0.2, -0.4, 0.5], [-0.5, 1.4, 0.4]])
    coeffs = imtl_np(jac)
    np.testing.assert_allclose(coeffs, imtl_paper(jac), rtol=1e-3)
    projections = jac @ (jac.T @ coeffs) / np.linalg.norm(jac, axis=1)
    np.testing.assert_allclose(projections, projections.mean(), rtol=1e-3)
    assert projections.mean() < 0.0


def test_imtl_duplicated_task():
    """A rank-deficient Gram (g_1 = g_2): equal projections still hold, same update as K - 1."""
    rng = np.random.default_rng(1)
    base = rng.standard_normal((3, 7))
    jac = np.concatenate([base[:1], base])
    coeffs = imtl_np(jac)
    assert np.all(np.isfinite(coeffs)) and coeffs.sum() == pytest.approx(1.0, abs=1e-5)
    projections = jac @ (jac.T @ coeffs) / np.linalg.norm(jac, axis=1)
    np.testing.assert_allclose(projections, projections.mean(), rtol=1e-3)
    assert (
        update_distance(base, imtl_paper(base), np.array([coeffs[0] + coeffs[1], *coeffs[2:]]))
        < 1e-3
    )


def test_imtl_zero_gradient_task():
    rng = np.random.default_rng(2)
    jac = rng.standard_normal((4, 9))
    jac[1] = 0.0
    coeffs = imtl_np(jac)
    assert coeffs[1] == 0.0
    rest = np.delete(jac, 1, axis=0)
    np.testing.assert_allclose(np.delete(coeffs, 1), imtl_paper(rest), rtol=1e-4, atol=1e-5)


def test_imtl_generic_rank_deficiency_matches_pinv_reference():
    """K = 4 gradients of rank 2: the least-squares (pseudo-inverse) generalisation, finite."""
    rng = np.random.default_rng(3)
    jac = rng.standard_normal((4, 2)) @ rng.standard_normal((2, 6))
    gram = jac @ jac.T
    v = np.linalg.pinv(gram, rcond=1e-10) @ np.sqrt(np.diag(gram))
    coeffs = imtl_np(jac)
    assert np.all(np.isfinite(coeffs))
    assert update_distance(jac, coeffs, v / v.sum()) < 1e-3


def test_imtl_scale_and_permutation():
    jac = CASES[4]
    coeffs = imtl_np(jac)
    np.testing.assert_array_equal(imtl_np(jac * 4.0), coeffs)
    for scale in (1e-15, 1e15):
        np.testing.assert_allclose(imtl_np(jac * scale), coeffs, rtol=1e-4, atol=1e-6)
    perm = np.array([2, 0, 1])
    np.testing.assert_allclose(imtl_np(jac[perm]), coeffs[perm], rtol=1e-4, atol=1e-6)


def test_imtl_zero_gram_gives_zeros():
    np.testing.assert_array_equal(np.asarray(imtl_jit(jnp.zeros((3, 3)))), 0.0)


def test_float64():
    jac = CASES[4]
    np.testing.assert_allclose(weigh_in_float64(imtl_g(), jac), imtl_paper(jac), rtol=1e-10)


# ---------------------------------------------------------------------------------------------
# The contract suite.

SUBJECTS = [Subject("imtl_g-K3", cg.transformation(imtl_g), {}, {"num_tasks": 3}, 3)]


# Op-by-op execution (eager) compiles every op: one closed form suffices, this one (for
# Aligned-MTL's too).
@pytest.mark.parametrize(("subject", "check"), contract_cases(SUBJECTS, SUBJECTS, eager=True))
def test_contract(subject, check):
    check(subject)
