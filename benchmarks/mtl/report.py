r"""From per-seed scores to summaries: mean ± std, paired Δm% against LS and a ranking.

Δm% is computed per seed against LS on the same seed (same data, starts and initialisation),
then averaged. Problems without Δm% (the toy, whose losses are negative) are ranked by their
``rank_by`` metrics in order, each in its own direction.
"""

from __future__ import annotations

import math
from typing import Any

from benchmarks.mtl.methods import BASELINE
from benchmarks.mtl.metrics import delta_m, mean_std, rank


def summarise(problem: dict[str, Any]) -> dict[str, Any]:
    """Adds ``summary`` (per method: every metric's mean/std, ``delta_m``, ``seconds``) and
    ``ranking`` (method names, best first) to a problem's result and returns it."""
    metrics = problem["metrics"]
    methods = problem["methods"]
    base = methods.get(BASELINE)
    keys = problem.get("delta_m_metrics")
    summary: dict[str, Any] = {}
    for name, res in methods.items():
        entry: dict[str, Any] = {k: mean_std(res["per_seed"][k]) for k in metrics}
        if keys and base is not None:
            values: list[float | None] = []
            for i in range(len(res["per_seed"][keys[0]])):
                own = {k: res["per_seed"][k][i] for k in keys}
                ref = {k: base["per_seed"][k][i] for k in keys}
                if any(v is None for v in (*own.values(), *ref.values())):
                    values.append(None)
                    continue
                try:
                    values.append(
                        delta_m(own, ref, {k: metrics[k]["lower_is_better"] for k in keys})
                    )
                except ValueError:  # a baseline metric of 0
                    values.append(None)
            entry["delta_m"] = mean_std(values)
        entry["seconds"] = res["seconds"]
        summary[name] = entry
    problem["summary"] = summary
    problem["ranking"] = _ranking(problem)
    return problem


def _ranking(problem: dict[str, Any]) -> list[str]:
    summary = problem["summary"]
    if problem.get("delta_m_metrics"):
        return rank({n: e["delta_m"]["mean"] for n, e in summary.items()})
    order = list(summary)
    for key in reversed(problem["rank_by"]):  # stable sorts: the first key decides last
        lower = problem["metrics"][key]["lower_is_better"]
        scores = {n: summary[n][key]["mean"] for n in order}
        order = [n for n in rank(scores, higher_is_better=not lower) if n in scores]
    return order


def _cell(stat: dict[str, Any], fmt: str) -> str:
    m, s = stat["mean"], stat["std"]
    if m is None or not math.isfinite(m):
        return "n/a"
    return f"{m:{fmt}} ± {s:{fmt}}"


def markdown(problem: dict[str, Any]) -> str:
    """The problem's table, best first: rank, method, metrics, Δm%, wall time."""
    metrics = problem["metrics"]
    has_dm = bool(problem.get("delta_m_metrics"))
    head = [
        "#",
        "method",
        *(m["label"] + (" ↓" if m["lower_is_better"] else " ↑") for m in metrics.values()),
    ]
    head += ["Δm% ↑"] if has_dm else []
    head += ["time (s)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for i, name in enumerate(problem["ranking"], 1):
        e = problem["summary"][name]
        cells = [str(i), name]
        cells += [_cell(e[k], ".4f") for k in metrics]
        if has_dm:
            cells.append(_cell(e["delta_m"], ".2f"))
        cells.append(f"{e['seconds']['total']:.1f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def came_position(problem: dict[str, Any], name: str = "CAME-Grad") -> str:
    """One sentence: where ``name`` ranks and which methods beat it."""
    ranking = problem["ranking"]
    if name not in ranking:
        return f"{name} was not run."
    pos = ranking.index(name) + 1
    ahead = ", ".join(ranking[: pos - 1]) or "none"
    return f"{name} ranks {pos} of {len(ranking)} (ahead of it: {ahead})."
