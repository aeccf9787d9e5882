"""Validation of the float64 oracle in ``tests/reference.py`` (independent of the JAX code).

Each check compares the oracle with something derived separately: a brute-force grid, the primal
problem solved in gradient space, CAGrad's published algorithm, or an identity of spec §3-4.
"""

import cvxpy as cp
import numpy as np
import pytest
import scipy.optimize
from reference import (
    EPS,
    came_coefficients,
    conflicting_jacobian,
    dual_objective,
    duality_gap,
    grid_dual,
    pareto_stationary_jacobian,
    sample_jacobian,
    solve_dual,
    stage1_anchor,
)

DIM = 12

# The oracle's own validation: run in CI, not on every edit of the library.
pytestmark = pytest.mark.slow


def _normalised_gram(jac):
    gram = jac @ jac.T
    return gram / np.trace(gram)


def _jacobian(kind, rng, num_tasks):
    """Jacobians of every family the oracle must handle, by name."""
    if kind == "full_rank":
        return sample_jacobian(rng, num_tasks, DIM, num_tasks, scale=1.0)
    if kind == "rank_one":
        return sample_jacobian(rng, num_tasks, DIM, 1, scale=3.0)
    if kind == "conflicting":
        return conflicting_jacobian(rng, num_tasks, DIM)
    if kind == "pareto_interior":
        return pareto_stationary_jacobian(rng, num_tasks, DIM)
    if kind == "pareto_face":
        return pareto_stationary_jacobian(rng, num_tasks, DIM, on_face=True)
    raise ValueError(kind)


KINDS = ["full_rank", "rank_one", "conflicting", "pareto_interior", "pareto_face"]
DEGENERATE_KINDS = ["pareto_interior", "pareto_face"]


def _task_weights(rng, num_tasks, uniform):
    return np.ones(num_tasks) if uniform else rng.uniform(0.2, 4.0, num_tasks)


# --------------------------------------------------------------------------- samplers


