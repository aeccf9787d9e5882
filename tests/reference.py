"""Independent float64 reference for CAME-Grad (the test oracle).

Written from ``docs/camegrad-spec.md`` (sections 2-4) only, with numpy, scipy and cvxpy, never JAX,
so that the library's implementation can be checked against an independent derivation.

Notation (spec §2): K tasks with gradients g_1..g_K (rows of J), task weights λ ≥ 0,
G = J Jᵀ, Ĝ = G / tr(G), g_λ = Σ λ_i g_i, and for w on the simplex Δ_K, g_w = Σ w_i g_i.
Every norm and inner product is evaluated through the Gram matrix: ‖Jᵀx‖² = xᵀGx and
<g_i, Jᵀx> = (Gx)_i. On Ĝ, lengths are measured in units of sqrt(tr G), so every gradient has
‖g_i‖ ≤ 1 there.

Tolerance. Stages 1 and 2 switch to a fallback when a length is "≈ 0". Here that means a squared
length at most ``EPS = 1e-12`` relative to its natural scale, i.e. the length itself at most 1e-6 of
that scale:

* stage 1: ‖g_w*‖² ≤ EPS · (Σ_i w*_i‖g_i‖)², relative to the gradients' own lengths (spec §3,
  revised: never relative to anything that is 0 when one task's gradient is 0), since
  ‖g_w‖ ≤ Σ_i w_i‖g_i‖;
* stage 2: ‖d_CA‖² ≤ EPS · E²  with E = Σ λ_i ‖g_i‖, since ‖d_CA‖ ≤ (1 + ρ) E always. This
  keeps the result homogeneous of degree one in λ, and E = 0 forces d_CA = 0, so the test holds.

Below the stage-1 threshold a = λ + μ makes d_CA the projection of g_λ onto the dual cone
(:func:`dual_cone_projection`); below the stage-2 one γ = 1.
"""

import warnings

import cvxpy as cp
import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]

EPS = 1e-12
"""Relative threshold on squared lengths below which a length counts as zero (module docstring)."""

_CLARABEL_TOL = 1e-9
"""Clarabel's gap and feasibility tolerances. Tighter ones often end in "optimal_inaccurate";
the exact polish in :func:`solve_dual` recovers the remaining digits."""

_SUPPORT_TOL = 1e-6
"""Dual weights above this are taken as the support of w* when polishing."""


def _check_gram(gram: FloatArray) -> FloatArray:
    """Return ``gram`` as a symmetrised float64 (K, K) array, or raise ``ValueError``."""
    gram = np.asarray(gram, dtype=np.float64)
    if gram.ndim != 2 or gram.shape[0] != gram.shape[1] or gram.shape[0] == 0:
        raise ValueError(f"the Gram matrix must be square (K, K) with K ≥ 1, got {gram.shape}")
    if not np.all(np.isfinite(gram)):
        raise ValueError("the Gram matrix must be finite")
    return 0.5 * (gram + gram.T)


def _check_weights(task_weights: FloatArray | None, num_tasks: int) -> FloatArray:
    """Return λ as a float64 (K,) array (all ones when ``None``), or raise ``ValueError``."""
    if task_weights is None:
        return np.ones(num_tasks)
    lam = np.asarray(task_weights, dtype=np.float64)
    if lam.shape != (num_tasks,):
        raise ValueError(f"task_weights must have shape ({num_tasks},), got {lam.shape}")
    if not np.all(np.isfinite(lam)) or np.any(lam < 0):
        raise ValueError("task_weights must be finite and non-negative")
    return lam


def _radius(gram_hat: FloatArray, lam: FloatArray, rho: float) -> float:
    """The stage-1 ball radius r = ρ‖g_λ‖ = ρ·sqrt(λᵀĜλ) (the square is clipped at 0)."""
    return rho * float(np.sqrt(max(lam @ gram_hat @ lam, 0.0)))


