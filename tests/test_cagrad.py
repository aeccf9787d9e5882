"""CAGrad against a float64 re-implementation of the official algorithm, its SLSQP solve and
TorchJD's values.

TorchJD's published weights on J = [[-4, 1, 1], [6, 1, 1]]: CAGrad (c = 0.5, no rescale)
[0.7041, 0.5].
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import reference as ref
from contract import Subject, run_contract
from helpers import J_BASE, update_distance
from references import cagrad_ref
from scipy.optimize import minimize

import camegrad_jax as cg
from camegrad_jax.weightings._cagrad import cagrad


def cagrad_official_slsqp(jac: np.ndarray, c: float) -> np.ndarray:
    """The official code's SLSQP solve (Cranial-XIX/CAGrad, ``cagrad``), rescale 0."""
    k = jac.shape[0]
    gram = jac @ jac.T
    g0_norm = np.sqrt(gram.mean() + 1e-8)
    b = np.ones(k) / k
    radius = c * g0_norm + 1e-8

    def objective(x):
        return x @ gram @ b + radius * np.sqrt(x @ gram @ x + 1e-8)

    res = minimize(
        objective,
        b,
        bounds=[(0, 1)] * k,
        constraints={"type": "eq", "fun": lambda x: 1 - x.sum()},
    )
    return b + radius / (np.linalg.norm(jac.T @ res.x) + 1e-8) * res.x


@jax.jit
def cagrad_jit(gram, c, rescale):
    w = cagrad(c, rescale)
    return w.weigh(gram, w.init(gram.shape[0]))[0]


@jax.jit
def came_jit(gram, c):
    k = gram.shape[0]
    w = cg.weightings.came(jnp.full((k,), 1.0 / k), rho=c, kappa=None, nu=0.0)
    return w.weigh(gram, w.init(k))[0]


def _cagrad_cases():
    rng = np.random.default_rng(5)
    yield "K2-conflict", ref.conflicting_jacobian(rng, 2, 8)
    yield "K2-random", ref.sample_jacobian(rng, 2, 8, 2)
    for rank in (1, 3, 5):
        yield f"K5-rank{rank}", ref.sample_jacobian(rng, 5, 14, rank)
    yield "K5-conflict", ref.conflicting_jacobian(rng, 5, 14)
    yield "K5-face", ref.pareto_stationary_jacobian(rng, 5, 14, on_face=True)


CAGRAD_CASES = list(_cagrad_cases())
# As for CAME-Grad (test_came.py): a float32 Gram matrix knows norms of nearly cancelling
# combinations to ~sqrt(eps) ≈ 3.5e-4; the worst distance measured here is 1.0e-4.
FLOAT32_TOL = 1e-3


@pytest.mark.parametrize("jac", [c[1] for c in CAGRAD_CASES], ids=[c[0] for c in CAGRAD_CASES])
def test_cagrad_matches_float64_official_algorithm(jac):
    """Every rescale option and a few radii against the float64 re-derivation (update distance),
    and rescale 0 against CAME-Grad with λ = 1/K, ρ = c, κ = None, ν = 0 (the same update)."""
    gram = jnp.asarray(jac @ jac.T, jnp.float32)
    for c in (0.0, 0.5, 2.0):
        for rescale in (0, 1, 2):
            ours = np.asarray(cagrad_jit(gram, c, rescale), np.float64)
            distance = update_distance(jac, ours, cagrad_ref(jac, c, rescale))
            assert distance < FLOAT32_TOL, (c, rescale)
        came = np.asarray(came_jit(gram, c), np.float64)
        np.testing.assert_allclose(np.asarray(cagrad_jit(gram, c, 0)), came, rtol=1e-6)


def test_cagrad_torchjd_values_rescale_and_official_solver():
    """TorchJD's CAGrad(c=0.5) is rescale 0; rescale 1 and 2 divide by 1.25 and 1.5; the
    official SLSQP solve agrees to its own tolerance (~1e-4) on K = 2 and K = 5."""
    gram = jnp.asarray(J_BASE @ J_BASE.T, jnp.float32)
    torchjd = np.array([0.5 + np.sqrt(3.0) / (2.0 * np.sqrt(18.0)), 0.5])  # 0.7041, 0.5
    np.testing.assert_allclose(cagrad_jit(gram, 0.5, 0), torchjd, rtol=1e-6)
    np.testing.assert_allclose(cagrad_jit(gram, 0.5, 0), [0.7041, 0.5], atol=5e-5)
    np.testing.assert_allclose(cagrad_jit(gram, 0.5, 1), torchjd / 1.25, rtol=1e-6)
    np.testing.assert_allclose(cagrad_jit(gram, 0.5, 2), torchjd / 1.5, rtol=1e-6)
    default = cagrad()  # rescale=1, c=0.5: the official defaults
    np.testing.assert_allclose(default.weigh(gram, default.init(2))[0], torchjd / 1.25, rtol=1e-6)
    for jac in (J_BASE, CAGRAD_CASES[5][1]):
        ours = np.asarray(cagrad_jit(jnp.asarray(jac @ jac.T, jnp.float32), 0.5, 0), np.float64)
        assert update_distance(jac, ours, cagrad_official_slsqp(jac, 0.5)) < 1e-3


@pytest.mark.parametrize("c", [1.0, 2.0])
def test_cagrad_non_conflicting_for_c_at_least_one(c):
    """For c ≥ 1 the ball around g_0 contains 0, so the worst task's improvement is ≥ 0."""
    rng = np.random.default_rng(6)
    for jac in [ref.sample_jacobian(rng, 5, 14, 5), ref.conflicting_jacobian(rng, 5, 14)]:
        coeffs = np.asarray(cagrad_jit(jnp.asarray(jac @ jac.T, jnp.float32), c, 1), np.float64)
        norms = np.linalg.norm(jac, axis=1)
        d = jac.T @ coeffs
        assert np.all(jac @ d >= -1e-5 * norms * np.linalg.norm(d))


def test_cagrad_rejects_bad_arguments():
    with pytest.raises(ValueError, match="`c`"):
        cagrad(c=-0.1)
    for bad in (3, 1.0, "1"):
        with pytest.raises(ValueError, match="rescale"):
            cagrad(rescale=bad)


# --- the contract ------------------------------------------------------------------------------

# CAGrad's K = 2 closed form is CAME-Grad's (``came-K2`` in test_contract.py); K = 3 runs the
# primal-dual solver. Compilation dominates this file's run time, so one subject.
SUBJECTS = [
    Subject("cagrad-K3", cg.transformation(cagrad), {"c": 0.5, "rescale": 1}, {"num_tasks": 3}, 3)
]
CHANGED = {"cagrad-K3": {"c": 1.5, "rescale": 2}}


@pytest.mark.parametrize("subject", SUBJECTS, ids=[s.name for s in SUBJECTS])
def test_contract(subject):
    # Op-by-op runs would re-trace the primal-dual solver's loops at every call: jitted runs only.
    run_contract(subject, CHANGED[subject.name])
