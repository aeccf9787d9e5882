"""PCGrad against a float64 re-implementation on explicit gradients and TorchJD's values.

TorchJD's published weights on J = [[-4, 1, 1], [6, 1, 1]]: PCGrad [2.2222, 1.5789],
UPGrad [1.1109, 0.7894].
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import reference as ref
from contract import Subject, run_contract
from helpers import J_BASE
from references import pcgrad_ref

import camegrad_jax as cg
from camegrad_jax.weightings._pcgrad import pcgrad
from camegrad_jax.weightings._projection import upgrad


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
    gram = jnp.asarray(J_BASE @ J_BASE.T, jnp.float32)
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


def test_pcgrad_rejects_bad_arguments():
    with pytest.raises(ValueError, match="seed"):
        pcgrad(seed=0.5)  # type: ignore[arg-type]


# --- the contract ------------------------------------------------------------------------------

SUBJECTS = [Subject("pcgrad-K3", cg.transformation(pcgrad), {}, {"num_tasks": 3, "seed": 1}, 3)]


@pytest.mark.parametrize("subject", SUBJECTS, ids=[s.name for s in SUBJECTS])
def test_contract(subject):
    # PCGrad has no numeric hyperparameter to inject (the seed is static). Op-by-op runs re-trace
    # the solver's loops, here PCGrad's K-step loop only, so the eager comparison runs too.
    run_contract(subject, None, eager=True)
