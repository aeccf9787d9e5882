"""IMTL-G and Aligned-MTL against float64 re-derivations, the papers' properties and the contract.

The references work on the Jacobian itself (the IMTL-G paper's gradient-space formula, the SVD of
J for Aligned-MTL), never on the Gram matrix, so they share no code path with the weightings.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from contract import (
    Subject,
    check_compiles_once,
    check_dtypes,
    check_finite_on_hard_jacobians,
    check_inject_hyperparams,
    check_jit_matches_eager,
    check_state_stable,
    check_update_is_combination,
    check_vmap_over_jacobians_and_states,
)
from helpers import J_BASE
from references import aligned_reference, imtl_paper

import camegrad_jax as cg
from camegrad_jax.weightings._aligned_mtl import aligned_mtl, balance_transformation
from camegrad_jax.weightings._imtl import imtl_g

MODES = ("min", "median", "rmse")


def gram32(jac: np.ndarray) -> jax.Array:
    return cg.gramian(jnp.asarray(jac, jnp.float32))


@jax.jit
def imtl_jit(gram):
    return imtl_g().weigh(gram, None)[0]


_ALIGNED = {
    mode: jax.jit(lambda gram, mode=mode: aligned_mtl(mode).weigh(gram, None)[0]) for mode in MODES
}
_BALANCE = {
    mode: jax.jit(lambda gram, mode=mode: balance_transformation(gram, mode)) for mode in MODES
}


def imtl_np(jac: np.ndarray) -> np.ndarray:
    return np.asarray(imtl_jit(gram32(jac)), np.float64)


def aligned_np(jac: np.ndarray, mode: str = "min") -> np.ndarray:
    return np.asarray(_ALIGNED[mode](gram32(jac)), np.float64)


def full_rank_cases(seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    cases = []
    for k in (2, 3, 5):
        jac = rng.standard_normal((k, 2 * k + 1))
        cases.append(jac)
        conflicting = jac.copy()
        conflicting[-1] -= 1.5 * conflicting[0]
        cases.append(conflicting)
        cases.append(jac * rng.uniform(0.2, 5.0, (k, 1)))
    return cases


CASES = full_rank_cases()
CASE_IDS = [f"K{jac.shape[0]}-{i % 3}" for i, jac in enumerate(CASES)]


def update_distance(jac: np.ndarray, c1: np.ndarray, c2: np.ndarray) -> float:
    d1, d2 = jac.T @ c1, jac.T @ c2
    return float(np.linalg.norm(d1 - d2) / max(np.linalg.norm(d2), 1e-3 * np.linalg.norm(jac)))


# ---------------------------------------------------------------------------------------------
# IMTL-G.


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


# ---------------------------------------------------------------------------------------------
# Aligned-MTL.


def test_aligned_torchjd_value():
    """TorchJD's AlignedMTLWeighting (preference 1/K, scale_mode "min") gives [0.5591, 0.4083];
    ours sums the aligned gradients (preference 1), so it is twice that. For K = 2 the lower
    median is the smallest singular value: "median" is "min"."""
    np.testing.assert_allclose(aligned_np(J_BASE, "min") / 2, [0.5591, 0.4083], atol=1e-4)
    np.testing.assert_allclose(aligned_np(J_BASE, "median") / 2, [0.5591, 0.4083], atol=1e-4)
    np.testing.assert_allclose(
        aligned_np(J_BASE, "rmse"), aligned_reference(J_BASE, "rmse"), rtol=1e-5
    )


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("jac", CASES, ids=CASE_IDS)
def test_aligned_matches_float64_svd(jac, mode):
    np.testing.assert_allclose(aligned_np(jac, mode), aligned_reference(jac, mode), rtol=1e-4)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("jac", CASES, ids=CASE_IDS)
def test_aligned_gram_has_condition_number_one(jac, mode):
    """The stability criterion: B G B = s^2 I (full rank), i.e. aligned gradients are orthogonal
    and of equal length s; and the coefficients are B 1."""
    gram = gram32(jac)
    aligning = np.asarray(_BALANCE[mode](gram), np.float64)
    aligned = aligning @ (jac @ jac.T) @ aligning
    np.testing.assert_allclose(
        aligned, aligned[0, 0] * np.eye(jac.shape[0]), atol=2e-4 * aligned[0, 0]
    )
    np.testing.assert_allclose(aligning.sum(axis=1), aligned_np(jac, mode), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("mode", MODES)
def test_aligned_rank_deficient(mode):
    """K = 5 gradients of rank 3: finite, B G B = s^2 P on the range, the SVD reference of rank 3;
    rank one and a zero task stay finite."""
    rng = np.random.default_rng(4)
    jac = rng.standard_normal((5, 3)) @ rng.standard_normal((3, 11))
    coeffs = aligned_np(jac, mode)
    assert np.all(np.isfinite(coeffs))
    np.testing.assert_allclose(coeffs, aligned_reference(jac, mode, rank=3), rtol=1e-3, atol=1e-4)
    aligning = np.asarray(_BALANCE[mode](gram32(jac)), np.float64)
    aligned = aligning @ (jac @ jac.T) @ aligning
    eigvals = np.linalg.eigvalsh(aligned)
    np.testing.assert_allclose(eigvals[-3:], eigvals[-1], rtol=1e-3)  # condition number 1
    assert np.all(np.abs(eigvals[:2]) < 1e-4 * eigvals[-1])
    for hard in (np.outer(np.arange(1.0, 6.0), jac[0]), np.concatenate([0 * jac[:1], jac[1:]])):
        assert np.all(np.isfinite(aligned_np(hard, mode)))


def test_aligned_median_is_the_lower_median():
    """Singular values 4, 3, 2, 1 (K = 4, even rank): the lower median is 2."""
    jac = np.diag([4.0, 3.0, 2.0, 1.0])
    np.testing.assert_allclose(
        aligned_np(jac, "median"), 2.0 / np.array([4.0, 3.0, 2.0, 1.0]), rtol=1e-6
    )
    np.testing.assert_allclose(
        aligned_np(jac[:3, :3], "median"), 3.0 / np.array([4.0, 3.0, 2.0]), rtol=1e-6
    )
    np.testing.assert_allclose(
        aligned_np(jac, "rmse"), np.sqrt(7.5) / np.array([4.0, 3.0, 2.0, 1.0]), rtol=1e-6
    )
    np.testing.assert_allclose(
        aligned_np(jac, "min"), 1.0 / np.array([4.0, 3.0, 2.0, 1.0]), rtol=1e-6
    )


@pytest.mark.parametrize("mode", MODES)
def test_aligned_scale_invariance(mode):
    jac = CASES[7]
    coeffs = aligned_np(jac, mode)
    np.testing.assert_array_equal(aligned_np(jac * 0.25, mode), coeffs)
    for scale in (1e-15, 1e15):
        np.testing.assert_allclose(aligned_np(jac * scale, mode), coeffs, rtol=1e-4)


def test_aligned_zero_gram_gives_the_preference():
    np.testing.assert_array_equal(np.asarray(_ALIGNED["min"](jnp.zeros((3, 3)))), 1.0)


def test_aligned_rejects_unknown_scale_mode():
    with pytest.raises(ValueError, match="scale_mode"):
        aligned_mtl("mean")


def test_float64():
    with jax.enable_x64(True):
        jac = CASES[4]
        gram = jnp.asarray(jac @ jac.T, jnp.float64)
        coeffs = imtl_g().weigh(gram, None)[0]
        assert coeffs.dtype == jnp.float64
        np.testing.assert_allclose(np.asarray(coeffs), imtl_paper(jac), rtol=1e-10)
        coeffs = aligned_mtl("rmse").weigh(gram, None)[0]
        assert coeffs.dtype == jnp.float64
        np.testing.assert_allclose(np.asarray(coeffs), aligned_reference(jac, "rmse"), rtol=1e-10)


# ---------------------------------------------------------------------------------------------
# The contract suite.

imtl_tx = cg.transformation(imtl_g)
aligned_tx = cg.transformation(aligned_mtl)

SUBJECTS = [
    Subject("imtl_g-K3", imtl_tx, {}, {"num_tasks": 3}, 3),
    Subject("aligned_mtl-median-K4", aligned_tx, {}, {"num_tasks": 4, "scale_mode": "median"}, 4),
    Subject("aligned_mtl-min-K3", aligned_tx, {}, {"num_tasks": 3, "scale_mode": "min"}, 3),
    Subject("aligned_mtl-rmse-K2", aligned_tx, {}, {"num_tasks": 2, "scale_mode": "rmse"}, 2),
]
IDS = [s.name for s in SUBJECTS]
# The scale mode is a static branch inside one formula: the checks of structure (compilation,
# state, dtypes, eager execution, injection) run once per weighting, the numeric ones per mode.
FULL, FULL_IDS = SUBJECTS[:2], IDS[:2]


@pytest.mark.parametrize("subject", SUBJECTS, ids=IDS)
def test_contract_numerics(subject):
    check_update_is_combination(subject)
    check_vmap_over_jacobians_and_states(subject)
    check_finite_on_hard_jacobians(subject)


@pytest.mark.parametrize("subject", FULL, ids=FULL_IDS)
def test_contract_structure(subject):
    check_compiles_once(subject)
    if subject is SUBJECTS[0]:  # op-by-op execution compiles every op: one closed form suffices
        check_jit_matches_eager(subject)
    check_state_stable(subject)
    check_dtypes(subject, jnp.bfloat16)
    check_dtypes(subject, jnp.float32)


@pytest.mark.parametrize("subject", FULL, ids=FULL_IDS)
def test_inject_hyperparams(subject):
    """No numeric hyperparameters: the injected transformation (static args) is the plain one."""
    check_inject_hyperparams(subject, {})