def dual_objective(
    gram_hat: FloatArray, task_weights: FloatArray, rho: float, w: FloatArray
) -> float:
    """The stage-1 dual objective at ``w``, in float64.

    f(w) = wᵀĜλ + r·sqrt(wᵀĜw),  r = ρ·sqrt(λᵀĜλ),

    with both squares clipped at 0 before the square root (round-off can make them slightly
    negative on a rank-deficient Ĝ). By weak duality, f(w) ≥ max_d min_i <g_i, d> over the ball
    ‖d − g_λ‖ ≤ r, for every w on the simplex.
    """
    gram_hat = np.asarray(gram_hat, dtype=np.float64)
    lam = np.asarray(task_weights, dtype=np.float64)
    w = np.asarray(w, dtype=np.float64)
    radius = _radius(gram_hat, lam, rho)
    return float(w @ gram_hat @ lam + radius * np.sqrt(max(w @ gram_hat @ w, 0.0)))


def dual_cone_projection(gram_hat: FloatArray, task_weights: FloatArray) -> FloatArray:
    """Coefficients a = λ + μ, μ ≥ 0, with Jᵀa the projection of g_λ onto {d : Jd ≥ 0}.

    The projection's Lagrange dual: μ = argmin_{μ ≥ 0} ‖L(λ + μ)‖² (LᵀL = Ĝ), solved by cvxpy +
    CLARABEL, then polished by solving Ĝ_SS μ_S = −(Ĝλ)_S exactly (least squares) on the
    support S of Clarabel's μ, kept when it is non-negative and no worse. μ need not be unique
    (rank-deficient Ĝ); Jᵀa is.
    """
    gram_hat = _check_gram(gram_hat)
    lam = _check_weights(task_weights, gram_hat.shape[0])
    eigvals, eigvecs = np.linalg.eigh(gram_hat)
    factor = np.sqrt(np.clip(eigvals, 0.0, None))[:, None] * eigvecs.T
    mu = cp.Variable(lam.size, nonneg=True)
    problem = cp.Problem(cp.Minimize(cp.sum_squares(factor @ (lam + mu))))
    problem.solve(solver=cp.CLARABEL, tol_gap_abs=1e-12, tol_gap_rel=1e-12, tol_feas=1e-12)
    if problem.status not in (cp.OPTIMAL, cp.OPTIMAL_INACCURATE):
        raise RuntimeError(f"Clarabel did not solve the dual-cone projection: {problem.status}")
    approx = np.clip(mu.value, 0.0, None)
    support = approx > _SUPPORT_TOL * max(1.0, approx.max())
    polished = np.zeros_like(approx)
    rhs = -(gram_hat @ lam)[support]
    polished[support] = np.linalg.lstsq(gram_hat[np.ix_(support, support)], rhs, rcond=None)[0]

    def value(x: FloatArray) -> float:
        return float(np.linalg.norm(factor @ (lam + x)))

    if np.all(polished >= 0) and value(polished) <= value(approx) + 1e-14:
        approx = polished
    return lam + approx


def stage1_anchor(
    gram_hat: FloatArray, task_weights: FloatArray, rho: float, w: FloatArray
) -> FloatArray:
    """Stage-1 coefficients a for dual weights ``w`` (spec §3.1).

    a = λ + (r / ‖g_w‖)·w  with r = ρ‖g_λ‖ and ‖g_w‖ = sqrt(wᵀĜw). Then d_CA = Jᵀa =
    g_λ + r·g_w/‖g_w‖ lies on the sphere ‖d − g_λ‖ = r, so it is primal feasible for any ``w``;
    when ``w`` is the dual optimum and g_w ≠ 0 it is the primal maximiser, i.e. min_i (Ĝa)_i
    equals the dual value. At the kink, ‖g_w‖² ≤ EPS·(Σ_i w_i‖g_i‖)², a is
    :func:`dual_cone_projection`: Jᵀa is the projection of g_λ onto the dual cone.
    """
    gram_hat = np.asarray(gram_hat, dtype=np.float64)
    lam = np.asarray(task_weights, dtype=np.float64)
    w = np.asarray(w, dtype=np.float64)
    gw_sq = float(w @ gram_hat @ w)
    reach = float(w @ np.sqrt(np.clip(np.diag(gram_hat), 0.0, None)))
    if gw_sq <= EPS * reach**2:
        return dual_cone_projection(gram_hat, lam)
    return lam + (_radius(gram_hat, lam, rho) / np.sqrt(gw_sq)) * w


