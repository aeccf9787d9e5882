"""The contract every aggregating transformation meets, as functions any test can run.

A subject is a transformation factory with its hyperparameters; the checks are the spec's §4
"works under" list: jit, vmap over Jacobians and states, ``optax.inject_hyperparams``, dtypes,
a state whose structure and dtypes do not change from step to step, one compilation for many
steps, and finite updates on zero, rank-deficient and extreme-scale Jacobians. The expected
values come from the same transformation run another way (eager vs jit, looped vs vmapped,
injected vs plain) and from the combination identity d = Jᵀc.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

NUM_STEPS = 3
# Updates of solvers with a flat optimum (K > 2) agree to ~sqrt(eps32) between two numerically
# different runs (jit vs eager, vmapped vs looped); closed forms agree to round-off.
RTOL = 1e-3


class Subject(NamedTuple):
    """``factory(**hyperparams, **static)`` builds the transformation for ``num_tasks`` tasks.

    ``hyperparams`` are numeric and may be traced; ``static`` are not (``num_tasks`` etc.);
    ``extra_args`` go to every ``update`` (e.g. ``losses`` for loss-based weightings).
    """

    name: str
    factory: Callable[..., Any]
    hyperparams: dict[str, Any]
    static: dict[str, Any]
    num_tasks: int
    extra_args: dict[str, Any] = {}  # noqa: RUF012 - never mutated

    def make(self, **overrides: Any) -> Any:
        return self.factory(**{**self.hyperparams, **overrides}, **self.static)

    def update_fn(self, tx: Any) -> Callable[..., Any]:
        """``tx.update`` with this subject's extra arguments bound."""
        return lambda jac, state: tx.update(jac, state, **self.extra_args)


def sample_jacobian(num_tasks: int, seed: int = 0, dtype: Any = jnp.float32) -> dict[str, Any]:
    """A small two-leaf Jacobian with conflicting rows (the last task opposes the first)."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((num_tasks, 3, 2))
    b = rng.standard_normal((num_tasks, 2))
    w[-1] -= 1.5 * w[0]
    b[-1] -= 1.5 * b[0]
    return {"w": jnp.asarray(w, dtype), "b": jnp.asarray(b, dtype)}


def params_like(jac: Any) -> Any:
    return jax.tree.map(lambda leaf: jnp.zeros(leaf.shape[1:], leaf.dtype), jac)


_STEPS: dict[tuple[str, str], Any] = {}


def jitted(subject: Subject, key: str = "") -> Any:
    """``jax.jit(update)`` of the subject's transformation, compiled once per test session."""
    if (subject.name, key) not in _STEPS:
        _STEPS[subject.name, key] = jax.jit(subject.update_fn(subject.make()))
    return _STEPS[subject.name, key]


def _run(tx: Any, jacs: list[Any], update: Callable[..., Any]) -> tuple[list, Any]:
    state = tx.init(params_like(jacs[0]))
    outs = []
    for jac in jacs:
        out, state = update(jac, state)
        outs.append(out)
    return outs, state


def _assert_trees_close(a: Any, b: Any, rtol: float = 1e-5, atol: float = 1e-6) -> None:
    jax.tree.map(
        lambda x, y: np.testing.assert_allclose(
            np.asarray(x, np.float64), np.asarray(y, np.float64), rtol=rtol, atol=atol
        ),
        a,
        b,
    )


def _signature(tree: Any) -> Any:
    return jax.tree.structure(tree), [(x.shape, x.dtype) for x in jax.tree.leaves(tree)]


def check_update_is_combination(subject: Subject) -> None:
    """The update is Jᵀc for the coefficients c the state reports."""
    jac = sample_jacobian(subject.num_tasks)
    (update,), state = _run(subject.make(), [jac], jitted(subject))
    coeffs = np.asarray(optax.tree.get(state, "coefficients"), np.float64)
    expected = jax.tree.map(lambda leaf: np.tensordot(coeffs, np.asarray(leaf, np.float64), 1), jac)
    _assert_trees_close(update, expected, rtol=1e-5, atol=1e-6)


def check_compiles_once(subject: Subject) -> None:
    """Many steps, each feeding the state back, trace and compile the update once."""
    tx = subject.make()
    jacs = [sample_jacobian(subject.num_tasks, seed) for seed in range(NUM_STEPS)]
    step = jax.jit(subject.update_fn(tx))
    _run(tx, jacs, step)
    assert step._cache_size() == 1, "the update recompiled between steps"


