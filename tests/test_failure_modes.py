"""No silent wrong result (issue 16): every bad input is a clear error or a skipped step.

Each test is a case that used to give a silently wrong, NaN or stalled result, or an error
pointing away from its cause. The references are closed forms: CAME-Grad on two unit gradients
at 120° has $c = (1.8, 1.8)$ (the `came` docstring works it out), and the loss-based
weightings are compared with the same run without the bad step. Few shapes, jitted once.
"""

from __future__ import annotations

import functools

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import camegrad_jax as cg
from camegrad_jax import nnx as cgnnx

# Two unit gradients at 120°: CAME-Grad's coefficients are (1.8, 1.8) at any scale.
UNIT = np.array([[1.0, 0.0], [-0.5, np.sqrt(3.0) / 2.0]])
CAME_COEFFS = np.array([1.8, 1.8])
PARAMS = {"w": jnp.zeros(2)}
CAME2 = cg.came_grad(num_tasks=2)


@functools.partial(jax.jit, static_argnums=0)
def jit_update(tx, jac, state, params, extra):
    return tx.update(jac, state, params, **extra)


def skipped(state) -> int:
    return int(optax.tree.get(state, "skipped_steps"))


def assert_zero(tree):
    for leaf in jax.tree.leaves(tree):
        np.testing.assert_array_equal(np.asarray(leaf, np.float64), 0.0)


def assert_trees_equal(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


# --- 1. plain gradients -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("param_shape", "jac_shape", "says"),
    [
        ((2, 3), (2, 3), r"the shape of its parameter: a gradient, not a stacked Jacobian"),
        ((3,), (2, 1, 3), r"but its parameter has shape \(3,\)"),
    ],
    ids=["first-axis-equals-K", "wrong-trailing-shape"],
)
def test_updates_not_shaped_like_the_stacked_params_are_rejected(param_shape, jac_shape, says):
    """Both used to broadcast: an update shaped (3,) into a (2, 3) parameter, or SGD turning
    a (3,) parameter into (1, 3)."""
    tx = optax.chain(CAME2, optax.sgd(0.1))
    params = {"w": jnp.zeros(param_shape)}
    expected = r"\(K, \*param\.shape\) = \(2, " + ", ".join(map(str, param_shape))
    with pytest.raises(ValueError, match=r"leaf \['w'\] has shape .*" + says + ".*" + expected):
        tx.update({"w": jnp.ones(jac_shape)}, tx.init(params), params)


# --- 2. loss-based weightings and one bad loss ------------------------------------------------

LOSSES = np.array([[1.0, 1.0], [0.8, 0.9], [0.6, 0.5], [0.5, 0.45]], np.float32)
LOSS_BASED = {
    "dwa": cg.aggregate(cg.weightings.dwa(), num_tasks=2),
    "uncertainty": cg.aggregate(cg.weightings.uncertainty(learning_rate=0.1), num_tasks=2),
    "famo": cg.aggregate(cg.weightings.famo(), num_tasks=2),
}


def run_losses(tx, losses):
    jac = {"w": jnp.asarray(UNIT, jnp.float32)}
    state, updates = tx.init(PARAMS), []
    for step in losses:
        update, state = jit_update(tx, jac, state, None, {"losses": jnp.asarray(step)})
        updates.append(update)
    return updates, state


@pytest.mark.parametrize(
    ("name", "bad", "at"),
    [(name, bad, 2) for name in LOSS_BASED for bad in (np.nan, np.inf)]
    + [("famo", -0.5, 0), ("famo", -0.5, 2)],
)
def test_one_bad_loss_skips_one_step_without_poisoning_the_state(name, bad, at):
    """A NaN loss used to enter DWA's and uncertainty's state, and a negative first loss
    FAMO's, and every later step was skipped. Now the bad step is skipped and the run goes on
    exactly as if it had not happened."""
    tx = LOSS_BASED[name]
    poisoned = np.insert(LOSSES, at, [bad, 0.7], axis=0)
    updates, state = run_losses(tx, poisoned)
    expected_updates, expected_state = run_losses(tx, LOSSES)
    assert_zero(updates[at])
    assert skipped(state) == 1
    assert_trees_equal(updates[:at] + updates[at + 1 :], expected_updates)
    assert_trees_equal(state._replace(skipped_steps=0), expected_state._replace(skipped_steps=0))


