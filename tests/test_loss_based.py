"""DWA, uncertainty weighting and FAMO against float64 numpy re-derivations of their papers."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from contract import (
    Subject,
    run_contract,
)

import camegrad_jax as cg

LOSS_SEQUENCE = np.array([[2.0, 1.0, 0.5], [1.5, 1.1, 0.4], [1.0, 1.0, 0.45], [0.9, 0.7, 0.44]])
GRAM = jnp.eye(3)


def _run(weighting, sequence=LOSS_SEQUENCE):
    weigh = jax.jit(weighting.weigh)
    state = weighting.init(sequence.shape[1])
    out = []
    for losses in sequence:
        coeffs, state = weigh(GRAM, state, losses=jnp.asarray(losses, jnp.float32))
        out.append(np.asarray(coeffs, np.float64))
    return np.array(out), state


def test_dwa_matches_its_formula():
    got, _ = _run(cg.weightings.dwa(temperature=2.0))
    k = LOSS_SEQUENCE.shape[1]
    for t, coeffs in enumerate(got):
        if t < 2:
            np.testing.assert_allclose(coeffs, np.ones(k))
            continue
        r = LOSS_SEQUENCE[t - 1] / LOSS_SEQUENCE[t - 2]
        expected = k * np.exp(r / 2.0) / np.exp(r / 2.0).sum()
        np.testing.assert_allclose(coeffs, expected, rtol=1e-6)


def test_uncertainty_matches_adam_on_its_objective_and_reaches_its_optimum():
    got, _ = _run(cg.weightings.uncertainty(learning_rate=0.1))
    s, expected = np.zeros(3), []
    m, v = np.zeros(3), np.zeros(3)
    for t, losses in enumerate(LOSS_SEQUENCE, start=1):
        expected.append(0.5 * np.exp(-s))
        g = 0.5 * (1 - np.exp(-s) * losses)
        m, v = 0.9 * m + 0.1 * g, 0.999 * v + 0.001 * g * g
        s = s - 0.1 * (m / (1 - 0.9**t)) / (np.sqrt(v / (1 - 0.999**t)) + 1e-8)
    np.testing.assert_allclose(got, np.array(expected), rtol=1e-5)
    # Constant losses: the optimum of ½e^{-s}L + ½s is e^s = L.
    constant = np.tile([4.0, 1.0, 0.25], (600, 1))
    _, state = _run(cg.weightings.uncertainty(learning_rate=0.05), constant)
    np.testing.assert_allclose(np.exp(np.asarray(state.log_variances)), constant[0], rtol=2e-2)


def test_famo_matches_the_official_update():
    """Logits: AdamW on dsoftmax(xi)ᵀ(log L(t-1) - log L(t)); c = (z/L) / sum(z/L)."""
    lr, decay = 0.025, 1e-3
    got, state = _run(cg.weightings.famo(learning_rate=lr, weight_decay=decay))
    xi, grads, expected = np.zeros(3), [], []
    m, v = np.zeros(3), np.zeros(3)
    for t, losses in enumerate(LOSS_SEQUENCE):
        if t > 0:
            delta = np.log(LOSS_SEQUENCE[t - 1] + 1e-8) - np.log(losses + 1e-8)
            z = np.exp(xi) / np.exp(xi).sum()
            g = (np.diag(z) - np.outer(z, z)) @ delta
            grads.append(g)
            n = len(grads)
            m, v = 0.9 * m + 0.1 * g, 0.999 * v + 0.001 * g * g
            xi = xi - lr * ((m / (1 - 0.9**n)) / (np.sqrt(v / (1 - 0.999**n)) + 1e-8) + decay * xi)
        z = np.exp(xi) / np.exp(xi).sum()
        w = z / (losses + 1e-8)
        expected.append(w / w.sum())
    np.testing.assert_allclose(got, np.array(expected), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(state.logits), xi, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(got.sum(axis=1), 1.0, rtol=1e-6)


@pytest.mark.parametrize(
    "factory", [cg.weightings.dwa, cg.weightings.uncertainty, cg.weightings.famo]
)
def test_losses_are_required(factory):
    weighting = factory()
    with pytest.raises(ValueError, match="pass them to the transformation as"):
        weighting.weigh(GRAM, weighting.init(3))
    with pytest.raises(ValueError, match=r"`losses` has shape \(2,\); expected \(3,\)"):
        weighting.weigh(GRAM, weighting.init(3), losses=jnp.ones(2))


@pytest.mark.parametrize(
    ("name", "factory", "hyperparams"),
    [
        ("dwa", cg.weightings.dwa, {"temperature": 2.0}),
        ("uncertainty", cg.weightings.uncertainty, {"learning_rate": 1e-3}),
        ("famo", cg.weightings.famo, {"learning_rate": 0.025, "weight_decay": 1e-3}),
    ],
)
def test_contract(name, factory, hyperparams):
    subject = Subject(
        f"{name}-K3",
        cg.transformation(factory),
        hyperparams,
        {"num_tasks": 3},
        3,
        {"losses": jnp.array([1.0, 2.0, 0.5])},
    )
    run_contract(subject, {key: 2.0 * value for key, value in hyperparams.items()})
