"""PCGrad and CAGrad against float64 re-implementations on explicit gradients and TorchJD's values.

TorchJD's published weights on J = [[-4, 1, 1], [6, 1, 1]]: PCGrad [2.2222, 1.5789],
CAGrad (c = 0.5, no rescale) [0.7041, 0.5], UPGrad [1.1109, 0.7894].
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import reference as ref
from contract import (
    Subject,
    run_contract,
)
from helpers import update_distance
from references import cagrad_ref, pcgrad_ref
from scipy.optimize import minimize

import camegrad_jax as cg
from camegrad_jax.weightings._cagrad import cagrad
from camegrad_jax.weightings._pcgrad import pcgrad
from camegrad_jax.weightings._projection import upgrad

TORCHJD_JAC = np.array([[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]])


# --- PCGrad ------------------------------------------------------------------------------------


def orders_from_key(key: jax.Array, k: int) -> tuple[jax.Array, np.ndarray]:
    """The documented draw, redone with jax.random: split, then one permutation per task."""
    key, step_key = jax.random.split(key)
    perms = [np.asarray(jax.random.permutation(sub, k)) for sub in jax.random.split(step_key, k)]
    return key, np.stack(perms)


@jax.jit
def pcgrad_step(gram, state):
    return pcgrad().weigh(gram, state)


@jax.jit
def upgrad_sum(gram):
    w = upgrad(jnp.ones(gram.shape[0], gram.dtype))
    return w.weigh(gram, w.init(gram.shape[0]))[0]


def test_pcgrad_matches_explicit_gradients_with_the_state_orders():
    """Three steps on K = 5: orders recomputed from the state's key, update vs float64 numpy."""
    rng = np.random.default_rng(0)
    k = 5
    state = pcgrad(seed=7).init(k)
    key = jax.random.PRNGKey(7)
    seen = set()
    for step in range(3):
        jac = ref.conflicting_jacobian(rng, k, 12) if step else ref.sample_jacobian(rng, k, 12, 3)
        coeffs, state = pcgrad_step(jnp.asarray(jac @ jac.T, jnp.float32), state)
        key, orders = orders_from_key(key, k)
        np.testing.assert_array_equal(np.asarray(state.orders), orders)
        np.testing.assert_array_equal(np.asarray(state.key), np.asarray(key))
        expected = pcgrad_ref(jac, orders)
        ours = jac.T @ np.asarray(coeffs, np.float64)
        reach = np.abs(np.asarray(coeffs)) @ np.linalg.norm(jac, axis=1)
        assert np.linalg.norm(ours - expected) <= 1e-5 * reach
        seen.add(orders.tobytes())
    assert len(seen) == 3  # a fresh draw every step


def test_pcgrad_order_matters_for_k3_and_seeds_reproduce():
    """With K = 3 the result depends on the order; the same seed gives the same run."""
    jac = np.array([[1.0, 0.0, 0.0], [-0.8, 1.0, 0.0], [-0.5, -0.9, 0.3]])
    gram = jnp.asarray(jac @ jac.T, jnp.float32)
    forward = pcgrad_ref(jac, np.array([[0, 1, 2]] * 3))
    backward = pcgrad_ref(jac, np.array([[2, 1, 0]] * 3))
    assert np.linalg.norm(forward - backward) > 1e-2
    runs = [pcgrad_step(gram, pcgrad(seed=s).init(3)) for s in (3, 3, 4)]
    np.testing.assert_array_equal(runs[0][1].orders, runs[1][1].orders)
    np.testing.assert_array_equal(runs[0][0], runs[1][0])
    for coeffs, state in runs:
        np.testing.assert_allclose(
            jac.T @ np.asarray(coeffs), pcgrad_ref(jac, np.asarray(state.orders)), rtol=1e-5
        )