def test_famo_concrete_non_positive_loss_is_a_clear_error():
    tx = LOSS_BASED["famo"]
    jac = {"w": jnp.asarray(UNIT, jnp.float32)}
    with pytest.raises(ValueError, match=r"`famo` takes the log .* must be positive.*-0\.5"):
        tx.update(jac, tx.init(PARAMS), losses=jnp.array([-0.5, 1.0]))


# --- 3. a finite Jacobian, a non-finite update ------------------------------------------------

# float16 gradients of length 5e4 at 120°: d = 1.8 (g1 + g2) has an entry 7.8e4 > 65504.
F16_JAC = {"w": jnp.asarray(5e4 * UNIT, jnp.float16)}
F16_PARAMS = {"w": jnp.zeros(2, jnp.float16)}


def test_float16_update_that_overflows_is_skipped():
    state0 = CAME2.init(F16_PARAMS)
    update, state = jit_update(CAME2, F16_JAC, state0, F16_PARAMS, {})
    assert update["w"].dtype == jnp.float16
    assert_zero(update)
    assert skipped(state) == 1
    # Where it fits, the float32 combination is cast back to float16.
    small = jax.tree.map(lambda j: j / 4, F16_JAC)
    update, state = jit_update(CAME2, small, state0, F16_PARAMS, {})
    np.testing.assert_allclose(
        np.asarray(update["w"], np.float64), 1.25e4 * CAME_COEFFS @ UNIT, rtol=2e-3
    )
    assert skipped(state) == 0


def test_traced_nan_task_weights_skip_the_step():
    state0 = CAME2.init(PARAMS)
    jac = {"w": jnp.asarray(UNIT, jnp.float32)}
    update, state = jit_update(
        CAME2, jac, state0, PARAMS, {"task_weights": jnp.array([1.0, jnp.nan])}
    )
    assert_zero(update)
    assert skipped(state) == 1


def test_cg_apply_if_finite_skips_a_step_the_aggregation_skipped():
    """The Jacobian is finite, so the old check let Adam step on the infinite update."""
    tx = cg.apply_if_finite(optax.chain(CAME2, optax.adam(0.1)), max_consecutive_errors=3)
    state0 = tx.init(F16_PARAMS)
    update, state = jit_update(tx, F16_JAC, state0, F16_PARAMS, {})
    assert_zero(update)
    assert int(optax.tree.get(state, "total_notfinite")) == 1
    assert_trees_equal(state.inner_state, state0.inner_state)  # Adam's count did not move


# --- 4. finite derivatives of the update ------------------------------------------------------

G1 = np.array([0.6, 0.2, -0.4])
G2 = np.array([-0.2, 0.5, 0.9])
# By number of tasks: K = 2 is stage 1's closed form, K = 3 its support enumeration. At K = 3,
# "opposite" (g1 = -g2, with a third task) is a stage-1 kink, and the zero gradient comes first
# ([G1, 0, G2] happened to stay finite even with the enumeration's plain norms).
DEGENERATE = {
    2: {
        "identical": np.stack([G1, G1]),
        "zero": np.zeros((2, 3)),
        "opposite": np.stack([G1, -G1]),
        "one-zero": np.stack([G1, np.zeros(3)]),
    },
    3: {
        "identical": np.stack([G1, G1, G1]),
        "zero": np.zeros((3, 3)),
        "opposite": np.stack([G1, -G1, G2]),
        "one-zero": np.stack([np.zeros(3), G1, G2]),
    },
}
GENERIC = {
    2: np.array([[0.9, -0.3, 0.4], [-0.2, 0.8, 0.5]]),
    3: np.array([[0.9, -0.3, 0.4], [-0.2, 0.8, 0.5], [0.1, 0.2, -0.7]]),
}
DIRECTION = np.array([0.3, -0.7, 0.5])
W = cg.weightings
EVERY_POINT = list(DEGENERATE[2])
# Weighting, the degenerate Jacobians at which its derivative must be finite, and the numbers
# of tasks checked.
DIFFERENTIABLE = {
    "came": (W.came(), EVERY_POINT, (2, 3)),
    "cagrad": (W.cagrad(), EVERY_POINT, (2, 3)),
    "mean": (W.mean(), EVERY_POINT, (2,)),
    "mgda": (W.mgda(), EVERY_POINT, (2,)),
    "pcgrad": (W.pcgrad(), EVERY_POINT, (2,)),
    "imtl_g": (W.imtl_g(), EVERY_POINT, (2,)),
    "aligned_mtl": (W.aligned_mtl(), EVERY_POINT, (2,)),
    "config": (W.config(), EVERY_POINT, (2,)),
    "gradvac": (W.gradvac(), EVERY_POINT, (2,)),
}