def check_jit_matches_eager(subject: Subject) -> None:
    """Op-by-op execution agrees with the compiled update (costly for iterative solvers)."""
    tx = subject.make()
    jacs = [sample_jacobian(subject.num_tasks, seed) for seed in range(NUM_STEPS)]
    compiled, compiled_state = _run(tx, jacs, jitted(subject))
    eager, eager_state = _run(tx, jacs, subject.update_fn(tx))
    _assert_trees_close(compiled, eager, rtol=RTOL, atol=1e-5)
    _assert_trees_close(compiled_state, eager_state, rtol=RTOL, atol=1e-5)


def check_state_stable(subject: Subject) -> None:
    """Structure, shapes and dtypes of the state are those of init, at every step."""
    tx = subject.make()
    jac = sample_jacobian(subject.num_tasks)
    state = tx.init(params_like(jac))
    initial = _signature(state)
    for seed in range(NUM_STEPS):
        _, state = jitted(subject)(sample_jacobian(subject.num_tasks, seed), state)
        assert _signature(state) == initial


def check_vmap_over_jacobians_and_states(subject: Subject) -> None:
    tx = subject.make()
    jacs = [sample_jacobian(subject.num_tasks, seed) for seed in range(NUM_STEPS)]
    states = [tx.init(params_like(jacs[0])) for _ in jacs]
    step = jitted(subject)
    looped = [step(jac, state) for jac, state in zip(jacs, states, strict=True)]
    stack = lambda trees: jax.tree.map(lambda *xs: jnp.stack(xs), *trees)  # noqa: E731
    batched_out, batched_state = jax.jit(jax.vmap(subject.update_fn(tx)))(
        stack(jacs), stack(states)
    )
    _assert_trees_close(batched_out, stack([out for out, _ in looped]), rtol=RTOL, atol=1e-5)
    _assert_trees_close(batched_state, stack([st for _, st in looped]), rtol=RTOL, atol=1e-5)


def check_inject_hyperparams(subject: Subject, changed: dict[str, Any]) -> None:
    """Injected hyperparameters give the plain transformation's updates, also once changed."""
    injected = optax.inject_hyperparams(subject.factory, static_args=tuple(subject.static))(
        **subject.hyperparams, **subject.static
    )
    jacs = [sample_jacobian(subject.num_tasks, seed) for seed in range(2)]
    step = jax.jit(subject.update_fn(injected))
    out, _ = _run(injected, jacs, step)
    expected, _ = _run(subject.make(), jacs, jitted(subject))
    _assert_trees_close(out, expected, rtol=RTOL, atol=1e-5)
    state = injected.init(params_like(jacs[0]))
    for name, value in changed.items():
        state.hyperparams[name] = jnp.asarray(value, state.hyperparams[name].dtype)
    out, _ = step(jacs[0], state)
    changed_tx = subject.make(**changed)
    expected, _ = _run(changed_tx, jacs[:1], jax.jit(subject.update_fn(changed_tx)))
    _assert_trees_close(out, expected[0], rtol=RTOL, atol=1e-5)


def check_dtypes(subject: Subject, dtype: Any) -> None:
    """Updates keep the Jacobian's dtype; bf16 agrees with float32 to bf16 precision. The
    states' floats follow the parameters (float64 under x64, never below float32) and keep
    their dtypes through a step."""
    jac = sample_jacobian(subject.num_tasks, dtype=dtype)
    state = subject.make().init(params_like(jac))
    _, stepped = jitted(subject, str(jnp.dtype(dtype)))(jac, state)
    expected = jnp.result_type(jnp.float32, dtype)
    for before, after in zip(jax.tree.leaves(state), jax.tree.leaves(stepped), strict=True):
        assert before.dtype == after.dtype
        if jnp.issubdtype(before.dtype, jnp.floating):
            assert before.dtype == expected, (before.dtype, expected)
    (update,), _ = _run(subject.make(), [jac], jitted(subject, str(jnp.dtype(dtype))))
    for leaf in jax.tree.leaves(update):
        assert leaf.dtype == jnp.dtype(dtype)
    as_float32 = [jax.tree.map(lambda x: x.astype(jnp.float32), jac)]
    reference, _ = _run(subject.make(), as_float32, jitted(subject))
    tol = 2e-2 if jnp.dtype(dtype) == jnp.bfloat16 else RTOL
    _assert_trees_close(update, reference[0], rtol=tol, atol=tol)