def test_samplers_have_the_promised_structure():
    rng = np.random.default_rng(0)
    for rank in (1, 2, 4):
        assert np.linalg.matrix_rank(sample_jacobian(rng, 5, DIM, rank, 1e3)) == rank

    for num_tasks in (2, 3, 7):
        jac = conflicting_jacobian(rng, num_tasks, DIM)
        sums = jac @ jac.sum(axis=0)
        assert np.sum(sums < 0) == max(1, num_tasks // 3)
        assert np.min(sums) < -0.1 * np.max(np.abs(sums))

    for num_tasks in (2, 3, 6):
        # 0 in the hull: the minimum-norm point of the hull is 0.
        for on_face in (False, True):
            gram = _normalised_gram(
                pareto_stationary_jacobian(rng, num_tasks, DIM, on_face=on_face)
            )
            w = cp.Variable(num_tasks, nonneg=True)
            eigvals, eigvecs = np.linalg.eigh(gram)
            factor = np.sqrt(np.clip(eigvals, 0, None))[:, None] * eigvecs.T
            cp.Problem(cp.Minimize(cp.norm(factor @ w)), [cp.sum(w) == 1]).solve(cp.CLARABEL)
            assert np.linalg.norm(factor @ w.value) < 1e-6

    # On a proper face: some unit u has <g_1, u> = <g_2, u> = 0 < min_{i≥3} <g_i, u>.
    jac = pareto_stationary_jacobian(rng, 5, DIM, on_face=True)
    u = cp.Variable(DIM)
    problem = cp.Problem(cp.Maximize(cp.min(jac[2:] @ u)), [jac[:2] @ u == 0, cp.norm(u) <= 1])
    problem.solve(cp.CLARABEL)
    assert problem.value > 0.1


# --------------------------------------------------------------------------- stage-1 dual


@pytest.mark.parametrize("num_tasks", [2, 3])
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("rho", [0.0, 0.5, 2.0])
def test_solve_dual_matches_grid_search(num_tasks, kind, rho):
    rng = np.random.default_rng([num_tasks, KINDS.index(kind), int(10 * rho)])
    gram_hat = _normalised_gram(_jacobian(kind, rng, num_tasks))
    lam = _task_weights(rng, num_tasks, uniform=kind == "pareto_face")
    resolution = 20_000 if num_tasks == 2 else 600

    w, value = solve_dual(gram_hat, lam, rho)
    grid_w, grid_value = grid_dual(gram_hat, lam, rho, resolution)

    radius = rho * np.sqrt(lam @ gram_hat @ lam)
    # Near g_w = 0, float64 gets ‖g_w‖ = sqrt(wᵀĜw) only to ≈ sqrt(machine ε) ≈ 1e-8.
    roundoff = 1e-14 + 1e-7 * radius
    assert np.all(w >= 0) and np.isclose(w.sum(), 1, rtol=0, atol=1e-15)
    assert value == dual_objective(gram_hat, lam, rho, w)
    assert grid_value == pytest.approx(dual_objective(gram_hat, lam, rho, grid_w), abs=roundoff)
    bound = np.max(np.abs(gram_hat @ lam)) + radius * np.sqrt(np.max(np.diag(gram_hat)))
    bound *= num_tasks / resolution
    assert value <= grid_value + roundoff
    assert grid_value - value <= bound


@pytest.mark.parametrize("num_tasks", [2, 3, 8, 64])
@pytest.mark.parametrize("kind", ["full_rank", "conflicting", "pareto_interior"])
def test_strong_duality_at_the_stage1_anchor(num_tasks, kind):
    """min_i (Ĝa)_i (primal value of d_CA = Jᵀa) equals the dual value when g_w* ≠ 0,
    and d_CA lies on the sphere ‖d − g_λ‖ = r."""
    rng = np.random.default_rng([num_tasks, len(kind)])
    dim = max(DIM, num_tasks + 1)
    jac = {
        "full_rank": lambda: sample_jacobian(rng, num_tasks, dim, num_tasks),
        "conflicting": lambda: conflicting_jacobian(rng, num_tasks, dim),
        "pareto_interior": lambda: pareto_stationary_jacobian(rng, num_tasks, dim),
    }[kind]()
    gram_hat = _normalised_gram(jac)
    lam = _task_weights(rng, num_tasks, uniform=False)
    rho = 0.5

    w, value = solve_dual(gram_hat, lam, rho)
    anchor = stage1_anchor(gram_hat, lam, rho, w)
    assert w @ gram_hat @ w > EPS  # non-degenerate: the exact formula for a applies

    primal = np.min(gram_hat @ anchor)
    assert primal == pytest.approx(value, abs=1e-12)
    assert duality_gap(gram_hat, lam, rho, w) <= 1e-12
    radius_sq = rho**2 * (lam @ gram_hat @ lam)
    shift = anchor - lam
    assert shift @ gram_hat @ shift == pytest.approx(radius_sq, rel=1e-12)
    if kind == "pareto_interior":
        assert value <= 1e-12  # 0 is in the hull, so f(w) = r·0 + 0 is attainable


@pytest.mark.parametrize("num_tasks", [3, 6])
def test_degenerate_dual_on_a_face(num_tasks):
    """g_1 = v, g_2 = −s·v, rest ⊥ v. With λ_1 = s·λ_2 (g_λ ⊥ v) and with λ_1 = 1.05·s·λ_2 the
    optimum is g_w* = 0: value exactly 0, and d_CA is the projection of g_λ onto the dual cone.

    With g_λ ⊥ v, g_λ is in the cone and d = g_λ (a = λ). With λ_1 = 1.05·s, <g_2, g_λ> < 0:
    the projection removes the component along v (Jᵀ(a − λ) = −<g_λ, v>v/‖v‖²), and strong
    duality holds: min_i (Ĝa)_i = 0, the primal optimum (the rule "a = λ" it replaces left
    min_i (Ĝa)_i < 0, a conflict).
    """
    rng = np.random.default_rng(num_tasks)
    jac = pareto_stationary_jacobian(rng, num_tasks, DIM, on_face=True)
    gram_hat = _normalised_gram(jac)
    s = -gram_hat[0, 1] / gram_hat[0, 0]
    for tilt in (1.0, 1.05):
        lam = np.ones(num_tasks)
        lam[0] = tilt * s
        w, value = solve_dual(gram_hat, lam, 0.5)
        # 0 up to float64 round-off, which sqrt(wᵀĜw) lifts to ≈ 1e-8.
        assert w @ gram_hat @ w <= 1e-15
        assert abs(value) <= 1e-7
        anchor = stage1_anchor(gram_hat, lam, 0.5, w)
        assert np.min(gram_hat @ anchor) == pytest.approx(0.0, abs=1e-9)
        shift = jac.T @ (anchor - lam)  # raw units: Jᵀ(a − λ) = −(<g_λ, v>/‖v‖²) v
        g_lam, v = jac.T @ lam, jac[0]
        expected = -(g_lam @ v) / (v @ v) * v
        np.testing.assert_allclose(shift, expected, atol=1e-7 * np.linalg.norm(g_lam))
        if tilt == 1.0:
            assert np.min(gram_hat @ lam) == pytest.approx(0.0, abs=1e-14)
        else:
            assert np.min(gram_hat @ lam) < -1e-3
        # A grid point cannot beat the exact optimum.
        if num_tasks <= 3:
            assert grid_dual(gram_hat, lam, 0.5, 600)[1] >= value - 1e-7


def _primal_direction(jac, lam, rho):
    """max_{d,t} t  s.t.  J d ≥ t·1, ‖d − g_λ‖ ≤ ρ‖g_λ‖, solved in gradient space."""
    g_lam = jac.T @ lam
    d = cp.Variable(jac.shape[1])
    t = cp.Variable()
    problem = cp.Problem(
        cp.Maximize(t),
        [jac @ d >= t, cp.norm(d - g_lam) <= rho * np.linalg.norm(g_lam)],
    )
    problem.solve(cp.CLARABEL, tol_gap_abs=1e-10, tol_gap_rel=1e-10, tol_feas=1e-10)
    assert problem.status == cp.OPTIMAL
    return d.value, problem.value


@pytest.mark.parametrize("kind", ["full_rank", "conflicting"])
@pytest.mark.parametrize("num_tasks", [2, 5])
def test_anchor_is_the_primal_maximiser(kind, num_tasks):
    """d_CA = Jᵀa matches the primal problem of spec §3.1 solved directly over d (raw units)."""
    rng = np.random.default_rng([num_tasks, len(kind), 7])
    jac = 5.0 * _jacobian(kind, rng, num_tasks)
    lam = _task_weights(rng, num_tasks, uniform=False)
    rho = 0.5
    gram = jac @ jac.T
    trace = np.trace(gram)

    w, value = solve_dual(gram / trace, lam, rho)
    d_ca = jac.T @ stage1_anchor(gram / trace, lam, rho, w)
    d_primal, primal_value = _primal_direction(jac, lam, rho)

    assert value * trace == pytest.approx(primal_value, rel=1e-7, abs=1e-9 * trace)
    assert np.linalg.norm(d_ca - d_primal) <= 1e-4 * np.linalg.norm(d_primal)


def _cagrad_direction(jac, c):
    """CAGrad (Liu et al., NeurIPS 2021) without rescaling, as in the authors' code:
    g0 = mean gradient, w = argmin_{w∈Δ} wᵀGG·1/K + c‖g0‖·sqrt(wᵀGGw) (SLSQP from uniform w),
    d = g0 + (c‖g0‖/‖g_w‖)·g_w."""
    num_tasks = jac.shape[0]
    gg = jac @ jac.T
    g0_norm = np.sqrt(gg.mean())
    mean_weights = np.full(num_tasks, 1.0 / num_tasks)

    def objective(x):
        return x @ gg @ mean_weights + c * g0_norm * np.sqrt(x @ gg @ x)

    result = scipy.optimize.minimize(
        objective,
        mean_weights,
        method="SLSQP",
        bounds=[(0.0, 1.0)] * num_tasks,
        constraints={"type": "eq", "fun": lambda x: 1.0 - x.sum()},
        options={"ftol": 1e-15, "maxiter": 1000},
    )
    g_w = jac.T @ result.x
    return jac.mean(axis=0) + c * g0_norm / np.linalg.norm(g_w) * g_w


@pytest.mark.parametrize("kind", ["full_rank", "conflicting"])
@pytest.mark.parametrize("num_tasks", [2, 3, 6])
def test_uniform_weights_reproduce_cagrad(kind, num_tasks):
    rng = np.random.default_rng([num_tasks, len(kind), 3])
    jac = _jacobian(kind, rng, num_tasks)
    lam = np.full(num_tasks, 1.0 / num_tasks)
    for rho in (0.2, 0.5):
        out = came_coefficients(jac @ jac.T, lam, rho=rho, kappa=None, nu=0.0)
        d_came = jac.T @ out["coeffs"]
        d_cagrad = _cagrad_direction(jac, rho)
        assert np.linalg.norm(d_came - d_cagrad) <= 1e-5 * np.linalg.norm(d_cagrad)


# --------------------------------------------------------------------------- stages 2-3


def _cases():
    """(Gram, λ) pairs over every Jacobian family, a zero task and tiny/huge scales."""
    rng = np.random.default_rng(2024)
    cases = []
    for num_tasks in (2, 3, 5):
        for kind in KINDS:
            for uniform in (True, False):
                jac = _jacobian(kind, rng, num_tasks)
                cases.append((jac @ jac.T, _task_weights(rng, num_tasks, uniform)))
    jac = sample_jacobian(rng, 4, DIM, 3)
    jac[1] = 0.0
    cases.append((jac @ jac.T, np.ones(4)))
    for scale in (1e-20, 1e20):
        jac = scale * conflicting_jacobian(rng, 4, DIM)
        cases.append((jac @ jac.T, np.array([1.0, 4.0, 1.0, 0.5])))
    return cases


CASES = _cases()


@pytest.mark.parametrize("nu", [0.0, 0.2, 0.7, 1.0])
def test_rho_zero_kappa_one_is_linear_scalarisation(nu):
    for gram, lam in CASES:
        out = came_coefficients(gram, lam, rho=0.0, kappa=1.0, nu=nu)
        np.testing.assert_allclose(out["coeffs"], lam, rtol=1e-14, atol=0)
        np.testing.assert_array_equal(out["anchor"], lam)
        # E ≥ ‖g_λ‖ (triangle inequality), so γ = κ = 1, up to the round-off of E/‖g_λ‖.
        assert out["gain"] == pytest.approx(1.0, rel=1e-14)


@pytest.mark.parametrize(("kappa", "nu"), [(1.0, 0.2), (1.5, 0.2), (4.0, 1.0), (None, 0.5)])
def test_gain_and_fusion_bounds(kappa, nu):
    for gram, lam in CASES:
        out = came_coefficients(gram, lam, rho=0.5, kappa=kappa, nu=nu)
        assert np.all(np.isfinite(out["coeffs"]))
        if kappa is None:
            assert out["gain"] == 1.0
        else:
            assert 0 < out["gain"] <= kappa
        assert 0 <= out["fusion"] <= nu


def test_gain_restores_the_energy_when_allowed():
    """γ·‖d_CA‖ = E = Σ λ_i‖g_i‖ whenever E/‖d_CA‖ ≤ κ, else γ = κ."""
    for gram, lam in CASES:
        out = came_coefficients(gram, lam, rho=0.5, kappa=1.5, nu=0.0)
        gram_hat = gram / np.trace(gram)
        energy = lam @ np.sqrt(np.diag(gram_hat))
        d_norm = np.sqrt(out["anchor"] @ gram_hat @ out["anchor"])
        if out["gain"] < 1.5:
            assert out["gain"] * d_norm == pytest.approx(energy, rel=1e-12)
        else:
            assert energy >= 1.5 * d_norm * (1 - 1e-12)


@pytest.mark.parametrize("nu", [0.2, 1.0])
def test_fusion_never_reintroduces_a_conflict(nu):
    """<g_i, d> ≥ min(0, <g_i, d_ME>) for every task, and ν_t is the largest such blend."""
    for gram, lam in CASES:
        gram_hat = gram / np.trace(gram)
        out = came_coefficients(gram, lam, rho=0.5, kappa=1.5, nu=nu)
        a_me = gram_hat @ (out["gain"] * out["anchor"])
        floor = np.minimum(0.0, a_me)
        slack = 1e-12 * np.max(np.abs(a_me))
        assert np.all(gram_hat @ out["coeffs"] >= floor - slack)
        if out["fusion"] < nu:
            blended = (1 - out["fusion"] - 1e-6) * a_me + (out["fusion"] + 1e-6) * (gram_hat @ lam)
            assert np.any(blended < floor)


def test_update_is_non_conflicting_when_the_ball_allows_it():
    """Spec §4: with the defaults, if the dual value is ≥ 0 (a non-conflicting direction exists
    in the ball) and g_w* ≠ 0, then min_i <g_i, d> ≥ 0."""
    rng = np.random.default_rng(11)
    checked = 0
    for num_tasks in (2, 3, 5, 8):
        for _ in range(5):
            shared = rng.standard_normal(DIM)
            jac = shared + 0.8 * rng.standard_normal((num_tasks, DIM))
            lam = _task_weights(rng, num_tasks, uniform=False)
            gram_hat = _normalised_gram(jac)
            w, value = solve_dual(gram_hat, lam, 0.5)
            if value < 0 or w @ gram_hat @ w <= EPS:
                continue
            checked += 1
            out = came_coefficients(jac @ jac.T, lam)
            assert np.min(gram_hat @ out["coeffs"]) >= -1e-12
    assert checked >= 10


def test_zero_gram_and_invariances():
    out = came_coefficients(np.zeros((3, 3)), np.array([1.0, 2.0, 0.5]), nu=0.3)
    np.testing.assert_array_equal(out["coeffs"], [1.0, 2.0, 0.5])
    assert out["gain"] == 1.0 and out["fusion"] == 0.3

    rng = np.random.default_rng(5)
    jac = conflicting_jacobian(rng, 5, DIM)
    lam = _task_weights(rng, 5, uniform=False)
    base = came_coefficients(jac @ jac.T, lam)["coeffs"]
    for scale in (1e-20, 1e20):
        scaled = came_coefficients(scale**2 * (jac @ jac.T), lam)["coeffs"]
        np.testing.assert_allclose(scaled, base, rtol=1e-9)
    perm = rng.permutation(5)
    permuted = came_coefficients(jac[perm] @ jac[perm].T, lam[perm])["coeffs"]
    np.testing.assert_allclose(permuted, base[perm], rtol=1e-9)


def test_single_task():
    out = came_coefficients(np.array([[4.0]]), np.array([2.0]))
    # d_CA = (1 + ρ)·g_λ, E = ‖g_λ‖: γ = 1/(1 + ρ) shortens it back to g_λ; ν is harmless.
    assert out["gain"] == pytest.approx(1 / 1.5, rel=1e-14)
    np.testing.assert_allclose(out["coeffs"], [2.0], rtol=1e-14)


def test_invalid_hyperparameters_are_rejected():
    gram = np.eye(2)
    for kwargs in ({"rho": -0.1}, {"kappa": 0.5}, {"nu": 1.5}, {"task_weights": [1.0, -1.0]}):
        with pytest.raises(ValueError):
            came_coefficients(gram, **kwargs)
