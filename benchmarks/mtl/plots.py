"""Figures of the suite (matplotlib, Agg): rankings, ZDT1's final points, per-task accuracies."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from benchmarks.mtl import zdt


def _color(name: str) -> str:
    if name == "CAME-Grad":
        return "tab:red"
    if name.startswith("CAME"):
        return "tab:orange"
    return "0.3" if name == "LS" else "tab:blue"


def ranking(problem: dict[str, Any], path: Path) -> Path:
    """Horizontal bars of the ranking score (Δm%, or the first ``rank_by`` metric), mean ± std."""
    names = problem["ranking"]
    key = "delta_m" if problem.get("delta_m_metrics") else problem["rank_by"][0]
    label = "Δm% vs LS (higher is better)" if key == "delta_m" else problem["metrics"][key]["label"]
    means = [problem["summary"][n][key]["mean"] for n in names]
    stds = [problem["summary"][n][key]["std"] for n in names]
    means = [np.nan if m is None else m for m in means]
    stds = [0.0 if s is None else s for s in stds]
    fig, ax = plt.subplots(figsize=(7.5, 0.32 * len(names) + 1.4), layout="constrained")
    y = np.arange(len(names))[::-1]
    ax.barh(y, means, xerr=stds, color=[_color(n) for n in names], capsize=2)
    ax.set_yticks(y, names, fontsize=8)
    ax.axvline(0.0, color="k", lw=0.8)
    ax.set_xlabel(label)
    ax.set_title(problem["title"], fontsize=10)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def zdt_points(problem: dict[str, Any], path: Path) -> Path:
    """One panel per method: the final objective vectors of every start over the true front."""
    names = problem["ranking"]
    ncols = min(5, len(names))
    nrows = -(-len(names) // ncols)
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(2.8 * ncols, 2.6 * nrows), squeeze=False, layout="constrained"
    )
    curve = zdt.front()
    for ax in axes.flat[len(names) :]:
        ax.set_visible(False)
    for ax, name in zip(axes.flat, names, strict=False):
        pts = np.asarray(problem["methods"][name]["final_objectives"])
        ax.plot(curve[:, 0], curve[:, 1], color="0.5", lw=2)
        ax.plot(pts[:, 0], np.minimum(pts[:, 1], 3.0), ".", ms=3, color=_color(name))
        ax.set_xlim(-0.05, 1.05)
        ax.set_ylim(-0.05, 3.0)
        ax.set_title(name, fontsize=8)
        ax.tick_params(labelsize=7)
    fig.suptitle("ZDT1: final $(f_1, f_2)$ of every start (f2 clipped at 3) and the true front")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def task_scatter(problem: dict[str, Any], path: Path) -> Path:
    """Mean ± std of the first two metrics of every method, one point each."""
    keys = list(problem["metrics"])[:2]
    fig, ax = plt.subplots(figsize=(7.0, 5.5), layout="constrained")
    for name in problem["ranking"]:
        a, b = (problem["summary"][name][k] for k in keys)
        if a["mean"] is None or b["mean"] is None:
            continue
        ax.errorbar(
            a["mean"],
            b["mean"],
            xerr=a["std"],
            yerr=b["std"],
            fmt="o",
            ms=4,
            color=_color(name),
            capsize=2,
        )
        ax.annotate(
            name, (a["mean"], b["mean"]), fontsize=6, xytext=(3, 3), textcoords="offset points"
        )
    ax.set_xlabel(problem["metrics"][keys[0]]["label"])
    ax.set_ylabel(problem["metrics"][keys[1]]["label"])
    ax.set_title(problem["title"], fontsize=10)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def wall_times(problems: dict[str, dict[str, Any]], path: Path) -> Path:
    """Wall time per method (compilation included), one panel per problem."""
    fig, axes = plt.subplots(
        1, len(problems), figsize=(4.2 * len(problems), 6.0), squeeze=False, layout="constrained"
    )
    for ax, (key, problem) in zip(axes.flat, problems.items(), strict=True):
        names = list(problem["methods"])
        secs = [problem["methods"][n]["seconds"]["total"] for n in names]
        y = np.arange(len(names))[::-1]
        ax.barh(y, secs, color=[_color(n) for n in names])
        ax.set_yticks(y, names, fontsize=7)
        ax.set_xlabel("seconds (all seeds, compile included)")
        ax.set_title(key, fontsize=10)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
