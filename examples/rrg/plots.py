"""Training curves and CAME-Grad diagnostics as PNG files (matplotlib, Agg backend)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np


def _smooth(values: Sequence[float], window: int = 25) -> np.ndarray:
    """Trailing moving average (the raw per-batch losses are noisy)."""
    x = np.asarray(values, np.float64)
    if len(x) < 2:
        return x
    w = max(1, min(window, len(x) // 5 or 1))
    c = np.cumsum(np.insert(x, 0, 0.0))
    head = c[1:w] / np.arange(1, w)
    return np.concatenate([head, (c[w:] - c[:-w]) / w])


def plot_runs(
    runs: Mapping[str, Sequence[Mapping[str, Any]]], path: str | Path, title: str
) -> None:
    """One figure for several optimizers: ``runs[name]`` is a list of histories (one per seed).

    Panels: training LM loss, training classification loss (smoothed, mean over seeds),
    validation CE-F1 (micro) per epoch, and CAME-Grad's γ, ν_t and cos(g_lm, g_cls) per step.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5), layout="constrained")
    (ax_lm, ax_cls), (ax_val, ax_diag) = axes
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (name, histories) in enumerate(runs.items()):
        color = colors[i % len(colors)]
        for ax, key in ((ax_lm, "lm"), (ax_cls, "cls")):
            curves = [_smooth([s[key] for s in h["steps"]]) for h in histories if h["steps"]]
            if curves:
                n = min(len(c) for c in curves)
                ax.plot(np.mean([c[:n] for c in curves], axis=0), color=color, label=name)
        epochs = [h["epochs"] for h in histories if h["epochs"]]
        if epochs:
            n = min(len(e) for e in epochs)
            f1 = np.mean([[e["val_ce14_f1_micro"] for e in ep[:n]] for ep in epochs], axis=0)
            ax_val.plot(np.arange(1, n + 1), f1, "o-", color=color, label=name)
        steps = histories[0]["steps"] if histories else []
        for key, style in (("gain", "-"), ("fusion", "--"), ("cosines/0/1", ":")):
            if steps and key in steps[0]:
                ax_diag.plot(
                    _smooth([s[key] for s in steps]), style, color=color, label=f"{name}: {key}"
                )
    ax_lm.set(title="training LM loss", xlabel="step")
    ax_cls.set(title="training classification loss", xlabel="step")
    ax_val.set(title="validation CE-F1 (micro, 14 obs.)", xlabel="epoch")
    ax_diag.set(title="CAME-Grad: γ (gain), ν_t (fusion), cos(g_lm, g_cls)", xlabel="step")
    for ax in axes.flat:
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_run(history: Mapping[str, Any], path: str | Path, title: str) -> None:
    """The same figure for a single run."""
    plot_runs({title: [history]}, path, title)
