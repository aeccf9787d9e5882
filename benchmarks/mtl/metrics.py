r"""Scores shared by the problems: Δm%, mean ± std, distance to a front and 2-D hypervolume.

LibMTL's relative improvement over a baseline (here LS) on T metrics $M_t$ is

$$
\Delta m\% = \frac{100}{T}\sum_{t=1}^{T} (-1)^{s_t}\,\frac{M_t - M_t^{LS}}{M_t^{LS}},
$$

with $s_t = 1$ when lower is better and $s_t = 0$ when higher is better: positive is better.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

#: Baseline values below this in magnitude count as 0 (e.g. a BLEU-4 of 1e-15).
ZERO = 1e-9


def delta_m(
    metrics: Mapping[str, float],
    baseline: Mapping[str, float],
    lower_is_better: Mapping[str, bool],
) -> float:
    """Δm% of ``metrics`` against ``baseline`` over the keys of ``lower_is_better``."""
    if not lower_is_better:
        raise ValueError("`lower_is_better` must name at least one metric.")
    total = 0.0
    for key, lower in lower_is_better.items():
        base = float(baseline[key])
        if abs(base) < ZERO:
            raise ValueError(f"the baseline's {key!r} is 0 ({base:g}): Δm% is undefined.")
        sign = -1.0 if lower else 1.0
        total += sign * (float(metrics[key]) - base) / base
    return 100.0 * total / len(lower_is_better)


def mean_std(values: Sequence[float | None]) -> dict[str, Any]:
    """``{"mean", "std", "values"}`` over the finite values (sample std, 0 for one value)."""
    clean = [None if v is None or not math.isfinite(float(v)) else float(v) for v in values]
    finite = [v for v in clean if v is not None]
    if not finite:
        return {"mean": None, "std": None, "values": clean}
    std = float(np.std(finite, ddof=1)) if len(finite) > 1 else 0.0
    return {"mean": float(np.mean(finite)), "std": std, "values": clean}


def distance_to_polyline(points: np.ndarray, curve: np.ndarray) -> np.ndarray:
    r"""Euclidean distance from each row of ``points`` (N, 2) to the polyline ``curve`` (M, 2).

    $d(p) = \min_j \min_{t\in[0,1]} \|p - (a_j + t(b_j - a_j))\|$ over the segments
    $[a_j, b_j]$ of the curve.
    """
    points = np.asarray(points, np.float64)
    curve = np.asarray(curve, np.float64)
    a, ab = curve[:-1], curve[1:] - curve[:-1]
    ap = points[:, None, :] - a[None]
    t = np.clip(np.sum(ap * ab, -1) / np.maximum(np.sum(ab * ab, -1), 1e-300), 0.0, 1.0)
    gap = ap - t[..., None] * ab[None]
    return np.sqrt(np.min(np.sum(gap * gap, -1), axis=1))


def hypervolume_2d(points: np.ndarray, reference: Sequence[float]) -> float:
    r"""Area dominated by ``points`` (N, 2, minimisation) and bounded by ``reference``.

    $HV = \lambda\big(\bigcup_i [f_1^i, r_1]\times[f_2^i, r_2]\big)$; points not strictly
    below the reference in both objectives add nothing.
    """
    pts = np.asarray(points, np.float64)
    r1, r2 = float(reference[0]), float(reference[1])
    pts = pts[np.all(np.isfinite(pts), 1) & (pts[:, 0] < r1) & (pts[:, 1] < r2)]
    area, best_f2 = 0.0, r2
    for f1, f2 in pts[np.lexsort((pts[:, 1], pts[:, 0]))]:  # by f1, then f2
        if f2 < best_f2:
            area += (r1 - f1) * (best_f2 - f2)
            best_f2 = f2
    return float(area)


def rank(scores: Mapping[str, float | None], *, higher_is_better: bool = True) -> list[str]:
    """Method names sorted best first by score; missing or non-finite scores go last."""

    def key(name: str) -> tuple[int, float]:
        v = scores[name]
        if v is None or not math.isfinite(v):
            return (1, 0.0)
        return (0, -v if higher_is_better else v)

    return sorted(scores, key=key)
