"""Float64 references for the weightings other than CAME-Grad, shared by their tests and
``benchmarks/accuracy.py``.

Each one re-derives a method from its paper or its official code with numpy, scipy and cvxpy,
never JAX: on the explicit gradients (PCGrad, GradVac, ConFIG, IMTL-G, Aligned-MTL) or on the
Gram matrix in float64 (the QPs and fixed points), so that it shares no code path with the
library. CAME-Grad's own oracle, which CAGrad's reference also solves with, is ``reference.py``.
"""

from __future__ import annotations

import itertools

import cvxpy as cp
import numpy as np
import reference as ref
from scipy.optimize import least_squares

# --- PCGrad ---------------------------------------------------------------------------------------


def pcgrad_ref(jac: np.ndarray, orders: np.ndarray) -> np.ndarray:
    """Yu et al.'s Algorithm 1 on the explicit gradients in float64: Σ_i g_i^PC."""
    total = np.zeros(jac.shape[1])
    for i, order in enumerate(orders):
        g = jac[i].copy()
        for j in order:
            if j == i:
                continue
            dot = g @ jac[j]
            if dot < 0.0:
                g -= dot / (jac[j] @ jac[j]) * jac[j]
        total += g
    return total


# --- CAGrad ---------------------------------------------------------------------------------------


def cagrad_ref(jac: np.ndarray, c: float, rescale: int) -> np.ndarray:
    """The official algorithm in float64, its dual solved exactly (cvxpy + polish).

    g_0 = mean gradient, φ = c²‖g_0‖², w* = argmin_{w ∈ Δ} g_wᵀg_0 + √φ‖g_w‖ (the dual of
    reference.py with λ = 1/K and ρ = c), d = g_0 + (√φ/‖g_w*‖) g_w*, then / 1, 1 + c² or 1 + c.
    """
    k = jac.shape[0]
    gram = jac @ jac.T
    mean = np.full(k, 1.0 / k)
    w, _ = ref.solve_dual(gram / np.trace(gram), mean, c)
    sqrt_phi = c * np.linalg.norm(jac.T @ mean)
    coeffs = mean + sqrt_phi / np.linalg.norm(jac.T @ w) * w
    return coeffs / {0: 1.0, 1: 1.0 + c * c, 2: 1.0 + c}[rescale]


# --- ConFIG ---------------------------------------------------------------------------------------


def config_np(jac, pref=None):
    """The official ConFIG_update on explicit float64 gradients: pinv of the unit gradients."""
    pref = np.ones(jac.shape[0]) if pref is None else pref
    norms = np.linalg.norm(jac, axis=1, keepdims=True)
    units = np.divide(jac, norms, out=np.zeros_like(jac), where=norms > 0)
    direction = np.linalg.pinv(units) @ pref
    unit = direction / np.linalg.norm(direction)
    return np.sum(jac @ unit) * unit


# --- FairGrad -------------------------------------------------------------------------------------


def fairgrad_np(gram, alpha):
    """The official float64 solve (scipy least squares on w > 0 from 1/K), polished by Newton."""
    k = gram.shape[0]
    sol = least_squares(
        lambda w: gram @ w - w ** (-1 / alpha),
        np.full(k, 1 / k),
        bounds=(0, np.inf),
        xtol=1e-15,
        ftol=1e-15,
        gtol=1e-15,
    )
    w = sol.x
    for _ in range(3):
        jac = gram + np.diag(w ** (-1 / alpha - 1) / alpha)
        w = w - np.linalg.solve(jac, gram @ w - w ** (-1 / alpha))
    assert np.all(w > 0) and fairgrad_residual(gram, w, alpha) < 1e-12
    return w


def fairgrad_residual(gram, w, alpha):
    """‖Gw − w^(−1/α)‖ relative to ‖w^(−1/α)‖: 0 at FairGrad's fixed point."""
    target = w ** (-1 / alpha)
    return np.linalg.norm(gram @ w - target) / np.linalg.norm(target)


# --- GradVac --------------------------------------------------------------------------------------


def gradvac_np(jac, targets, orders, beta):
    """The paper's Algorithm 1 on explicit float64 gradients, visiting ``orders[i]``."""
    k = jac.shape[0]
    targets = np.array(targets, np.float64)
    corrected = jac.copy()
    for i in range(k):
        for j in orders[i]:
            g_i, g_j = corrected[i], jac[j]
            phi = g_i @ g_j / (np.linalg.norm(g_i) * np.linalg.norm(g_j))
            target = targets[i, j]
            if phi < target:
                step = (
                    np.linalg.norm(g_i)
                    * (target * np.sqrt(1 - phi**2) - phi * np.sqrt(1 - target**2))
                    / (np.linalg.norm(g_j) * np.sqrt(1 - target**2))
                )
                corrected[i] = g_i + step * g_j
            targets[i, j] = (1 - beta) * target + beta * phi
    return corrected.sum(axis=0), targets


# --- Nash-MTL -------------------------------------------------------------------------------------


def nash_np(gram):
    """Float64 solution of G a = 1/a: scipy least squares on a > 0, polished by Newton."""
    k = gram.shape[0]
    sol = least_squares(
        lambda a: gram @ a - 1 / a,
        np.ones(k),
        bounds=(0, np.inf),
        xtol=1e-15,
        ftol=1e-15,
        gtol=1e-15,
    )
    alpha = sol.x
    for _ in range(3):  # Newton on G a - 1/a, Jacobian G + diag(1/a^2)
        alpha = alpha - np.linalg.solve(gram + np.diag(alpha**-2), gram @ alpha - 1 / alpha)
    assert np.all(alpha > 0) and nash_residual(gram, alpha) < 1e-12
    return alpha


