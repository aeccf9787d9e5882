"""Shared test fixtures: Jacobian samples, the float64 oracle, and jitted entry points.

Jitted functions live here, at module level, so every test reuses one compilation per shape.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import reference as ref

import camegrad_jax as cg
from camegrad_jax._numerics import psd_sqrt
from camegrad_jax._solvers._conflict_dual import solve_conflict_dual
from camegrad_jax.weightings._came import CameState, came_coefficients


def init_came_state(num_tasks: int) -> CameState:
    return cg.weightings.came().init(num_tasks)


@functools.partial(jax.jit, static_argnames=("energy",))
def came_jit(gram, task_weights, rho, kappa, nu, w_init, energy=True):
    """CAME coefficients and state for one Gram matrix; ``energy=False`` means kappa=None."""
    state = init_came_state(gram.shape[0])._replace(dual_weights=w_init)
    return came_coefficients(gram, state, task_weights, rho, kappa if energy else None, nu)


@jax.jit
def dual_jit(gram_hat, task_weights, rho, w_init):
    """The stage-1 dual solver alone, on a normalised Gram matrix."""
    factor = psd_sqrt(gram_hat)
    radius = rho * jnp.sqrt(jnp.sum((factor @ task_weights) ** 2))
    return solve_conflict_dual(gram_hat, factor, gram_hat @ task_weights, radius, w_init)[0]


def came_np(jac, task_weights=None, rho=0.5, kappa=1.5, nu=0.2, dtype=np.float32):
    """Runs ``came_jit`` on a numpy Jacobian (K, n); returns float64 coeffs, gain, fusion, w."""
    k = jac.shape[0]
    gram = np.asarray(cg.gramian(jnp.asarray(jac, dtype)))
    weights = np.ones(k) if task_weights is None else np.asarray(task_weights)
    coeffs, state = came_jit(
        jnp.asarray(gram),
        jnp.asarray(weights, gram.dtype),
        jnp.asarray(rho, gram.dtype),
        jnp.asarray(1.0 if kappa is None else kappa, gram.dtype),
        jnp.asarray(nu, gram.dtype),
        jnp.full((k,), 1.0 / k, gram.dtype),
        energy=kappa is not None,
    )
    return {
        "coeffs": np.asarray(coeffs, np.float64),
        "gain": float(state.gain),
        "fusion": float(state.fusion),
        "dual_weights": np.asarray(state.dual_weights, np.float64),
    }


def update_distance(jac: np.ndarray, c1: np.ndarray, c2: np.ndarray) -> float:
    """‖Jᵀc1 − Jᵀc2‖ / max(‖Jᵀc2‖, Σ|c2_i|‖g_i‖·1e-3), in float64.

    Coefficients are compared through the update they produce: with a rank-deficient Jacobian,
    c is not unique even though the update is. The denominator's floor keeps near-zero updates
    (complete cancellation) from dividing by round-off.
    """
    d1, d2 = jac.T @ c1, jac.T @ c2
    floor = 1e-3 * np.abs(c2) @ np.linalg.norm(jac, axis=1)
    return float(np.linalg.norm(d1 - d2) / max(np.linalg.norm(d2), floor, 1e-300))


def jacobian_cases(seed: int = 0):
    """(name, J) pairs: random ranks, conflicting and Pareto-stationary families, K in the spec."""
    rng = np.random.default_rng(seed)
    cases = []
    for k in (1, 2, 3, 5, 16, 64):
        dim = max(2 * k, 8)
        for rank in sorted({1, max(1, k // 2), k}):
            cases.append((f"K{k}-rank{rank}", ref.sample_jacobian(rng, k, dim, rank)))
        if k >= 2:
            cases.append((f"K{k}-conflicting", ref.conflicting_jacobian(rng, k, dim)))
            cases.append((f"K{k}-pareto", ref.pareto_stationary_jacobian(rng, k, dim)))
    return cases


# TorchJD's test Jacobian; its tests publish every baseline's weights on it.
J_BASE = np.array([[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]])


def full_rank_jacobian(rng: np.random.Generator, k: int) -> np.ndarray:
    """K well-conditioned rows of mixed scales (dimension 2K + 2), the last two conflicting."""
    jac = rng.standard_normal((k, 2 * k + 2)) * np.exp(rng.uniform(-1.0, 1.0, (k, 1)))
    if k >= 2:
        jac[-1] -= 0.8 * jac[0] * np.linalg.norm(jac[-1]) / np.linalg.norm(jac[0])
    return jac


def gram32(jac: np.ndarray) -> jax.Array:
    """The Gram matrix of ``jac`` as the library computes it in float32 (``cg.gramian``)."""
    return cg.gramian(jnp.asarray(jac, jnp.float32))


def full_rank_cases(seed: int = 0) -> tuple[list[np.ndarray], list[str]]:
    """Full-rank Jacobians, three for each K in (2, 3, 5), and their ids ``K<k>-<0|1|2>``: a random
    one, the same with its last task made to conflict with the first, and with rescaled rows."""
    rng = np.random.default_rng(seed)
    cases = []
    for k in (2, 3, 5):
        jac = rng.standard_normal((k, 2 * k + 1))
        cases.append(jac)
        conflicting = jac.copy()
        conflicting[-1] -= 1.5 * conflicting[0]
        cases.append(conflicting)
        cases.append(jac * rng.uniform(0.2, 5.0, (k, 1)))
    return cases, [f"K{jac.shape[0]}-{i % 3}" for i, jac in enumerate(cases)]


def weigh_in_float64(weighting: Any, jac: np.ndarray) -> np.ndarray:
    """A stateless weighting's coefficients on J's Gram matrix under x64: computed, and kept,
    in float64."""
    with jax.enable_x64(True):
        coeffs = weighting.weigh(jnp.asarray(jac @ jac.T, jnp.float64), None)[0]
        assert coeffs.dtype == jnp.float64
        return np.asarray(coeffs)