def duality_gap(gram_hat: FloatArray, task_weights: FloatArray, rho: float, w: FloatArray) -> float:
    """Certified bound on the suboptimality of ``w`` for the stage-1 dual.

    gap(w) = f(w) − min_i (Ĝa)_i  with a = :func:`stage1_anchor` (w).

    d = Jᵀa is feasible for the primal max_d min_i <g_i, d> s.t. ‖d − g_λ‖ ≤ r, so
    min_i (Ĝa)_i ≤ primal optimum = dual optimum f* ≤ f(w), and 0 ≤ f(w) − f* ≤ gap(w) up to
    round-off. The gap is ≈ 0 at the optimum, also at the kink g_w* = 0: f* = 0 there, and the
    dual-cone projection has min_i (Ĝa)_i = 0 (0 is in the hull) and lies in the ball.
    """
    anchor = stage1_anchor(gram_hat, task_weights, rho, w)
    primal = float(np.min(np.asarray(gram_hat, dtype=np.float64) @ anchor))
    return dual_objective(gram_hat, task_weights, rho, w) - primal


def _project_to_simplex(w: FloatArray) -> FloatArray:
    """Clip a solver's (nearly feasible) weights at 0 and renormalise them to sum to 1."""
    w = np.clip(np.asarray(w, dtype=np.float64), 0.0, None)
    total = w.sum()
    return w / total if total > 0 else np.full(w.shape, 1.0 / w.size)


def _polish_smooth(
    gram_hat: FloatArray, lam: FloatArray, radius: float, w: FloatArray
) -> FloatArray | None:
    """Solve the dual's optimality conditions exactly on the support S of an approximate ``w``
    whose g_w ≠ 0 (there the dual is smooth).

    The KKT conditions with multiplier μ for Σw = 1 read (Ĝa)_i = μ for i ∈ S and (Ĝa)_i ≥ μ
    otherwise, with a = λ + v, v = (r/‖g_w‖)·w ≥ 0 supported on S and ‖g_v‖ = r. With
    H = Ĝ_SS and b = (Ĝλ)_S: H v_S = μ1 − b, so v_S = μp − q for p = H⁺1, q = H⁺b, and
    v_SᵀHv_S = r² becomes the quadratic (1ᵀp)μ² − 2(1ᵀq)μ + bᵀq − r² = 0. The primal
    maximises μ (the worst task's improvement), so take the larger root; then w = v / Σv.
    Returns ``None`` when the quadratic has no real root or v has a negative entry. (For a
    singular H, or a wrongly guessed support, the result is only a candidate: :func:`solve_dual`
    keeps it only if its objective is no worse.)
    """
    support = w > _SUPPORT_TOL
    h = gram_hat[np.ix_(support, support)]
    b = (gram_hat @ lam)[support]
    h_pinv = np.linalg.pinv(h, hermitian=True)
    p = h_pinv.sum(axis=1)
    q = h_pinv @ b
    alpha, beta = p.sum(), q.sum()
    disc = beta**2 - alpha * (b @ q - radius**2)
    if alpha <= 0 or disc < 0:
        return None
    mu = (beta + np.sqrt(disc)) / alpha
    v = mu * p - q
    if np.any(v < 0) or v.sum() <= 0:
        return None
    polished = np.zeros_like(w)
    polished[support] = v / v.sum()
    return polished


def _polish_stationary(gram_hat: FloatArray, w: FloatArray) -> FloatArray | None:
    """Make g_w = 0 exact for an approximate ``w`` with g_w ≈ 0 (the non-smooth case).

    Where g_w = 0 the objective is <g_λ, g_w> + r‖g_w‖ = 0 exactly, so any such w is as good as
    any other. Project w_S (S its support) onto the null space of Ĝ_SS (eigenvalues ≤ EPS) and
    renormalise; returns ``None`` if that leaves the simplex.
    """
    support = w > _SUPPORT_TOL
    eigvals, eigvecs = np.linalg.eigh(gram_hat[np.ix_(support, support)])
    null = eigvecs[:, eigvals <= EPS]
    projected = null @ (null.T @ w[support])
    if np.any(projected < 0) or projected.sum() <= 0:
        return None
    polished = np.zeros_like(w)
    polished[support] = projected / projected.sum()
    return polished