def nash_residual(gram, alpha):
    """‖Gα − 1/α‖ relative to ‖1/α‖: 0 at Nash-MTL's fixed point."""
    return np.linalg.norm(gram @ alpha - 1 / alpha) / np.linalg.norm(1 / alpha)


# --- IMTL-G ---------------------------------------------------------------------------------------


def imtl_paper(jac: np.ndarray) -> np.ndarray:
    """The paper's closed form in gradient space (float64):
    alpha_{2:K} = g_1 U^T (D U^T)^{-1}, alpha_1 = 1 - sum(alpha_{2:K}),
    with D = [g_1 - g_i]_{i >= 2} and U = [u_1 - u_i]_{i >= 2}, u_i = g_i / |g_i|."""
    units = jac / np.linalg.norm(jac, axis=1, keepdims=True)
    d = jac[:1] - jac[1:]
    u = units[:1] - units[1:]
    rest = jac[0] @ u.T @ np.linalg.inv(d @ u.T)
    return np.concatenate([[1.0 - rest.sum()], rest])


# --- Aligned-MTL ----------------------------------------------------------------------------------


def aligned_reference(jac: np.ndarray, mode: str, rank: int | None = None) -> np.ndarray:
    """float64, from the SVD of J = U S V^T: B = s U_r S_r^{-1} U_r^T, c = B 1."""
    u, sing, _ = np.linalg.svd(jac, full_matrices=False)
    r = int(np.sum(sing > 1e-10 * sing[0])) if rank is None else rank
    u, sing = u[:, :r], sing[:r]
    if mode == "min":
        scale = sing[-1]
    elif mode == "median":  # torch.median: the lower of the two middle values
        scale = np.sort(sing)[(r - 1) // 2]
    else:
        scale = np.sqrt(np.mean(sing**2))
    return (scale * (u / sing) @ u.T) @ np.ones(jac.shape[0])


# --- MGDA: min_{w in simplex} w^T G w -------------------------------------------------------------


def _face_minimiser(gram: np.ndarray, support: list[int]) -> np.ndarray | None:
    """Minimiser on the affine hull of ``support`` (None if the KKT system is singular)."""
    r = len(support)
    kkt = np.zeros((r + 1, r + 1))
    kkt[:r, :r] = gram[np.ix_(support, support)]
    kkt[:r, r] = kkt[r, :r] = 1.0
    if np.linalg.cond(kkt) > 1e12:
        return None
    rhs = np.zeros(r + 1)
    rhs[r] = 1.0
    w = np.zeros(gram.shape[0])
    w[support] = np.linalg.solve(kkt, rhs)[:r]
    return w


def min_norm_reference(gram: np.ndarray) -> np.ndarray:
    """Exact float64 minimiser: every support for K ≤ 10, else cvxpy polished on its support."""
    k = gram.shape[0]
    gram = gram / np.trace(gram)
    best, best_f = None, np.inf
    if k <= 10:
        supports: list = [s for r in range(1, k + 1) for s in itertools.combinations(range(k), r)]
    else:
        eigvals, eigvecs = np.linalg.eigh(gram)
        factor = np.sqrt(np.maximum(eigvals, 0.0))[:, None] * eigvecs.T
        w = cp.Variable(k)
        cp.Problem(cp.Minimize(cp.sum_squares(factor @ w)), [w >= 0, cp.sum(w) == 1]).solve(
            solver=cp.CLARABEL, tol_gap_abs=1e-12, tol_gap_rel=1e-12, tol_feas=1e-12
        )
        best = np.maximum(np.asarray(w.value), 0.0)
        best /= best.sum()
        best_f = best @ gram @ best
        supports = [tuple(np.flatnonzero(best > 1e-6 * best.max()))]
    for support in supports:
        w = _face_minimiser(gram, list(support))
        if w is not None and np.all(w >= -1e-12) and w @ gram @ w < best_f:
            best, best_f = np.maximum(w, 0.0) / np.maximum(w, 0.0).sum(), w @ gram @ w
    assert best is not None
    return best


# --- UPGrad and DualProj: the projection on the dual cone -----------------------------------------


def gram_factor(gram: np.ndarray) -> np.ndarray:
    """L with LᵀL = G, negative round-off eigenvalues dropped: ‖Lv‖² = vᵀGv."""
    eigvals, eigvecs = np.linalg.eigh(gram)
    return np.sqrt(np.clip(eigvals, 0.0, None))[:, None] * eigvecs.T


def project_ref(gram: np.ndarray, anchor: np.ndarray) -> np.ndarray:
    """argmin_{v ≥ u} vᵀGv in float64 (the weights of the projection of Jᵀu on the dual cone)."""
    factor = gram_factor(np.asarray(gram, np.float64))
    v = cp.Variable(len(anchor))
    problem = cp.Problem(cp.Minimize(cp.sum_squares(factor @ v)), [v >= anchor])
    problem.solve(
        solver=cp.CLARABEL, tol_gap_abs=1e-10, tol_gap_rel=1e-10, tol_feas=1e-10, max_iter=500
    )
    assert problem.status in (cp.OPTIMAL, cp.OPTIMAL_INACCURATE)
    return np.maximum(np.asarray(v.value), anchor)


def upgrad_ref(gram: np.ndarray, prefs: np.ndarray) -> np.ndarray:
    """Σ_i p_i times the weights of g_i's projection on the dual cone."""
    k = len(prefs)
    return sum(prefs[i] * project_ref(gram, np.eye(k)[i]) for i in range(k))
