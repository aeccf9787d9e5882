"""The optax transformations beyond the contract: per-step weights, traced hyperparameters."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from contract import params_like, sample_jacobian

import camegrad_jax as cg

JAC = sample_jacobian(3)


def test_per_step_task_weights_equal_construction_time_weights():
    """``update(..., task_weights=w)``, as the authors' trainer passes them, equals a fixed w."""
    weights = jnp.array([1.0, 4.0, 0.5])
    fixed = cg.came_grad(task_weights=weights)
    per_step = cg.came_grad(num_tasks=3)
    expected, _ = jax.jit(fixed.update)(JAC, fixed.init(None))
    step = jax.jit(per_step.update)
    got, _ = step(JAC, per_step.init(None), task_weights=weights)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), got, expected)
    # The per-step weights reach the weighting through a chain as well, and change the update.
    chained = optax.chain(per_step, optax.sgd(1.0))
    state = chained.init(params_like(JAC))
    via_chain, _ = jax.jit(chained.update)(JAC, state, task_weights=weights)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, -b, rtol=1e-5), via_chain, expected)
    plain, _ = step(JAC, per_step.init(None))
    assert not np.allclose(plain["w"], expected["w"])


def test_vmap_over_hyperparameters():
    """One compiled function sweeps rho, nu and kappa: each lane equals its own plain run."""
    rhos = jnp.array([0.0, 0.5, 2.0])
    nus = jnp.array([0.0, 0.2, 1.0])
    kappas = jnp.array([1.0, 1.5, 3.0])

    def run(rho, nu, kappa):
        tx = cg.came_grad(rho=rho, nu=nu, kappa=kappa, num_tasks=3)
        return tx.update(JAC, tx.init(None))

    swept, states = jax.jit(jax.vmap(run))(rhos, nus, kappas)
    for i in range(3):
        tx = cg.came_grad(rho=float(rhos[i]), nu=float(nus[i]), kappa=float(kappas[i]), num_tasks=3)
        expected, state = jax.jit(tx.update)(JAC, tx.init(None))
        for name in ("w", "b"):
            np.testing.assert_allclose(swept[name][i], expected[name], rtol=1e-3, atol=1e-5)
        assert float(optax.tree.get(states, "gain")[i]) <= float(kappas[i]) + 1e-6
        assert float(optax.tree.get(states, "fusion")[i]) <= float(nus[i]) + 1e-6
        np.testing.assert_allclose(
            optax.tree.get(states, "gain")[i], optax.tree.get(state, "gain"), rtol=1e-3
        )


def _flat(tree) -> np.ndarray:
    return np.concatenate([np.ravel(np.asarray(x, np.float64)) for x in jax.tree.leaves(tree)])


@pytest.mark.parametrize(
    ("name", "tx", "alpha"),
    [
        ("nash_mtl", cg.nash_mtl(max_norm=0.0, num_tasks=3), 1.0),
        ("fairgrad-1", cg.fairgrad(alpha=1.0, num_tasks=3), 1.0),
        ("fairgrad-3", cg.fairgrad(alpha=3.0, num_tasks=3), 3.0),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_scale_dependent_weightings_survive_the_rescaled_gram(name, tx, alpha):
    """Nash-MTL and FairGrad are not scale invariant: w(sJ) = s^(-2α/(1+α)) w(J), so
    d(sJ) = s^((1-α)/(1+α)) d(J). At s = 1e±20 float32 Grams overflow or underflow and the
    aggregation rescales J; the weighting must map its weights back to J's true scale."""
    del name
    step = jax.jit(tx.update)
    base = _flat(step(JAC, tx.init(None))[0])
    for s in (1e-20, 1e20):
        jac = jax.tree.map(functools.partial(jnp.multiply, s), JAC)
        trace = float(jnp.trace(cg.gramian(jac)))
        assert not 1e-30 < trace < np.inf  # the plain float32 Gram is unusable: J is rescaled
        scaled = _flat(step(jac, tx.init(None))[0])
        expected = base * s ** ((1.0 - alpha) / (1.0 + alpha))
        np.testing.assert_allclose(scaled, expected, rtol=2e-3, atol=1e-30)


def _recording_weighting(**declarations):
    """A mean weighting that records the Gram matrix and keyword arguments it was given."""
    seen = {}

    def weigh(gram, state, **extra_args):
        seen["gram"], seen["extra"] = gram, extra_args
        return jnp.full(gram.shape[-1], 1.0 / gram.shape[-1], gram.dtype), state

    return cg.Weighting(lambda k: (), weigh, **declarations), seen


@pytest.mark.parametrize("s", [1.0, 1e20])
def test_gram_received_follows_the_weightings_declaration(s):
    """Only a scale-invariant weighting may get the Gram of J/s; one that declares nothing gets
    the true JJᵀ (at s = 1e20 it overflows: the step is skipped and counted, not rescaled);
    ``jacobian_scale`` reaches only a weighting that declares it uses it."""
    jac = jax.tree.map(functools.partial(jnp.multiply, s), JAC)
    rows = np.concatenate(
        [np.reshape(np.asarray(x, np.float64), (3, -1)) for x in jax.tree.leaves(jac)], 1
    )
    true_gram = rows @ rows.T
    for declarations in ({}, {"scale_invariant": True}, {"uses_jacobian_scale": True}):
        weighting, seen = _recording_weighting(**declarations)
        tx = cg.aggregate(weighting, num_tasks=3)
        update, state = tx.update(jac, tx.init(None))
        gram, extra = np.asarray(seen["gram"], np.float64), seen["extra"]
        assert ("jacobian_scale" in extra) == bool(declarations.get("uses_jacobian_scale"))
        if not declarations or s == 1.0:
            if s == 1.0:
                np.testing.assert_allclose(gram, true_gram, rtol=1e-5)
            else:
                assert not np.all(np.isfinite(gram))  # the true Gram, overflowed
                assert int(state.skipped_steps) == 1
                assert all(float(jnp.max(jnp.abs(u))) == 0.0 for u in jax.tree.leaves(update))
            continue
        # Rescaled: the Gram of J/2^e, with 2^e reported where asked for.
        scale = float(extra.get("jacobian_scale", 0.0)) or 2.0 ** round(
            np.log2(np.sqrt(true_gram.trace() / np.trace(gram)))
        )
        np.testing.assert_allclose(gram * scale**2, true_gram, rtol=1e-5)
        assert np.log2(scale) == round(np.log2(scale))  # a power of two
        assert int(state.skipped_steps) == 0


def test_vmapped_update_branches_on_the_rescaled_gram_and_matches_each_lane():
    """Under vmap the overflow-safe Gram stays a branch (a conditional in the compiled
    program, not a select that computes both Gram contractions); a batch whose one lane needs
    rescaling gives every lane the update it gets on its own."""
    tx = cg.came_grad(num_tasks=3)
    batch = jax.tree.map(lambda leaf: jnp.stack([s * leaf for s in (1.0, 1e20, 1e-3)]), JAC)
    step = jax.jit(jax.vmap(lambda jac: tx.update(jac, tx.init(None))[0]))
    hlo = step.lower(batch).compile().as_text()
    assert "conditional" in hlo
    together = step(batch)
    for lane in range(3):
        alone, _ = jax.jit(tx.update)(jax.tree.map(lambda x, i=lane: x[i], batch), tx.init(None))
        for name in ("w", "b"):
            np.testing.assert_allclose(together[name][lane], alone[name], rtol=2e-5)