def solve_dual(
    gram_hat: FloatArray, task_weights: FloatArray, rho: float
) -> tuple[FloatArray, float]:
    """Solve the stage-1 dual to high accuracy; returns ``(w, value)``.

    min_{w ∈ Δ_K}  bᵀw + r‖Lw‖,  b = Ĝλ,  r = ρ·sqrt(λᵀĜλ),  LᵀL = Ĝ,

    a second-order cone program (‖Lw‖ = sqrt(wᵀĜw) = ‖g_w‖). L = diag(sqrt(max(s, 0)))·Vᵀ from
    the eigendecomposition Ĝ = V diag(s) Vᵀ, negative round-off eigenvalues clipped to 0. The SOCP
    is solved by cvxpy + CLARABEL, which handles the non-smooth point g_w = 0 (Pareto-stationary
    and rank-deficient cases) without trouble.

    An interior-point solution is accurate to about the tolerance in the objective but only to
    about its square root in w (the objective is flat to first order at the optimum), and a
    depends on w to first order. So the solution is then polished exactly:

    * r = 0: the dual is the linear program min_i b_i, solved by the vertex e_{argmin b};
    * g_w ≠ 0: :func:`_polish_smooth` solves the optimality conditions on the support;
    * g_w ≈ 0: :func:`_polish_stationary` makes g_w = 0 exact (objective exactly 0).

    The polished w replaces Clarabel's when its objective is no larger, up to a round-off slack of
    1e-14·(max_i |b_i| + r); the :func:`duality_gap` tests certify the result.

    ``gram_hat`` is used as given (any PSD matrix; the spec passes Ĝ = G/tr G). The returned ``w``
    lies on the simplex; ``value`` is :func:`dual_objective` at that ``w`` in float64. Raises
    ``RuntimeError`` if Clarabel does not report "optimal", or reports "optimal_inaccurate" (it
    stalls short of its tolerance on some rank-deficient problems, depending on the CPU's
    round-off) and the polished ``w`` does not certify a duality gap within that tolerance.
    """
    gram_hat = _check_gram(gram_hat)
    num_tasks = gram_hat.shape[0]
    lam = _check_weights(task_weights, num_tasks)
    if rho < 0:
        raise ValueError(f"rho must be ≥ 0, got {rho}")
    radius = _radius(gram_hat, lam, rho)
    linear = gram_hat @ lam

    eigvals, eigvecs = np.linalg.eigh(gram_hat)
    factor = np.sqrt(np.clip(eigvals, 0.0, None))[:, None] * eigvecs.T
    w_var = cp.Variable(num_tasks, nonneg=True)
    problem = cp.Problem(
        cp.Minimize(linear @ w_var + radius * cp.norm(factor @ w_var)),
        [cp.sum(w_var) == 1],
    )
    with warnings.catch_warnings():  # an inaccurate status is handled below
        warnings.simplefilter("ignore", UserWarning)
        problem.solve(
            solver=cp.CLARABEL,
            tol_gap_abs=_CLARABEL_TOL,
            tol_gap_rel=_CLARABEL_TOL,
            tol_feas=_CLARABEL_TOL,
            max_iter=500,
        )
    if problem.status not in (cp.OPTIMAL, cp.OPTIMAL_INACCURATE):
        raise RuntimeError(f"Clarabel did not solve the stage-1 dual: status {problem.status}")
    w = _project_to_simplex(w_var.value)

    if radius == 0:
        polished = np.eye(num_tasks)[int(np.argmin(linear))]
    elif w @ gram_hat @ w > EPS:
        polished = _polish_smooth(gram_hat, lam, radius, w)
    else:
        polished = _polish_stationary(gram_hat, w)
    slack = 1e-14 * (float(np.max(np.abs(linear))) + radius)
    if polished is not None and dual_objective(gram_hat, lam, rho, polished) <= (
        dual_objective(gram_hat, lam, rho, w) + slack
    ):
        w = polished
    if problem.status == cp.OPTIMAL_INACCURATE and not (
        duality_gap(gram_hat, lam, rho, w) <= _CLARABEL_TOL * (1.0 + abs(float(problem.value)))
    ):
        raise RuntimeError("Clarabel's inaccurate stage-1 solution failed the duality-gap check")
    return w, dual_objective(gram_hat, lam, rho, w)