def check_finite_on_hard_jacobians(subject: Subject) -> None:
    """Zero, rank-one, one zero task, and scales 1e-20 / 1e20: finite coefficients and update."""
    k = subject.num_tasks
    base = sample_jacobian(k)
    rank_one = jax.tree.map(
        lambda leaf: leaf[:1] * jnp.linspace(-1.0, 2.0, k).reshape((k,) + (1,) * (leaf.ndim - 1)),
        base,
    )
    zero_task = jax.tree.map(lambda leaf: leaf.at[0].set(0.0), base)
    cases = {
        "zero": jax.tree.map(jnp.zeros_like, base),
        "rank-one": rank_one,
        "zero-task": zero_task,
        "tiny": jax.tree.map(lambda x: x * 1e-20, base),
        "huge": jax.tree.map(lambda x: x * 1e20, base),
    }
    step = jitted(subject)
    for name, jac in cases.items():
        update, state = step(jac, subject.make().init(params_like(jac)))
        coeffs = optax.tree.get(state, "coefficients")
        assert np.all(np.isfinite(np.asarray(coeffs))), name
        for leaf in jax.tree.leaves(update):
            assert np.all(np.isfinite(np.asarray(leaf))), name
        assert int(optax.tree.get(state, "skipped_steps")) == 0, name


def check_numerics(subject: Subject) -> None:
    """The checks every subject of a family runs, on its update compiled once: d = Jᵀc, a stable
    state, vmap over Jacobians and states, float32, finite updates on hard Jacobians."""
    check_update_is_combination(subject)
    check_state_stable(subject)
    check_vmap_over_jacobians_and_states(subject)
    check_dtypes(subject, jnp.float32)
    check_finite_on_hard_jacobians(subject)


def check_structure(subject: Subject, *, eager: bool) -> None:
    """The checks that cost compilations of their own: bf16, one compilation for many steps and
    (``eager``, for closed forms) op-by-op execution."""
    check_dtypes(subject, jnp.bfloat16)
    check_compiles_once(subject)
    if eager:
        check_jit_matches_eager(subject)


def contract_cases(
    subjects: list[Subject], structure_subjects: list[Subject], *, eager: bool
) -> list[Any]:
    """The contract of weightings with no numeric hyperparameter, as ``(subject, check)`` cases
    for one ``test_contract(subject, check)`` that runs ``check(subject)``.

    Every subject gets :func:`check_numerics`. ``structure_subjects``, one per weighting where the
    others differ only in a static branch or in the solver's path, also get
    :func:`check_structure` (with ``eager``) and ``inject_hyperparams`` with nothing to inject,
    which must be the plain transformation. Ids: ``<name>-numerics``, ``-structure``, ``-inject``.
    """
    structure = functools.partial(check_structure, eager=eager)
    inject_nothing = functools.partial(check_inject_hyperparams, changed={})
    return [
        *(pytest.param(s, check_numerics, id=f"{s.name}-numerics") for s in subjects),
        *(pytest.param(s, structure, id=f"{s.name}-structure") for s in structure_subjects),
        *(pytest.param(s, inject_nothing, id=f"{s.name}-inject") for s in structure_subjects),
    ]


def run_contract(
    subject: Subject, changed: dict[str, Any] | None = None, *, eager: bool = False
) -> None:
    """The whole contract for one subject, as the weighting families' test files run it.

    ``changed`` holds new hyperparameter values for the ``inject_hyperparams`` check (None: the
    subject has none to inject). ``eager`` adds the op-by-op comparison, kept for closed forms
    and short loops because op-by-op execution re-traces iterative solvers at every call.
    The bf16 dtype check also compares against the float32 update.
    """
    check_update_is_combination(subject)
    check_compiles_once(subject)
    check_state_stable(subject)
    check_vmap_over_jacobians_and_states(subject)
    check_dtypes(subject, jnp.bfloat16)
    check_finite_on_hard_jacobians(subject)
    if eager:
        check_jit_matches_eager(subject)
    if changed is not None:
        check_inject_hyperparams(subject, changed)
