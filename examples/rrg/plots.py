"""Training curves and CAME-Grad diagnostics as PNG files (matplotlib, Agg backend)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

#: The metrics of the sweep figure.
SWEEP_KEYS = ("ce14_f1_macro", "ce5_f1_micro", "BLEU_4")


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


def _dynamics(history: Mapping[str, Any], key: str) -> tuple[np.ndarray, np.ndarray]:
    """The steps that recorded ``key`` and its values there."""
    steps = [(i, s[key]) for i, s in enumerate(history["steps"]) if key in s]
    if not steps:
        return np.zeros(0), np.zeros(0)
    index, values = zip(*steps, strict=True)
    return np.asarray(index), np.asarray(values, np.float64)


def plot_dilemma(
    runs: Mapping[str, Sequence[Mapping[str, Any]]], path: str | Path, title: str
) -> None:
    """The double dilemma of every optimizer (``runs[name]``: histories, one per seed).

    Panels: the distribution of cos(g_lm, g_cls) over all recorded steps (left of 0: the
    tasks conflict), the cosine over training, the magnitude ratio ‖g_lm‖/‖λ_cls g_cls‖ over
    training (log scale; 1: balanced), and CAME-Grad's γ and ν_t.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5), layout="constrained")
    (ax_hist, ax_cos), (ax_ratio, ax_came) = axes
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    bins = np.linspace(-1.0, 1.0, 41)
    for i, (name, histories) in enumerate(runs.items()):
        color = colors[i % len(colors)]
        cosines = [_dynamics(h, "dynamics/cosine") for h in histories]
        pooled = np.concatenate([v for _, v in cosines]) if cosines else np.zeros(0)
        if not len(pooled):
            continue
        share = np.mean(pooled < 0.0)
        ax_hist.hist(pooled, bins=bins, density=True, histtype="step", color=color,
                     label=f"{name}: {share:.0%} of steps < 0")  # fmt: skip
        for ax, key, log in (
            (ax_cos, "dynamics/cosine", False),
            (ax_ratio, "dynamics/ratio", True),
        ):
            for seed, h in enumerate(histories):
                x, y = _dynamics(h, key)
                y = np.log10(np.maximum(y, 1e-12)) if log else y
                window = max(1, len(y) // 20)
                ax.plot(x, _smooth(y, window), color=color, alpha=0.9 if seed == 0 else 0.35,
                        label=name if seed == 0 else None)  # fmt: skip
        for key, style in (("gain", "-"), ("fusion", "--")):
            x, y = _dynamics(histories[0], key)
            if len(y):
                ax_came.plot(x, _smooth(y), style, color=color, label=f"{name}: {key}")
    ax_hist.axvline(0.0, color="black", lw=0.8)
    ax_hist.set(title="cos(g_lm, g_cls) over all recorded steps", xlabel="cosine", ylabel="density")
    ax_cos.axhline(0.0, color="black", lw=0.8)
    ax_cos.set(title="direction: cos(g_lm, g_cls) during training (smoothed)", xlabel="step")
    ax_ratio.axhline(0.0, color="black", lw=0.8)
    ax_ratio.set(title="magnitude: log10 ‖g_lm‖ / ‖λ_cls g_cls‖ (smoothed)", xlabel="step")
    ax_came.set(title="CAME-Grad: γ (gain) and ν_t (fusion), first seed", xlabel="step")
    for ax in axes.flat:
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_sweep(summary: Mapping[str, Any], path: str | Path, keys: Sequence[str]) -> None:
    """One bar chart per metric in ``keys``: every variant's mean over seeds, the seeds as dots,
    LS's mean as a dashed line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(summary)
    fig, axes = plt.subplots(1, len(keys), figsize=(4.5 * len(keys), 4.2), layout="constrained")
    for ax, key in zip(np.atleast_1d(axes), keys, strict=True):
        means = [summary[n][key]["mean"] or 0.0 for n in names]
        ax.bar(range(len(names)), means, color="#9ecae1")
        for j, n in enumerate(names):
            values = [v for v in summary[n][key]["values"] if v is not None]
            ax.plot([j] * len(values), values, "k.", ms=5)
        if "ls" in summary and summary["ls"][key]["mean"] is not None:
            ax.axhline(summary["ls"][key]["mean"], color="gray", ls="--", lw=1, label="LS mean")
            ax.legend(fontsize=8)
        ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=8)
        ax.set_title(summary[names[0]][key]["label"])
        low = min(v for n in names for v in summary[n][key]["values"] if v is not None)
        ax.set_ylim(bottom=max(0.0, low - 0.05))
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m examples.rrg.plots SWEEP_JSON OUT_PNG``: the sweep figure of a saved
    ``sweep.json`` (how the docs draw theirs from a recorded sweep)."""
    import argparse
    import json

    parser = argparse.ArgumentParser(prog="python -m examples.rrg.plots", description=main.__doc__)
    parser.add_argument("sweep_json", type=Path, help="a sweep.json written by the demo's --sweep")
    parser.add_argument("out_png", type=Path, help="the PNG to write")
    args = parser.parse_args(argv)
    summary = json.loads(args.sweep_json.read_text())["variants"]
    args.out_png.parent.mkdir(parents=True, exist_ok=True)
    plot_sweep(summary, args.out_png, keys=SWEEP_KEYS)


if __name__ == "__main__":
    main()