@pytest.mark.parametrize(
    ("name", "num_tasks"),
    [(name, k) for name, (_, _, ks) in DIFFERENTIABLE.items() for k in ks],
)
def test_derivative_of_the_update_is_finite_and_matches_finite_differences(name, num_tasks):
    """jax.grad of <d(J), v> through the aggregation (meta-learning through the optimizer):
    central differences in float64 at a generic J; finite at identical, zero, opposite J and
    with one zero gradient, where square roots of 0 and eigh of a 0 matrix used to give NaN."""
    weighting, degenerate, _ = DIFFERENTIABLE[name]
    generic = GENERIC[num_tasks]
    tx = cg.aggregate(weighting, num_tasks=num_tasks)
    with jax.enable_x64(True):
        state = tx.init({"w": jnp.zeros(3, jnp.float64)})

        def along(jac):
            update, _ = tx.update({"w": jac}, state)
            return jnp.vdot(update["w"], jnp.asarray(DIRECTION))

        grad = jax.jit(jax.grad(along))
        h = 1e-6
        steps = h * np.eye(generic.size).reshape(-1, *generic.shape)
        values = jax.jit(jax.vmap(along))(
            jnp.asarray(np.concatenate([generic + steps, generic - steps]))
        )
        plus, minus = np.split(np.asarray(values), 2)
        expected = ((plus - minus) / (2 * h)).reshape(generic.shape)
        np.testing.assert_allclose(
            np.asarray(grad(jnp.asarray(generic))), expected, rtol=1e-5, atol=1e-8
        )
        for point in degenerate:
            jac = jnp.asarray(DEGENERATE[num_tasks][point])
            assert np.all(np.isfinite(np.asarray(grad(jac)))), point


# --- 6. jit and eager agree at the ends of float32 --------------------------------------------


@pytest.mark.parametrize("scale", [1e38, 2e-30])
def test_jit_and_eager_agree_at_extreme_scales(scale):
    """Under jit 1/max|J| was flushed to zero above ~8.5e37 and the rescaled Gram matrix was 0:
    the coefficients fell back to the plain sum (1, 1)."""
    jac = {"w": jnp.asarray(scale * UNIT, jnp.float32)}
    for update_fn in (CAME2.update, jax.jit(CAME2.update)):
        update, state = update_fn(jac, CAME2.init(PARAMS))
        np.testing.assert_allclose(np.asarray(state.coefficients), CAME_COEFFS, rtol=1e-5)
        np.testing.assert_allclose(
            np.asarray(update["w"], np.float64) / scale, CAME_COEFFS @ UNIT, rtol=1e-5
        )


# --- 7. NNX: a skipped step leaves the batch statistics alone ---------------------------------


class Normed(nnx.Module):
    def __init__(self, rngs):
        self.linear = nnx.Linear(2, 2, rngs=rngs)
        self.norm = nnx.BatchNorm(2, rngs=rngs)

    def __call__(self, x):
        return self.norm(self.linear(x))


def normed_losses(model, x, *, target=1.0):
    y = model(x)
    return jnp.stack([jnp.mean((y - target) ** 2), jnp.mean(y**2)])


@pytest.mark.parametrize("keep", [True, False])
def test_nnx_skipped_step_keeps_batch_statistics(keep):
    model = Normed(nnx.Rngs(0))
    x = jnp.array([[1.0, 2.0], [3.0, -1.0]])
    value_and_jac = cgnnx.value_and_jacobian(normed_losses, keep_state_if_nonfinite=keep)
    value_and_jac(model, x)
    before = np.asarray(model.norm.mean[...])
    assert np.all(np.isfinite(before)) and np.any(before != 0.0)
    losses, _ = value_and_jac(model, x.at[0, 0].set(jnp.nan))
    assert not np.all(np.isfinite(np.asarray(losses)))
    after = np.asarray(model.norm.mean[...])
    if keep:
        np.testing.assert_array_equal(after, before)
    else:
        assert np.all(np.isnan(after))


