"""Aligned-MTL against a float64 re-derivation, the paper's properties and the contract.

The reference works on the Jacobian itself (its SVD), never on the Gram matrix, so it shares no
code path with the weighting.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from contract import Subject, contract_cases
from helpers import J_BASE, full_rank_cases, gram32, weigh_in_float64
from references import aligned_reference

import camegrad_jax as cg
from camegrad_jax.weightings._aligned_mtl import aligned_mtl, balance_transformation

MODES = ("min", "median", "rmse")

_ALIGNED = {
    mode: jax.jit(lambda gram, mode=mode: aligned_mtl(mode).weigh(gram, None)[0]) for mode in MODES
}
_BALANCE = {
    mode: jax.jit(lambda gram, mode=mode: balance_transformation(gram, mode)) for mode in MODES
}


def aligned_np(jac: np.ndarray, mode: str = "min") -> np.ndarray:
    return np.asarray(_ALIGNED[mode](gram32(jac)), np.float64)


CASES, CASE_IDS = full_rank_cases()


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
    jac = CASES[4]
    np.testing.assert_allclose(
        weigh_in_float64(aligned_mtl("rmse"), jac), aligned_reference(jac, "rmse"), rtol=1e-10
    )


# ---------------------------------------------------------------------------------------------
# The contract suite.

aligned_tx = cg.transformation(aligned_mtl)

SUBJECTS = [
    Subject("aligned_mtl-median-K4", aligned_tx, {}, {"num_tasks": 4, "scale_mode": "median"}, 4),
    Subject("aligned_mtl-min-K3", aligned_tx, {}, {"num_tasks": 3, "scale_mode": "min"}, 3),
    Subject("aligned_mtl-rmse-K2", aligned_tx, {}, {"num_tasks": 2, "scale_mode": "rmse"}, 2),
]
# The scale mode is a static branch inside one formula: the checks of structure (bf16,
# compilation, injection) run on one mode, the numeric ones per mode. Op-by-op execution compiles
# every op: one closed form suffices, IMTL-G's (test_imtl_g.py).
FULL = SUBJECTS[:1]


@pytest.mark.parametrize(("subject", "check"), contract_cases(SUBJECTS, FULL, eager=False))
def test_contract(subject, check):
    check(subject)