def test_pcgrad_torchjd_values_and_upgrad_equivalence_for_two_tasks():
    """TorchJD's [2.2222, 1.5789]; for K = 2 PCGrad is UPGrad with unit preferences.

    PCGrad sums the projected gradients, UPGrad (TorchJD's default) averages them: with
    ``pref_vector = ones`` UPGrad also sums, so PCGrad = UPGrad(ones) = 2 · UPGrad(mean); on
    TorchJD's example 2 · [1.1111, 0.7895] (TorchJD's UPGrad shows [1.1109, 0.7894] because its QP
    adds 1e-4·I to the normalised Gram matrix).
    """
    gram = jnp.asarray(TORCHJD_JAC @ TORCHJD_JAC.T, jnp.float32)
    coeffs, _ = pcgrad_step(gram, pcgrad().init(2))
    np.testing.assert_allclose(coeffs, [1 + 22 / 18, 1 + 22 / 38], rtol=1e-6)
    np.testing.assert_allclose(coeffs, [2.2222, 1.5789], atol=5e-5)
    np.testing.assert_allclose(upgrad_sum(gram), coeffs, rtol=1e-5)
    np.testing.assert_allclose(coeffs / 2, [10 / 9, 15 / 19], rtol=1e-6)  # UPGrad (mean)
    rng = np.random.default_rng(1)
    for _ in range(3):
        jac = rng.standard_normal((2, 6))
        gram = jnp.asarray(jac @ jac.T, jnp.float32)
        np.testing.assert_allclose(
            pcgrad_step(gram, pcgrad().init(2))[0], upgrad_sum(gram), rtol=1e-5, atol=1e-6
        )


# --- CAGrad ------------------------------------------------------------------------------------


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
    gram = jnp.asarray(TORCHJD_JAC @ TORCHJD_JAC.T, jnp.float32)
    torchjd = np.array([0.5 + np.sqrt(3.0) / (2.0 * np.sqrt(18.0)), 0.5])  # 0.7041, 0.5
    np.testing.assert_allclose(cagrad_jit(gram, 0.5, 0), torchjd, rtol=1e-6)
    np.testing.assert_allclose(cagrad_jit(gram, 0.5, 0), [0.7041, 0.5], atol=5e-5)
    np.testing.assert_allclose(cagrad_jit(gram, 0.5, 1), torchjd / 1.25, rtol=1e-6)
    np.testing.assert_allclose(cagrad_jit(gram, 0.5, 2), torchjd / 1.5, rtol=1e-6)
    default = cagrad()  # rescale=1, c=0.5: the official defaults
    np.testing.assert_allclose(default.weigh(gram, default.init(2))[0], torchjd / 1.25, rtol=1e-6)
    for jac in (TORCHJD_JAC, CAGRAD_CASES[5][1]):
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


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="`c`"):
        cagrad(c=-0.1)
    for bad in (3, 1.0, "1"):
        with pytest.raises(ValueError, match="rescale"):
            cagrad(rescale=bad)
    with pytest.raises(ValueError, match="seed"):
        pcgrad(seed=0.5)  # type: ignore[arg-type]


# --- the contract ------------------------------------------------------------------------------

pcgrad_tx = cg.transformation(pcgrad)
cagrad_tx = cg.transformation(cagrad)

# CAGrad's K = 2 closed form is CAME-Grad's (``came-K2`` in test_contract.py); K = 3 runs the
# primal-dual solver. Compilation dominates this file's run time, so one subject each.
SUBJECTS = [
    Subject("pcgrad-K3", pcgrad_tx, {}, {"num_tasks": 3, "seed": 1}, 3),
    Subject("cagrad-K3", cagrad_tx, {"c": 0.5, "rescale": 1}, {"num_tasks": 3}, 3),
]
CHANGED = {"cagrad-K3": {"c": 1.5, "rescale": 2}}
# Op-by-op runs re-trace the solvers' loops: PCGrad's K-step loop only.
EAGER = ("pcgrad-K3",)


@pytest.mark.parametrize("subject", SUBJECTS, ids=[s.name for s in SUBJECTS])
def test_contract(subject):
    # PCGrad has no numeric hyperparameter to inject (the seed is static).
    run_contract(subject, CHANGED.get(subject.name), eager=subject.name in EAGER)