def came_coefficients(
    gram: FloatArray,
    task_weights: FloatArray | None = None,
    rho: float = 0.5,
    kappa: float | None = 1.5,
    nu: float = 0.2,
) -> dict[str, FloatArray | float]:
    """CAME-Grad coefficients c (update d = Jᵀc) from the Gram matrix G = JJᵀ (spec §3).

    On Ĝ = G / tr(G):

    1. Conflict-averse rectification: w* from :func:`solve_dual`;
       a = λ + (r/‖g_w*‖)·w*, r = ρ‖g_λ‖ (at the kink ‖g_w*‖ ≈ 0, a makes d_CA the
       projection of g_λ onto the dual cone); d_CA = Jᵀa.
    2. Energy injection: E = Σ λ_i‖g_i‖ = Σ λ_i sqrt(Ĝ_ii), ‖d_CA‖ = sqrt(aᵀĜa),
       γ = min(κ, E/‖d_CA‖) (γ = 1 when ‖d_CA‖ ≈ 0, or when ``kappa`` is ``None``).
    3. Fusion: A = Ĝ(γa), B = Ĝλ, t_i = min(0, A_i). For tasks with B_i < t_i,
       ν'_i = (A_i − t_i)/(A_i − B_i) (the largest ν' with (1 − ν')A_i + ν'B_i ≥ t_i);
       ν_safe = min_i ν'_i (1 if no task limits it); ν_t = min(ν, ν_safe).

    c = (1 − ν_t)·γ·a + ν_t·λ. "≈ 0" is the relative threshold ``EPS`` of the module docstring.

    If tr(G) = 0 (J = 0) the update is 0 whatever c is. The result is then what the three stages
    give on Ĝ = 0: r = 0 so a = λ, d_CA = 0 so γ = 1, A = B = 0 so ν_t = ν, hence c = λ; the dual
    objective is identically 0 and w* is reported as the uniform weights 1/K.

    Returns a dict with ``coeffs`` (c), ``dual_weights`` (w*), ``anchor`` (a), ``gain`` (γ) and
    ``fusion`` (ν_t).
    """
    gram = _check_gram(gram)
    num_tasks = gram.shape[0]
    lam = _check_weights(task_weights, num_tasks)
    if rho < 0:
        raise ValueError(f"rho must be ≥ 0, got {rho}")
    if kappa is not None and not kappa >= 1:
        raise ValueError(f"kappa must be ≥ 1 or None, got {kappa}")
    if not 0 <= nu <= 1:
        raise ValueError(f"nu must lie in [0, 1], got {nu}")

    trace = float(np.trace(gram))
    if trace <= 0:
        return {
            "coeffs": lam.copy(),
            "dual_weights": np.full(num_tasks, 1.0 / num_tasks),
            "anchor": lam.copy(),
            "gain": 1.0,
            "fusion": float(nu),
        }
    gram_hat = gram / trace

    # Stage 1: conflict-averse direction rectification.
    w_star, _ = solve_dual(gram_hat, lam, rho)
    anchor = stage1_anchor(gram_hat, lam, rho, w_star)

    # Stage 2: magnitude-enhanced energy injection.
    energy = float(lam @ np.sqrt(np.clip(np.diag(gram_hat), 0.0, None)))
    d_ca_sq = max(float(anchor @ gram_hat @ anchor), 0.0)
    if kappa is None or d_ca_sq <= EPS * energy**2:
        gain = 1.0
    else:
        gain = min(float(kappa), energy / np.sqrt(d_ca_sq))

    # Stage 3: adaptive gradient fusion.
    a_me = gram_hat @ (gain * anchor)
    b_ls = gram_hat @ lam
    floor = np.minimum(0.0, a_me)
    limited = b_ls < floor
    nu_safe = float(np.min((a_me - floor)[limited] / (a_me - b_ls)[limited], initial=1.0))
    fusion = min(float(nu), nu_safe)

    return {
        "coeffs": (1.0 - fusion) * gain * anchor + fusion * lam,
        "dual_weights": w_star,
        "anchor": anchor,
        "gain": float(gain),
        "fusion": fusion,
    }