# --- errors that name the cause ---------------------------------------------------------------


def pair_losses(params, x):
    return jnp.stack([jnp.sum(params["w"] * x), jnp.sum(params["w"] ** 2)])


@pytest.mark.parametrize(
    ("loss_fn", "message"),
    [
        (lambda p, x: (pair_losses(p, x), {"x": x}), r"tuple of losses.*has_aux=True"),
        (lambda p, x: {"a": jnp.sum(p["w"] * x), "b": jnp.sum(p["w"])}, r"dict of losses"),
        (lambda p, x: (jnp.sum(p["w"] * x), jnp.sum(p["w"])), r"tuple of losses.*jnp\.stack"),
    ],
    ids=["aux-without-has_aux", "dict", "tuple"],
)
def test_loss_fn_output_errors_name_the_cause(loss_fn, message):
    with pytest.raises(TypeError, match=r"`loss_fn` returned a " + message):
        cg.value_and_jacobian(loss_fn)(PARAMS, jnp.ones(2))


def test_has_aux_without_a_pair_is_a_clear_error():
    with pytest.raises(TypeError, match=r"must return a pair \(losses, aux\)"):
        cg.value_and_jacobian(pair_losses, has_aux=True)(PARAMS, jnp.ones(2))


def test_value_and_jacobian_passes_keyword_arguments():
    def losses_fn(params, x, *, scale):
        return jnp.stack([scale * jnp.sum(params["w"] * x), jnp.sum(params["w"] ** 2)])

    w, x = jnp.array([1.0, -2.0]), jnp.array([3.0, 0.5])
    losses, jac = cg.value_and_jacobian(losses_fn)({"w": w}, x, scale=2.0)
    np.testing.assert_allclose(np.asarray(losses), [2.0 * (3.0 - 1.0), 5.0])
    np.testing.assert_allclose(np.asarray(jac["w"]), [[6.0, 1.0], [2.0, -4.0]])


@pytest.mark.parametrize(
    ("wrapper", "replacement"),
    [
        (lambda tx: optax.MultiSteps(tx, 2), "accumulate"),
        (lambda tx: optax.apply_if_finite(tx, 3), "apply_if_finite"),
    ],
    ids=["MultiSteps", "apply_if_finite"],
)
def test_optax_wrappers_around_the_chain_name_the_replacement(wrapper, replacement):
    tx = wrapper(optax.chain(CAME2, optax.sgd(0.1)))
    jac = {"w": jnp.asarray(UNIT, jnp.float32)}
    with pytest.raises(ValueError, match=r"cannot wrap .* Use cg\." + replacement):
        tx.update(jac, tx.init(PARAMS), PARAMS)


def test_state_restored_for_another_number_of_tasks():
    saved = flax.serialization.to_state_dict(CAME2.init(PARAMS))
    tx3 = cg.came_grad(num_tasks=3)
    restored = flax.serialization.from_state_dict(tx3.init(PARAMS), saved)
    with pytest.raises(ValueError, match=r"state holds 2 tasks .* built for 3: .* checkpoint"):
        tx3.update({"w": jnp.ones((3, 2))}, restored, PARAMS)


def test_nnx_wrt_filter_that_differs_from_the_optimizer():
    model = Normed(nnx.Rngs(0))
    tx = optax.chain(CAME2, optax.sgd(0.1))
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    head_only = nnx.All(nnx.Param, nnx.PathContains("norm"))
    _, jac = cgnnx.value_and_jacobian(normed_losses, wrt=head_only)(model, jnp.ones((2, 2)))
    with pytest.raises(ValueError, match=r"only in `params`: .*'linear'.* same `wrt` filter"):
        optimizer.update(model, jac)


@pytest.mark.parametrize("bad", ["0.5", None, True])
def test_non_numeric_hyperparameter(bad):
    with pytest.raises(TypeError, match=r"`rho` must be a finite number >= 0 .* of type"):
        cg.came_grad(num_tasks=2, rho=bad)
