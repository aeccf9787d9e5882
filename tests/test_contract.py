"""Every aggregating transformation through the contract of ``contract.py``."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest
from contract import (
    Subject,
    check_compiles_once,
    check_dtypes,
    check_finite_on_hard_jacobians,
    check_inject_hyperparams,
    check_jit_matches_eager,
    check_state_stable,
    check_update_is_combination,
    check_vmap_over_jacobians_and_states,
)

import camegrad_jax as cg


def mean_tx(*, num_tasks):
    return cg.aggregate(cg.weightings.mean(), num_tasks=num_tasks)


def sum_tx(*, num_tasks):
    return cg.aggregate(cg.weightings.summed(), num_tasks=num_tasks)


def linear_tx(task_weights):
    return cg.aggregate(cg.weightings.linear(task_weights), num_tasks=len(task_weights))


SUBJECTS = [
    Subject("came-K2", cg.came_grad, {"rho": 0.5, "kappa": 1.5, "nu": 0.2}, {"num_tasks": 2}, 2),
    Subject(
        "came-K3-weighted",
        cg.came_grad,
        {"task_weights": jnp.array([1.0, 4.0, 2.0]), "rho": 0.5, "nu": 0.2},
        {},
        3,
    ),
    Subject(
        "cagrad-like-K4", cg.came_grad, {"rho": 0.5, "nu": 0.0}, {"num_tasks": 4, "kappa": None}, 4
    ),
    Subject("mean-K3", mean_tx, {}, {"num_tasks": 3}, 3),
    Subject("sum-K2", sum_tx, {}, {"num_tasks": 2}, 2),
    Subject("linear-K2", linear_tx, {"task_weights": jnp.array([1.0, 4.0])}, {}, 2),
]
IDS = [s.name for s in SUBJECTS]
CHANGED = {
    "came-K2": {"rho": 0.2, "kappa": 3.0, "nu": 0.7},
    "came-K3-weighted": {"task_weights": jnp.array([2.0, 0.5, 1.0]), "rho": 1.0},
    "cagrad-like-K4": {"rho": 2.0},
    "linear-K2": {"task_weights": jnp.array([3.0, 1.0])},
}


@pytest.mark.parametrize("subject", SUBJECTS, ids=IDS)
def test_update_is_combination(subject):
    check_update_is_combination(subject)


@pytest.mark.parametrize("subject", SUBJECTS, ids=IDS)
def test_compiles_once(subject):
    check_compiles_once(subject)


# Op-by-op execution re-traces the solver's loops at every call: closed-form subjects only.
CLOSED_FORM = [s for s in SUBJECTS if s.num_tasks <= 2]


@pytest.mark.parametrize("subject", CLOSED_FORM, ids=[s.name for s in CLOSED_FORM])
def test_jit_matches_eager(subject):
    check_jit_matches_eager(subject)


@pytest.mark.parametrize("subject", SUBJECTS, ids=IDS)
def test_state_stable_across_steps(subject):
    check_state_stable(subject)


@pytest.mark.parametrize("subject", SUBJECTS, ids=IDS)
def test_vmap_over_jacobians_and_states(subject):
    check_vmap_over_jacobians_and_states(subject)


@pytest.mark.parametrize("subject", [s for s in SUBJECTS if s.name in CHANGED], ids=list(CHANGED))
def test_inject_hyperparams(subject):
    check_inject_hyperparams(subject, CHANGED[subject.name])


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float32])
@pytest.mark.parametrize("subject", SUBJECTS, ids=IDS)
def test_dtypes(subject, dtype):
    check_dtypes(subject, dtype)


@pytest.mark.slow
@pytest.mark.parametrize("subject", SUBJECTS[:1], ids=IDS[:1])
def test_float64(subject):
    with jax.enable_x64(True):
        check_dtypes(subject, jnp.float64)
        check_state_stable(subject)


@pytest.mark.parametrize("subject", SUBJECTS, ids=IDS)
def test_finite_on_hard_jacobians(subject):
    check_finite_on_hard_jacobians(subject)