def grid_dual(
    gram_hat: FloatArray, task_weights: FloatArray, rho: float, resolution: int
) -> tuple[FloatArray, float]:
    """Brute-force minimum of :func:`dual_objective` over a simplex lattice (K = 2 or 3).

    Evaluates f on every w = k/n with k ∈ ℕ^K, Σk = n (n = ``resolution``) and returns the best
    ``(w, value)``. Since grid points are feasible, value ≥ f*. Rounding w* to the lattice moves
    each coordinate by less than 1/n, and |f(w) − f(w')| ≤ (‖b‖_∞ + r·max_i‖g_i‖)·‖w − w'‖₁,
    so value − f* ≤ (max_i |(Ĝλ)_i| + r·max_i sqrt(Ĝ_ii))·K/n.
    """
    gram_hat = _check_gram(gram_hat)
    num_tasks = gram_hat.shape[0]
    lam = _check_weights(task_weights, num_tasks)
    steps = np.arange(resolution + 1)
    if num_tasks == 2:
        points = np.stack([steps, resolution - steps], axis=1)
    elif num_tasks == 3:
        first, second = np.meshgrid(steps, steps, indexing="ij")
        keep = first + second <= resolution
        points = np.stack(
            [first[keep], second[keep], resolution - first[keep] - second[keep]], axis=1
        )
    else:
        raise ValueError(f"grid_dual supports K = 2 or 3, got K = {num_tasks}")
    w = points / resolution
    radius = _radius(gram_hat, lam, rho)
    quad = np.einsum("pi,ij,pj->p", w, gram_hat, w)
    values = w @ (gram_hat @ lam) + radius * np.sqrt(np.clip(quad, 0.0, None))
    best = int(np.argmin(values))
    return w[best], float(values[best])


def sample_jacobian(
    rng: np.random.Generator, num_tasks: int, dim: int, rank: int, scale: float = 1.0
) -> FloatArray:
    """A random (K, dim) Jacobian of rank ``rank``: scale · (A @ B), A (K, rank), B (rank, dim)
    with i.i.d. standard normal entries (rank exactly ``rank`` with probability 1)."""
    if not 1 <= rank <= min(num_tasks, dim):
        raise ValueError(f"rank must lie in [1, min(K, dim)] = [1, {min(num_tasks, dim)}]")
    factor_a = rng.standard_normal((num_tasks, rank))
    factor_b = rng.standard_normal((rank, dim))
    return scale * (factor_a @ factor_b)


def _unit_orthogonal_noise(
    rng: np.random.Generator, count: int, dim: int, basis: FloatArray
) -> FloatArray:
    """``count`` random unit vectors orthogonal to the rows of ``basis``."""
    q, _ = np.linalg.qr(basis.T)
    noise = rng.standard_normal((count, dim))
    noise -= (noise @ q) @ q.T
    return noise / np.linalg.norm(noise, axis=1, keepdims=True)


