"""Which property each weighting promises, and the matrices the property suite checks them on.

The properties are TorchJD's (SimplexLab/TorchJD, ``tests/unit/aggregation``), stated for the
aggregator $A(J) = J^\\top c$ with $c$ the weighting's coefficients for the Gram matrix
$JJ^\\top$ and a fresh ``init(K)`` state:

- ``structure``: $c$ has shape ``(K,)`` and the Gram matrix's dtype, and $c$ and $A(J)$ are
  finite, on every input including matrices scaled by 0 to 1e15.
- ``non_conflicting``: $JA(J)$ has no negative entry (no task gets worse to first order).
- ``permutation_invariant``: permuting the rows of $J$ (and any per-task argument with them)
  leaves $A(J)$ unchanged.
- ``linear_under_scaling``: $A(\\operatorname{diag}(\\alpha a + \\beta b)J) =
  \\alpha A(\\operatorname{diag}(a)J) + \\beta A(\\operatorname{diag}(b)J)$ for $a, b > 0$,
  $\\alpha, \\beta > 0$.
- ``strongly_stationary``: $A(J) = 0$ only if $J$ is strongly stationary (some $w > 0$ has
  $J^\\top w = 0$); checked as TorchJD does, by its contraposition: $\\|A(J)\\|$ is not small on
  matrices that are not strongly stationary.
- ``fixed_values``: $c$ equals a published or closed-form value on a shared matrix (`GOLDEN`).
- ``one_task``: for $K = 1$, $c$ is finite and positive ($A(J)$ points along the one gradient).
- ``zero_matrix``: for $J = 0$, $c$ and the new state are finite (a zero step poisons nothing).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

import camegrad_jax as cg

STRUCTURE = "structure"
NON_CONFLICTING = "non_conflicting"
PERMUTATION_INVARIANT = "permutation_invariant"
LINEAR_UNDER_SCALING = "linear_under_scaling"
STRONGLY_STATIONARY = "strongly_stationary"
FIXED_VALUES = "fixed_values"
ONE_TASK = "one_task"
ZERO_MATRIX = "zero_matrix"

PROPERTIES = (
    STRUCTURE,
    NON_CONFLICTING,
    PERMUTATION_INVARIANT,
    LINEAR_UNDER_SCALING,
    STRONGLY_STATIONARY,
    FIXED_VALUES,
    ONE_TASK,
    ZERO_MATRIX,
)

W = cg.weightings

WEIGHTINGS: dict[str, Callable[[int], cg.Weighting]] = {
    "came": lambda k: W.came(),
    "cagrad": lambda k: W.cagrad(),
    "mgda": lambda k: W.mgda(),
    "upgrad": lambda k: W.upgrad(),
    "dualproj": lambda k: W.dualproj(),
    "pcgrad": lambda k: W.pcgrad(),
    "gradvac": lambda k: W.gradvac(),
    "imtl_g": lambda k: W.imtl_g(),
    "aligned_mtl": lambda k: W.aligned_mtl(),
    "config": lambda k: W.config(),
    "nash_mtl": lambda k: W.nash_mtl(),
    "fairgrad": lambda k: W.fairgrad(),
    "mean": lambda k: W.mean(),
    "summed": lambda k: W.summed(),
    "linear": lambda k: W.linear(np.arange(1.0, k + 1.0)),
    "rlw": lambda k: W.rlw(),
    "dwa": lambda k: W.dwa(),
    "uncertainty": lambda k: W.uncertainty(),
    "famo": lambda k: W.famo(),
}
"""Each weighting for K tasks, with its default arguments (``linear``: weights 1, 2, ..., K, so
TorchJD's ``Constant([1, 2])`` at K = 2)."""

LOSS_BASED = frozenset({"dwa", "uncertainty", "famo"})
"""Weightings that read ``losses=`` (given the same positive losses, permuted with the tasks)."""

NOT_PROMISED: dict[str, dict[str, str]] = {
    "came": {
        NON_CONFLICTING: "the default radius ρ = 0.5 may exclude every non-conflicting direction",
        LINEAR_UNDER_SCALING: "the conflict ball is centred on the weighted mean",
    },
    "cagrad": {
        NON_CONFLICTING: "only for c ≥ 1; the default is c = 0.5",
        LINEAR_UNDER_SCALING: "the conflict ball is centred on the mean gradient",
    },
    "mgda": {
        LINEAR_UNDER_SCALING: "the minimum-norm point of the hull is not linear in the rows",
        STRONGLY_STATIONARY: "d = 0 whenever 0 is in the convex hull (weak stationarity)",
    },
    "upgrad": {},
    "dualproj": {
        LINEAR_UNDER_SCALING: "it projects the mean gradient, not each gradient",
    },
    "pcgrad": {
        NON_CONFLICTING: "for K ≥ 3 a projected gradient can conflict again",
        PERMUTATION_INVARIANT: "the projection orders are drawn per task index from the key",
        STRONGLY_STATIONARY: "not established for K ≥ 3 (for K = 2 it is UPGrad's sum)",
    },
    "gradvac": {
        NON_CONFLICTING: "for K ≥ 3 a corrected gradient can conflict again",
        PERMUTATION_INVARIANT: "the visiting orders are drawn per task index from the key",
        STRONGLY_STATIONARY: "not established for K ≥ 3 (its first step is PCGrad's)",
    },
    "imtl_g": {
        NON_CONFLICTING: "the common projection is negative when 1ᵀG⁺n < 0",
        LINEAR_UNDER_SCALING: "the coefficients are normalised to sum to 1",
        STRONGLY_STATIONARY: "d = 0 whenever 1ᵀG⁺n = 0, which needs no stationarity",
    },
    "aligned_mtl": {
        NON_CONFLICTING: "the aligned gradients are summed whatever their conflicts",
        LINEAR_UNDER_SCALING: "the aligning matrix depends on the rows' scales",
    },
    "config": {
        NON_CONFLICTING: "with dependent gradients the least-squares direction can conflict",
        STRONGLY_STATIONARY: "with dependent gradients the projections on b can sum to 0",
    },
    "nash_mtl": {
        NON_CONFLICTING: "with no positive solution (rank-deficient G) the ridge's one conflicts",
        LINEAR_UNDER_SCALING: "α scales as 1/s and the update is clipped to max_norm",
    },
    "fairgrad": {
        NON_CONFLICTING: "with no positive solution (rank-deficient G) the ridge's one conflicts",
        LINEAR_UNDER_SCALING: "w scales as s^(-2α/(1+α))",
    },
    "mean": {NON_CONFLICTING: "a fixed combination ignores conflicts"},
    "summed": {NON_CONFLICTING: "a fixed combination ignores conflicts"},
    "linear": {
        NON_CONFLICTING: "a fixed combination ignores conflicts",
        PERMUTATION_INVARIANT: "its weights belong to task positions, not to the gradients",
    },
    "rlw": {
        NON_CONFLICTING: "a random combination ignores conflicts",
        PERMUTATION_INVARIANT: "the draw belongs to task positions (invariant in distribution)",
        FIXED_VALUES: "draws come from JAX's PRNG; no published value to compare with",
    },
    "dwa": {NON_CONFLICTING: "the coefficients ignore the gradients"},
    "uncertainty": {NON_CONFLICTING: "the coefficients ignore the gradients"},
    "famo": {NON_CONFLICTING: "the coefficients ignore the gradients"},
}
"""For each weighting, the properties it does not promise and why (filled in below)."""

TORCHJD_LOOSER: dict[tuple[str, str], tuple[float, str]] = {
    (
        "upgrad",
        LINEAR_UNDER_SCALING,
    ): (
        6e-2,
        "checked at TorchJD's own tolerance for UPGrad, atol = rtol = 6e-2 (TorchJD's "
        "tests/unit/aggregation/test_upgrad.py); "
        "float32 misses the default 1e-4 by 5.4e-4 on |d| = 0.13 on a scaled 20x10 input whose "
        "face has condition 2.6e6, at float32's resolution of the Gram matrix",
    ),
}
"""Promised properties that TorchJD itself checks at a looser float32 tolerance for that
aggregator: (tolerance, why); float64 still checks them at the default tolerances / 1000."""

PROMISES: dict[str, frozenset[str]] = {
    name: frozenset(PROPERTIES) - frozenset(reasons) for name, reasons in NOT_PROMISED.items()
}


def promised(prop: str) -> list[str]:
    """The weightings that promise ``prop``, in table order."""
    return [name for name in WEIGHTINGS if prop in PROMISES[name]]


# --- inputs ----------------------------------------------------------------------------------
# Samplers written to TorchJD's definitions (tests/unit/aggregation/_matrix_samplers.py):
# singular values |N(0, 1)|, singular vectors uniform; "strong": a vector v > 0 with vᵀJ = 0;
# "strictly weak": some v ≥ 0, v ≠ 0 with vᵀJ = 0 but no such v > 0; "non-weak": none at all.


def _orthonormal_complement(rng: np.random.Generator, basis: np.ndarray) -> np.ndarray:
    """Random orthonormal columns spanning the orthogonal complement of ``basis``'s columns."""
    m, k = basis.shape
    draw = rng.standard_normal((m, m - k))
    draw -= basis @ (basis.T @ draw)
    q, _ = np.linalg.qr(draw)
    return q


def _with_left(rng: np.random.Generator, left: np.ndarray, n: int, rank: int) -> np.ndarray:
    """``left[:, :rank] diag(s) Vᵀ`` with random singular values s and right vectors V."""
    right = _orthonormal_complement(rng, np.zeros((n, 0)))
    return left[:, :rank] @ np.diag(np.abs(rng.standard_normal(rank))) @ right[:, :rank].T


def normal(rng: np.random.Generator, m: int, n: int, rank: int) -> np.ndarray:
    return _with_left(rng, _orthonormal_complement(rng, np.zeros((m, 0))), n, rank)


def strong(rng: np.random.Generator, m: int, n: int, rank: int) -> np.ndarray:
    """Rows orthogonal to a positive v: vᵀJ = 0 with v > 0 (rank < m)."""
    v = np.abs(rng.standard_normal(m))[:, None]
    return _with_left(rng, _orthonormal_complement(rng, v / np.linalg.norm(v)), n, rank)


def strictly_weak(rng: np.random.Generator, m: int, n: int, rank: int) -> np.ndarray:
    """vᵀJ = 0 for a v ≥ 0 with a zero entry, and a non-negative left singular vector v' with
    disjoint support (v + v' > 0) rules out any w > 0 with wᵀJ = 0 (rank < m)."""
    u = np.abs(rng.standard_normal(m))
    order = rng.permutation(m)
    split = int(rng.integers(1, m))
    v, v_prime = np.zeros(m), np.zeros(m)
    v[order[:split]] = u[order[:split]] / np.linalg.norm(u[order[:split]])
    v_prime[order[split:]] = u[order[split:]] / np.linalg.norm(u[order[split:]])
    pair = np.stack([v, v_prime], axis=1)
    left = np.hstack([v_prime[:, None], _orthonormal_complement(rng, pair)])
    return _with_left(rng, left, n, rank)


def non_weak(rng: np.random.Generator, m: int, n: int, rank: int) -> np.ndarray:
    """A positive left singular vector: no v ≥ 0, v ≠ 0 has vᵀJ = 0."""
    u = np.abs(rng.standard_normal(m))[:, None]
    u /= np.linalg.norm(u)
    left = np.hstack([u, _orthonormal_complement(rng, u)])
    return _with_left(rng, left, n, rank)


_rng = np.random.default_rng(0)

NORMAL = {
    "normal 4x3 rank 3": normal(_rng, 4, 3, 3),
    "normal 4x3 rank 2": normal(_rng, 4, 3, 2),
    "normal 4x3 rank 1": normal(_rng, 4, 3, 1),
    "normal 2x5 rank 2": normal(_rng, 2, 5, 2),
    "normal 2x5 rank 1": normal(_rng, 2, 5, 1),
}
STRONG = {"strong 20x10 rank 5": strong(_rng, 20, 10, 5)}
NON_STRONG = {
    "strictly weak 20x10 rank 5": strictly_weak(_rng, 20, 10, 5),
    "non-weak 20x10 rank 5": non_weak(_rng, 20, 10, 5),
    "non-weak 20x10 rank 10": non_weak(_rng, 20, 10, 10),
}
ZERO = {"zero 4x3": np.zeros((4, 3))}

TYPICAL = {**ZERO, **NORMAL, **STRONG, **NON_STRONG}
"""TorchJD's "typical" matrices: zero, random of every rank, and the three stationarity kinds."""

SCALES = (0.0, 1e-10, 1e3, 1e5, 1e10, 1e15)
SCALED = {
    f"{name} x {scale:g}": scale * NORMAL[name]
    for name in ("normal 4x3 rank 3", "normal 2x5 rank 2")
    for scale in SCALES
}
"""TorchJD's scaled matrices: the same rows from 0 to 1e15 (1e30 in the Gram matrix)."""

ONE_TASK_MATRICES = {"1x3": normal(_rng, 1, 3, 1), "1x3 x 1e-10": 1e-10 * normal(_rng, 1, 3, 1)}


def losses_for(num_tasks: int) -> np.ndarray:
    """Positive task losses for the loss-based weightings (distinct, so a permutation shows)."""
    return np.linspace(0.5, 2.0, num_tasks)


# --- fixed values ----------------------------------------------------------------------------

TORCHJD_JAC = np.array([[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]])
"""J_base of TorchJD's tests/unit/aggregation/test_values.py (SimplexLab/TorchJD)."""

LOSSES = {"losses": np.array([1.0, 3.0])}


class Golden(NamedTuple):
    """A value to meet at TorchJD's ``atol = 1e-4``: the coefficients, or the update Jᵀc."""

    jacobian: np.ndarray
    coeffs: tuple[float, ...] | None
    update: tuple[float, ...] | None
    source: str
    extra: dict[str, Any]


def _c(values: tuple[float, ...], source: str, jac: np.ndarray = TORCHJD_JAC, **extra: Any):
    return Golden(jac, values, None, source, extra)


GOLDEN: dict[str, Golden] = {
    # Published in TorchJD's test_values.py, as a weighting's coefficients ...
    "mgda": _c((0.6, 0.4), "TorchJD MGDAWeighting"),
    "pcgrad": _c((2.2222, 1.5789), "TorchJD PCGradWeighting"),
    "imtl_g": _c((0.5923, 0.4077), "TorchJD IMTLGWeighting"),
    "mean": _c((0.5, 0.5), "TorchJD MeanWeighting"),
    "summed": _c((1.0, 1.0), "TorchJD SumWeighting"),
    "linear": _c((1.0, 2.0), "TorchJD ConstantWeighting([1, 2])"),
    # TorchJD's CAGradWeighting(c=0.5) [0.7041, 0.5] does not rescale; our default divides by
    # 1 + c² = 1.25.
    "cagrad": _c((0.7041 / 1.25, 0.5 / 1.25), "TorchJD CAGradWeighting(0.5) / 1.25"),
    # TorchJD's AlignedMTLWeighting [0.5591, 0.4083] has preferences 1/K; ours sums (x K).
    "aligned_mtl": _c((1.1181, 0.8165), "TorchJD AlignedMTLWeighting x 2"),
    # GradVac's targets start at 0, so its first step is PCGrad's (TorchJD's GradVac too).
    "gradvac": _c((2.2222, 1.5789), "TorchJD GradVac (first step)"),
    "fairgrad": _c((0.5915, 0.4071), "TorchJD FairGrad(alpha=1)"),
    # ... or as an aggregator's update d = Jᵀc.
    "config": Golden(TORCHJD_JAC, None, (0.1588, 2.0706, 2.0706), "TorchJD ConFIG", {}),
    "nash_mtl": Golden(TORCHJD_JAC, None, (0.0542, 0.7061, 0.7061), "TorchJD NashMTL(2)", {}),
    # Closed forms. TorchJD's UPGrad [1.1109, 0.7894] and DualProj [0.6109, 0.5] solve a QP
    # regularised by 1e-4·I; with G = [[18, -22], [-22, 38]] the exact projections are
    # ((1 + 22/18)/2, (1 + 22/38)/2) and (11/18, 1/2).
    "upgrad": _c(((1 + 22 / 18) / 2, (1 + 22 / 38) / 2), "exact projection"),
    "dualproj": _c((11 / 18, 1 / 2), "exact projection"),
    # CAME-Grad's worked example, two unit gradients at 120°: a = 1.5, γ = 4/3, ν = 0.2.
    "came": _c((1.8, 1.8), "docstring example", np.array([[1.0, 0.0], [-0.5, 0.75**0.5]])),
    # Loss-based weightings at their first step, by the papers' formulas.
    "dwa": _c((1.0, 1.0), "DWA: 1 for the first two steps", **LOSSES),
    "uncertainty": _c((0.5, 0.5), "uncertainty: e^(-s)/2 at s = 0", **LOSSES),
    "famo": _c((0.75, 0.25), "FAMO: ∝ 1/L at equal logits", **LOSSES),
}
"""Fixed values on shared matrices, each with where it comes from."""


# --- the table in docs/properties.md ---------------------------------------------------------

_HEADERS = {
    STRUCTURE: "structure",
    NON_CONFLICTING: "non-conflicting",
    PERMUTATION_INVARIANT: "permutation",
    LINEAR_UNDER_SCALING: "linear",
    STRONGLY_STATIONARY: "strongly stationary",
    FIXED_VALUES: "fixed values",
    ONE_TASK: "K = 1",
    ZERO_MATRIX: "J = 0",
}


def markdown_table() -> str:
    """The weighting × property table (✓ promised, – not, ✓* promised, float64-checked only),
    then the reason for every –, as docs/properties.md shows them."""
    lines = [
        "| weighting | " + " | ".join(_HEADERS[p] for p in PROPERTIES) + " |",
        "|---|" + "---|" * len(PROPERTIES),
    ]
    for name in WEIGHTINGS:
        marks = [
            ("✓†" if (name, p) in TORCHJD_LOOSER else "✓") if p in PROMISES[name] else "–"
            for p in PROPERTIES
        ]
        lines.append(f"| `{name}` | " + " | ".join(marks) + " |")
    lines += ["", "Not promised (–):", ""]
    lines += [
        f"- `{name}`, {_HEADERS[p]}: {reason}."
        for name, reasons in NOT_PROMISED.items()
        for p, reason in reasons.items()
    ]
    lines += ["", "At TorchJD's own tolerance for that aggregator (✓†):", ""]
    looser = TORCHJD_LOOSER.items()
    lines += [f"- `{name}`, {_HEADERS[p]}: {why}." for (name, p), (_, why) in looser]
    return "\n".join(lines) + "\n"
