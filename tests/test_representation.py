"""Shared-representation mode: exact with an identity encoder, the weighted gradient otherwise."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import camegrad_jax as cg
from camegrad_jax import nnx as cgnnx

RNG = np.random.default_rng(0)
X = jnp.asarray(RNG.standard_normal((6, 4)), jnp.float32)
TARGETS = jnp.asarray(RNG.standard_normal((3, 4)), jnp.float32)


def z_losses(z, x):
    """Three conflicting tasks of the features ``z`` alone (no parameters of their own)."""
    first = jnp.sum((z["a"] - TARGETS[0]) ** 2) + 0.5 * jnp.sum(z["b"] ** 2)
    second = jnp.sum((z["a"] - TARGETS[1]) ** 2) + jnp.mean(x @ z["a"]) ** 2
    third = jnp.sum(jnp.tanh(z["a"] - TARGETS[2]) ** 2) + jnp.sum((z["b"] - 1.0) ** 2)
    return jnp.stack([first, second, third])


def identity_encoder(params, x):
    return params["shared"]


def parameter_free_heads(params, z, x):
    return z_losses(z, x)


def full_losses(params, x):
    return parameter_free_heads(params, identity_encoder(params, x), x)


IDENTITY_PARAMS = {
    "shared": {
        "a": jnp.asarray(RNG.standard_normal(4), jnp.float32),
        "b": jnp.asarray(RNG.standard_normal((2, 3)), jnp.float32),
    }
}
TRANSFORMS = {
    "came": cg.came_grad(num_tasks=3),
    "mgda": cg.mgda(num_tasks=3),
    "upgrad": cg.upgrad(num_tasks=3),
    "pcgrad": cg.pcgrad(num_tasks=3),
    "imtl_g": cg.imtl_g(num_tasks=3),
}


def _steps(tx):
    @jax.jit
    def full_step(params, x):
        _, jac = cg.value_and_jacobian(full_losses)(params, x)
        return tx.update(jac, tx.init(params), params)

    @jax.jit
    def representation_step(params, x):
        _, rep = cg.value_and_representation_jacobian(identity_encoder, parameter_free_heads)(
            params, x
        )
        return tx.update(rep, tx.init(params), params)

    return full_step, representation_step


def assert_trees_close(a, b, rtol=1e-6, atol=1e-6):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        assert jnp.shape(x) == jnp.shape(y)
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol)


@pytest.mark.parametrize("name", list(TRANSFORMS))
def test_identity_encoder_equals_full_mode(name):
    """z = θ and parameter-free heads: G_z = G_θ, so the coefficients and update are the same."""
    full_step, representation_step = _steps(TRANSFORMS[name])
    full_update, full_state = full_step(IDENTITY_PARAMS, X)
    rep_update, rep_state = representation_step(IDENTITY_PARAMS, X)
    assert_trees_close(rep_update, full_update)
    assert_trees_close(rep_state, full_state, atol=1e-5)
    assert float(jnp.linalg.norm(full_update["shared"]["a"])) > 1e-3  # not trivially zero


# A real encoder with parameters and heads with parameters of their own.
def encoder(params, x):
    return jnp.tanh(x @ params["encoder"])


def heads(params, z, x):
    first = jnp.mean((z @ params["head_a"] - 1.0) ** 2)
    second = jnp.mean((z @ params["head_b"] + x[:, 0]) ** 2)
    return jnp.stack([first, second])


def model_losses(params, x):
    return heads(params, encoder(params, x), x)


MODEL_PARAMS = {
    "encoder": jnp.asarray(RNG.standard_normal((4, 5)), jnp.float32),
    "head_a": jnp.asarray(RNG.standard_normal(5), jnp.float32),
    "head_b": jnp.asarray(RNG.standard_normal(5), jnp.float32),
}
MGDA2 = cg.mgda(num_tasks=2)


@jax.jit
def mgda_representation_step(params, x):
    losses, rep = cg.value_and_representation_jacobian(encoder, heads)(params, x)
    update, state = MGDA2.update(rep, MGDA2.init(params), params)
    return losses, rep, update, state


@jax.jit
def mgda_full_step(params, x):
    _, jac = cg.value_and_jacobian(model_losses)(params, x)
    return MGDA2.update(jac, MGDA2.init(params), params)


def test_update_is_the_weighted_gradient_with_mgda_ub_coefficients():
    """c from the features' Gram (MGDA's K = 2 closed form in float64), d = ∇θ Σ c_k L_k."""
    losses, rep, update, state = mgda_representation_step(MODEL_PARAMS, X)
    np.testing.assert_allclose(
        np.asarray(losses), np.asarray(model_losses(MODEL_PARAMS, X)), rtol=1e-6
    )
    z = encoder(MODEL_PARAMS, X)
    rows = jax.jacrev(lambda z_: heads(MODEL_PARAMS, z_, X))(z)  # (2, batch, features)
    np.testing.assert_allclose(np.asarray(rep.features), np.asarray(rows), rtol=1e-5, atol=1e-7)
    z1, z2 = (np.asarray(rows[k], np.float64).ravel() for k in range(2))
    alpha = np.clip((z2 - z1) @ z2 / np.sum((z1 - z2) ** 2), 0.0, 1.0)
    expected_coeffs = np.array([alpha, 1.0 - alpha])
    assert 0.05 < alpha < 0.95  # an interior solution: the conflict is resolved, not a vertex
    np.testing.assert_allclose(np.asarray(state.coefficients), expected_coeffs, atol=1e-5)
    weighted = jax.grad(
        lambda p: jnp.dot(jnp.asarray(expected_coeffs, jnp.float32), model_losses(p, X))
    )
    assert_trees_close(update, weighted(MODEL_PARAMS), rtol=1e-4, atol=1e-6)
    # It is an approximation: the parameters' Gram matrix gives other coefficients.
    _, full_state = mgda_full_step(MODEL_PARAMS, X)
    assert np.max(np.abs(np.asarray(full_state.coefficients) - expected_coeffs)) > 1e-2


def test_representation_jacobian_crosses_a_jit_boundary():
    """The backward pass is a pytree (jax.tree_util.Partial): tx.update can be jitted alone."""
    tx = cg.came_grad(num_tasks=2)
    _, rep = jax.jit(cg.value_and_representation_jacobian(encoder, heads))(MODEL_PARAMS, X)
    jitted_update, jitted_state = jax.jit(tx.update)(rep, tx.init(MODEL_PARAMS), MODEL_PARAMS)
    eager_update, eager_state = tx.update(rep, tx.init(MODEL_PARAMS), MODEL_PARAMS)
    assert_trees_close(jitted_update, eager_update, rtol=1e-5)
    assert_trees_close(jitted_state, eager_state, rtol=1e-5)


def sqrt_encoder(params, x):
    """Finite at θ = 0, but its derivative is infinite there."""
    return jnp.sqrt(params["encoder"]) * x[:, :1]


@pytest.mark.parametrize("case", ["nan_features", "infinite_backward"])
def test_non_finite_steps_are_skipped(case):
    tx = cg.came_grad(num_tasks=2)
    if case == "nan_features":
        params = dict(MODEL_PARAMS, encoder=MODEL_PARAMS["encoder"].at[0, 0].set(jnp.nan))
        fn = cg.value_and_representation_jacobian(encoder, heads)
    else:
        params = dict(MODEL_PARAMS, encoder=jnp.zeros((1, 5), jnp.float32))
        fn = cg.value_and_representation_jacobian(sqrt_encoder, heads)
    _, rep = fn(params, X)
    features_finite = all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(rep.features))
    assert features_finite == (case == "infinite_backward")
    state = tx.init(params)
    update, new_state = jax.jit(tx.update)(rep, state, params)
    assert all(not np.any(np.asarray(u)) for u in jax.tree.leaves(update))
    assert int(new_state.skipped_steps) == 1
    assert_trees_close(new_state.weighting_state, state.weighting_state)


def test_apply_if_finite_skips_adam_on_non_finite_features():
    tx = cg.apply_if_finite(optax.chain(cg.came_grad(num_tasks=2), optax.adam(0.1)), 3)
    params = dict(MODEL_PARAMS, encoder=MODEL_PARAMS["encoder"].at[0, 0].set(jnp.nan))
    _, rep = cg.value_and_representation_jacobian(encoder, heads)(params, X)
    _, state = tx.update(rep, tx.init(params), params)
    assert int(optax.tree.get(state, "total_notfinite")) == 1
    assert int(optax.tree.get(state, "count")) == 0


def test_misuse_raises():
    _, rep = cg.value_and_representation_jacobian(encoder, heads)(MODEL_PARAMS, X)
    grouped = cg.came_grad(num_tasks=2, groups="top_level")
    with pytest.raises(ValueError, match="`groups` needs the parameters' Jacobian"):
        grouped.update(rep, grouped.init(MODEL_PARAMS), MODEL_PARAMS)
    accumulated = cg.accumulate(optax.chain(cg.came_grad(num_tasks=2), optax.sgd(0.1)), 2)
    with pytest.raises(TypeError, match="`accumulate` cannot average a RepresentationJacobian"):
        accumulated.update(rep, accumulated.init(MODEL_PARAMS), MODEL_PARAMS)
    scalar_heads = cg.value_and_representation_jacobian(encoder, lambda p, z, x: jnp.sum(z))
    with pytest.raises(ValueError, match="1-D vector of K task losses; got shape"):
        scalar_heads(MODEL_PARAMS, X)


def test_has_aux_returns_the_heads_aux():
    def heads_aux(params, z, x):
        return heads(params, z, x), {"z_mean": jnp.mean(z)}

    fn = cg.value_and_representation_jacobian(encoder, heads_aux, has_aux=True)
    (losses, aux), rep = fn(MODEL_PARAMS, X)
    np.testing.assert_allclose(float(aux["z_mean"]), float(jnp.mean(encoder(MODEL_PARAMS, X))))
    assert rep.features.shape == (2, *X.shape[:1], 5)
    assert losses.shape == (2,)


class TwoTaskNet(nnx.Module):
    """An encoder with batch norm and dropout, and two linear heads."""

    def __init__(self, rngs: nnx.Rngs):
        self.trunk = nnx.Linear(4, 5, rngs=rngs)
        self.norm = nnx.BatchNorm(5, rngs=rngs)
        self.drop = nnx.Dropout(0.3, rngs=rngs)
        self.head_a = nnx.Linear(5, 1, rngs=rngs)
        self.head_b = nnx.Linear(5, 1, rngs=rngs)


def nnx_encoder(model, x):
    return model.drop(nnx.relu(model.norm(model.trunk(x))))


def nnx_heads(model, z, x):
    first = jnp.mean((model.head_a(z)[:, 0] - 1.0) ** 2)
    second = jnp.mean((model.head_b(z)[:, 0] + x[:, 0]) ** 2)
    return jnp.stack([first, second])


def test_nnx_update_is_the_weighted_gradient_and_state_is_written_back_once():
    model = TwoTaskNet(nnx.Rngs(0, dropout=1))
    reference = nnx.clone(model)
    tx = optax.chain(cg.mgda(num_tasks=2), optax.sgd(1.0))
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)

    @nnx.jit
    def step(model, optimizer, x):
        losses, rep = cgnnx.value_and_representation_jacobian(nnx_encoder, nnx_heads)(model, x)
        updates = cgnnx.update(optimizer, model, rep)
        return losses, updates

    _, updates = step(model, optimizer, X)
    coeffs = optax.tree.get(optimizer.opt_state, "coefficients")
    # Reference: the gradient of c·L for the same dropout mask and batch statistics.
    weighted = nnx.grad(lambda m: jnp.dot(coeffs, nnx_heads(m, nnx_encoder(m, X), X)))
    expected = nnx.as_pure(weighted(nnx.clone(reference)))
    assert_trees_close(updates, jax.tree.map(jnp.negative, expected), rtol=1e-4, atol=1e-6)
    # One forward pass's worth of state: the reference model ran one forward above too.
    nnx_encoder(reference, X)
    assert_trees_close(nnx.state(model, nnx.BatchStat), nnx.state(reference, nnx.BatchStat))
    assert int(optimizer.step[...]) == 1
    assert np.isclose(float(jnp.sum(coeffs)), 1.0, atol=1e-5)


class IdentityNet(nnx.Module):
    def __init__(self):
        self.a = nnx.Param(IDENTITY_PARAMS["shared"]["a"])
        self.b = nnx.Param(IDENTITY_PARAMS["shared"]["b"])


def test_nnx_identity_encoder_equals_full_mode():
    tx = optax.chain(cg.came_grad(num_tasks=3), optax.sgd(0.1))
    full, rep_model = IdentityNet(), IdentityNet()
    full_opt = nnx.Optimizer(full, tx, wrt=nnx.Param)
    rep_opt = nnx.Optimizer(rep_model, tx, wrt=nnx.Param)

    def features(m, x):
        return {"a": m.a[...], "b": m.b[...]}

    def losses(m, z, x):
        return z_losses(z, x)

    _, jac = cgnnx.value_and_jacobian(lambda m, x: losses(m, features(m, x), x))(full, X)
    full_opt.update(full, jac)
    _, rep = cgnnx.value_and_representation_jacobian(features, losses)(rep_model, X)
    cgnnx.update(rep_opt, rep_model, rep)
    assert_trees_close(nnx.state(rep_model, nnx.Param), nnx.state(full, nnx.Param))
    assert not np.allclose(np.asarray(full.a[...]), np.asarray(IDENTITY_PARAMS["shared"]["a"]))