def conflicting_jacobian(rng: np.random.Generator, num_tasks: int, dim: int) -> FloatArray:
    """A (K, dim) Jacobian (K ≥ 2, dim ≥ K + 1) where some tasks point against the mean.

    The K − m "majority" rows are s_j(u + 0.3 n_j) (u a random unit direction, n_j Gaussian noise
    of unit expected length, s_j log-uniform in [0.5, 2]), with sum p. The m = max(1, K // 3)
    "conflicting" rows are t_k(−p/‖p‖ + 0.2 e_k), with t_k ∈ [0.2, 0.8]·‖p‖/m and e_k unit
    vectors orthogonal to the majority rows. Then Σ_k t_k ≤ 0.8‖p‖, and every conflicting row has
    <g_k, Σ_i g_i> ≤ −t_k‖p‖ + t_k Σ_l t_l + 0.04 t_k Σ_l t_l ≤ −0.168 t_k‖p‖ < 0: it conflicts
    with the sum (and the mean) of all the gradients, by design nearly anti-parallel to it.
    """
    if num_tasks < 2 or dim < num_tasks + 1:
        raise ValueError("conflicting_jacobian needs K ≥ 2 and dim ≥ K + 1")
    num_conflicting = max(1, num_tasks // 3)
    num_majority = num_tasks - num_conflicting
    direction = rng.standard_normal(dim)
    direction /= np.linalg.norm(direction)
    scales = np.exp(rng.uniform(np.log(0.5), np.log(2.0), size=(num_majority, 1)))
    noise = rng.standard_normal((num_majority, dim)) / np.sqrt(dim)
    majority = scales * (direction + 0.3 * noise)
    total = majority.sum(axis=0)
    total_norm = float(np.linalg.norm(total))
    sizes = rng.uniform(0.2, 0.8, size=(num_conflicting, 1)) * total_norm / num_conflicting
    orthogonal = _unit_orthogonal_noise(rng, num_conflicting, dim, majority)
    conflicting = sizes * (-total / total_norm + 0.2 * orthogonal)
    return np.concatenate([majority, conflicting])


def pareto_stationary_jacobian(
    rng: np.random.Generator, num_tasks: int, dim: int, *, on_face: bool = False
) -> FloatArray:
    """A (K, dim) Jacobian whose rows have 0 in their convex hull (the dual's non-smooth case).

    ``on_face=False``: rows g_1..g_{K−1} Gaussian and g_K = −(Σ_{i<K} α_i g_i)/α_K with α drawn
    from Dirichlet(2, ..., 2), so Σ α_i g_i = 0 with every α_i > 0 (0 in the relative interior of
    the hull; rank K − 1). Needs K ≥ 2, dim ≥ K − 1.

    ``on_face=True``: g_1 = v, g_2 = −s·v (s log-uniform in [0.5, 2]) and, for i ≥ 3,
    g_i = c_i·u + 0.5·n_i with u ⊥ v a unit vector, c_i ∈ [0.5, 2] and n_i ⊥ {u, v}. Then
    0 = (s·g_1 + g_2)/(1 + s) lies on the edge [g_1, g_2], while <g_i, u> = c_i > 0 for i ≥ 3 and
    <g_1, u> = <g_2, u> = 0: 0 lies on a proper face of the hull, not in its interior
    (for K = 2 the hull is just the segment). Needs K ≥ 2, dim ≥ 3.
    """
    if num_tasks < 2:
        raise ValueError("pareto_stationary_jacobian needs K ≥ 2")
    if not on_face:
        if dim < num_tasks - 1:
            raise ValueError("pareto_stationary_jacobian needs dim ≥ K − 1")
        rows = rng.standard_normal((num_tasks - 1, dim))
        alpha = rng.dirichlet(np.full(num_tasks, 2.0))
        last = -(alpha[:-1] @ rows) / alpha[-1]
        return np.concatenate([rows, last[None, :]])
    if dim < 3:
        raise ValueError("pareto_stationary_jacobian(on_face=True) needs dim ≥ 3")
    v = rng.standard_normal(dim)
    u = _unit_orthogonal_noise(rng, 1, dim, v[None, :])[0]
    s = np.exp(rng.uniform(np.log(0.5), np.log(2.0)))
    others = num_tasks - 2
    coeffs = rng.uniform(0.5, 2.0, size=(others, 1))
    normals = _unit_orthogonal_noise(rng, others, dim, np.stack([u, v]))
    return np.concatenate([v[None, :], -s * v[None, :], coeffs * u + 0.5 * normals])
