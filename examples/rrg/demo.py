"""The main job: LS against CAME-Grad on the built-in synthetic RRG data, several seeds, one table.

``python -m examples.rrg.demo`` generates the synthetic dataset if it is absent (canonical
wording, see :func:`examples.rrg.synthetic.write_report`), trains LS (``loss_lm + 4·loss_cls``,
the authors' baseline) and CAME-Grad (task weights 1 and 4) with the same seeds, both with
classification-guided decoding, evaluates them on the test split and writes into ``--out``
(default ``runs/demo``):

* ``summary.md`` / ``summary.json``: mean ± std over seeds, two reference rows on the same test
  split (every study given the training split's most frequent report: the floor; every study
  given a report written from its reference labels by the generator's templates: the labeler's
  ceiling), CAME-Grad − LS per seed with a paired 95% interval and a verdict (better, worse or
  within the spread), and the gradient dynamics (how often the task gradients conflict, the
  median magnitude ratio ‖g_lm‖/‖λ_cls g_cls‖, CAME-Grad's γ and ν_t);
* ``curves.png`` (losses, validation CE-F1, CAME-Grad's diagnostics) and ``dilemma.png``
  (the double dilemma: cos(g_lm, g_cls) and the magnitude ratio over training).

``--ablation`` adds CAME-Grad's stage combinations; ``--sweep`` runs ρ, κ and ν one at a time
(2 seeds) and the ablation, and writes ``sweep.md``/``sweep.json``/``sweep.png``; ``--size``
picks a preset (``quick`` for CI, ``large`` for a GPU). A run whose ``metrics.json`` is already
in its folder with the same configuration is read, not trained again, so an interrupted demo or
sweep picks up where it stopped (delete the folder to retrain).
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from examples.rrg.data import clean_report, load_annotation
from examples.rrg.labeler import label_reports
from examples.rrg.metrics import evaluate_reports
from examples.rrg.observations import OBSERVATIONS
from examples.rrg.plots import SWEEP_KEYS, plot_dilemma, plot_runs, plot_sweep
from examples.rrg.synthetic import findings_from_labels, generate, write_report
from examples.rrg.train import TrainConfig, train

#: Columns of the table: (label, key in the test metrics or "train_seconds", format).
COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("CE-F1 micro", "ce14_f1_micro", ".4f"),
    ("CE-F1 macro", "ce14_f1_macro", ".4f"),
    ("CE-5 F1 micro", "ce5_f1_micro", ".4f"),
    ("BLEU-4", "BLEU_4", ".4f"),
    ("ROUGE-L", "ROUGE_L", ".4f"),
    ("train time (s)", "train_seconds", ".0f"),
)
#: The columns compared seed by seed (quality, not time).
PAIRED = ("ce14_f1_micro", "ce14_f1_macro", "ce5_f1_micro", "BLEU_4", "ROUGE_L")
#: The column the verdict line is about.
HEADLINE = "ce14_f1_macro"
ABLATION = ("ls", "came-rectify", "came-rectify-energy", "came")
LABELS = {
    "ls": "LS (λ·L, one backward)",
    "came-rectify": "rectification only",
    "came-rectify-energy": "+ energy injection",
    "came": "CAME-Grad (full)",
}
#: ``--sweep``: CAME-Grad's hyperparameters one at a time around the defaults (ρ 0.5, κ 1.5,
#: ν 0.2), then the stage ablation; name -> (optimizer, TrainConfig overrides).
SWEEP: dict[str, tuple[str, dict[str, Any]]] = {
    "ls": ("ls", {}),
    "came": ("came", {}),
    "rho=0.25": ("came", {"rho": 0.25}),
    "rho=1": ("came", {"rho": 1.0}),
    "kappa=None": ("came", {"kappa": None}),
    "kappa=3": ("came", {"kappa": 3.0}),
    "nu=0": ("came", {"nu": 0.0}),
    "nu=0.5": ("came", {"nu": 0.5}),
    "came-rectify": ("came-rectify", {}),
    "came-rectify-energy": ("came-rectify-energy", {}),
}


@dataclasses.dataclass(frozen=True)
class DemoSize:
    """How big the demo is: dataset, model, training length and evaluation."""

    num_studies: int
    epochs: int
    seeds: tuple[int, ...]
    val_limit: int | None
    test_limit: int | None
    beam_size: int
    image_size: int = 64
    d_model: int = 64
    num_layers: int = 2
    batch_size: int = 16
    lr: float = 3e-3


DEFAULT = DemoSize(5000, epochs=6, seeds=(0, 1, 2), val_limit=64, test_limit=None, beam_size=3)
QUICK = DemoSize(160, epochs=1, seeds=(0, 1), val_limit=16, test_limit=16, beam_size=1)
#: For a GPU: 4× the pixels, a wider and deeper model, more studies.
LARGE = DemoSize(
    10_000, epochs=8, seeds=(0, 1, 2), val_limit=256, test_limit=None, beam_size=3,
    image_size=128, d_model=128, num_layers=3, batch_size=32, lr=2e-3,
)  # fmt: skip
SIZES = {"default": DEFAULT, "quick": QUICK, "large": LARGE}


def _mean_std(values: Sequence[float | None]) -> tuple[float | None, float | None]:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return None, None
    return float(np.mean(finite)), float(np.std(finite, ddof=1)) if len(finite) > 1 else 0.0


def _value(run: Mapping[str, Any], key: str) -> float | None:
    return run["train_seconds"] if key == "train_seconds" else run["test"][key]


def summarise(results: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Per optimizer: mean and std over seeds of every column, and the per-seed values."""
    summary: dict[str, Any] = {}
    for name, runs in results.items():
        entry: dict[str, Any] = {"label": LABELS.get(name, name), "seeds": []}
        for label, key, _ in COLUMNS:
            values = [_value(r, key) for r in runs]
            mean, std = _mean_std(values)
            entry[key] = {"mean": mean, "std": std, "values": values, "label": label}
        entry["seeds"] = [r["config"]["seed"] for r in runs]
        summary[name] = entry
    return summary


def paired_differences(
    results: dict[str, list[dict[str, Any]]], baseline: str = "ls"
) -> dict[str, Any]:
    """Per optimizer other than ``baseline`` and per :data:`PAIRED` column: the difference to
    the baseline run of the same seed, its mean, std, paired 95% t-interval and a verdict:
    ``better`` / ``worse`` when the interval excludes 0, else ``within the spread``."""
    base = {r["config"]["seed"]: r for r in results.get(baseline, [])}
    out: dict[str, Any] = {}
    for name, runs in results.items():
        if name == baseline:
            continue
        entry: dict[str, Any] = {}
        for key in PAIRED:
            seeds, diffs = [], []
            for r in runs:
                seed = r["config"]["seed"]
                mine, theirs = _value(r, key), _value(base[seed], key) if seed in base else None
                if mine is not None and theirs is not None:
                    seeds.append(seed)
                    diffs.append(mine - theirs)
            mean = float(np.mean(diffs)) if diffs else None
            std = float(np.std(diffs, ddof=1)) if len(diffs) > 1 else None
            low = high = None
            verdict = "too few seeds"
            if mean is not None and std is not None:
                half = float(stats.t.ppf(0.975, len(diffs) - 1)) * std / math.sqrt(len(diffs))
                low, high = mean - half, mean + half
                verdict = "better" if low > 0 else "worse" if high < 0 else "within the spread"
            entry[key] = {"seeds": seeds, "differences": diffs, "mean": mean, "std": std,
                          "ci95": [low, high], "verdict": verdict}  # fmt: skip
        out[name] = entry
    return out


def reference_rows(annotation: Path, layout: str, test_limit: int | None) -> dict[str, Any]:
    """Test metrics of two reports written without a model, on the same test split: ``floor``
    (the training split's most frequent report, for every study: what a model that ignores
    the images writes at best) and ``ceiling`` (each study's reference labels written out by
    the generator's templates: what a perfect classifier feeding the templates would reach)."""
    splits = load_annotation(annotation, layout)
    test = splits["test"][:test_limit]
    references = [r.report for r in test]
    most_common = collections.Counter(r.report for r in splits["train"]).most_common(1)[0][0]
    labels = label_reports(references)
    written = []
    for i, row in enumerate(labels):
        rng = np.random.default_rng([7, i])
        stated = {o: int(v) for o, v in zip(OBSERVATIONS, row, strict=True) if v in (1, -1)}
        report, _ = write_report(findings_from_labels(stated, rng), rng, layout, "canonical")
        written.append(clean_report(report, layout))
    return {
        "floor": evaluate_reports([most_common] * len(test), references),
        "ceiling": evaluate_reports(written, references),
    }


def dynamics_summary(runs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Over every recorded step of every seed: the fraction with cos(g_lm, g_cls) < 0, the
    median cosine, the median magnitude ratio ‖g_lm‖/‖λ_cls g_cls‖ and median retention, and
    for CAME-Grad the median γ and mean ν_t."""
    rows = [s for r in runs for s in r["history"]["steps"] if "dynamics/cosine" in s]
    if not rows:
        return {"steps": 0}
    cosine = np.array([s["dynamics/cosine"] for s in rows])
    out: dict[str, Any] = {
        "steps": len(rows),
        "conflicting_fraction": float(np.mean(cosine < 0.0)),
        "median_cosine": float(np.median(cosine)),
        "median_ratio": float(np.median([s["dynamics/ratio"] for s in rows])),
        "median_retention": float(np.median([s["dynamics/retention"] for s in rows])),
    }
    if "gain" in rows[0]:
        out["median_gain"] = float(np.median([s["gain"] for s in rows]))
        out["mean_fusion"] = float(np.mean([s["fusion"] for s in rows]))
    return out


def _cell(entry: Mapping[str, Any], fmt: str) -> str:
    m, s = entry["mean"], entry["std"]
    return "n/a" if m is None else f"{m:{fmt}} ± {s:{fmt}}"


def markdown_table(summary: dict[str, Any], references: Mapping[str, Any] | None = None) -> str:
    """The summary as a markdown table, ``mean ± std`` over seeds, reference rows last."""
    head = "| optimizer | " + " | ".join(label for label, _, _ in COLUMNS) + " |"
    lines = [head, "|" + "---|" * (len(COLUMNS) + 1)]
    for entry in summary.values():
        cells = [_cell(entry[key], fmt) for _, key, fmt in COLUMNS]
        lines.append(f"| {entry['label']} | " + " | ".join(cells) + " |")
    names = {"floor": "reference: most frequent report", "ceiling": "reference: labels → templates"}
    for name, metrics in (references or {}).items():
        cells = [
            "–" if key == "train_seconds" or metrics.get(key) is None else f"{metrics[key]:{fmt}}"
            for _, key, fmt in COLUMNS
        ]
        lines.append(f"| *{names[name]}* | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def paired_table(paired: Mapping[str, Any], labels: Mapping[str, str]) -> str:
    """CAME-Grad − LS per seed, mean ± std and the 95% interval of every paired column."""
    titles = {key: label for label, key, _ in COLUMNS}
    lines = ["| optimizer − LS | metric | per seed | mean ± std | 95% interval | verdict |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    for name, entry in paired.items():
        for key, d in entry.items():
            seeds = ", ".join(f"{v:+.4f}" for v in d["differences"])
            mean = "n/a" if d["mean"] is None else f"{d['mean']:+.4f} ± {d['std'] or 0:.4f}"
            low, high = d["ci95"]
            ci = "n/a" if low is None else f"[{low:+.4f}, {high:+.4f}]"
            label = labels.get(name, name)
            lines.append(f"| {label} | {titles[key]} | {seeds} | {mean} | {ci} | {d['verdict']} |")
    return "\n".join(lines)


def verdict_line(paired: Mapping[str, Any], name: str = "came") -> str:
    """One sentence: is ``name`` better than LS on CE-F1 macro beyond the spread over seeds?"""
    if name not in paired:
        return ""
    d = paired[name][HEADLINE]
    if d["mean"] is None or d["std"] is None:
        return f"Verdict: {LABELS.get(name, name)} vs LS on CE-F1 macro: too few seeds to say."
    low, high = d["ci95"]
    return (
        f"Verdict: {LABELS.get(name, name)} vs LS on CE-F1 macro (14 observations): "
        f"**{d['verdict']}** (mean paired difference {d['mean']:+.4f}, 95% interval "
        f"[{low:+.4f}, {high:+.4f}] over {len(d['differences'])} seeds)."
    )


def dataset_path(size: DemoSize, layout: str = "iu_xray") -> Path:
    """Where the demo keeps the synthetic dataset of ``size``."""
    return Path(f"runs/data/{layout}_canonical_{size.num_studies}_{size.image_size}px")


def _train_all(
    variants: Mapping[str, tuple[str, Mapping[str, Any]]],
    out: Path,
    data: Path,
    size: DemoSize,
    backbone: str,
    progress: bool,
) -> dict[str, list[dict[str, Any]]]:
    results: dict[str, list[dict[str, Any]]] = {}
    for name, (optimizer, overrides) in variants.items():
        for seed in size.seeds:
            config = TrainConfig(
                data=str(data),
                out=str(out / name / f"seed{seed}"),
                backbone=backbone,
                optimizer=optimizer,
                epochs=size.epochs,
                seed=seed,
                val_limit=size.val_limit,
                test_limit=size.test_limit,
                beam_size=size.beam_size,
                image_size=size.image_size,
                d_model=size.d_model,
                num_layers=size.num_layers,
                batch_size=size.batch_size,
                lr=size.lr,
                **overrides,
            )
            result = _finished(config) or train(config, progress=progress)
            assert result is not None
            results.setdefault(name, []).append(result)
    return results


def _finished(config: TrainConfig) -> dict[str, Any] | None:
    """The result of a run of ``config`` already in ``config.out`` (any output folder), so an
    interrupted demo or sweep resumes where it stopped; None if there is none."""
    path = Path(config.out) / "metrics.json"
    if not path.is_file():
        return None
    result: dict[str, Any] = json.loads(path.read_text())
    ignore = {"out"}
    same = {k: v for k, v in result["config"].items() if k not in ignore}
    wanted = {k: v for k, v in json.loads(json.dumps(dataclasses.asdict(config))).items()
              if k not in ignore}  # fmt: skip
    return result if same == wanted else None


def _ensure_data(data: Path, size: DemoSize) -> None:
    if not (data / "annotation.json").is_file():
        print(f"generating {size.num_studies} synthetic studies into {data} ...")
        generate(
            data,
            layout="iu_xray",
            num_studies=size.num_studies,
            image_size=size.image_size,
            seed=0,
            wording="canonical",
        )


def run_demo(
    out: str | Path = "runs/demo",
    data: str | Path | None = None,
    *,
    size: DemoSize = DEFAULT,
    optimizers: Sequence[str] = ("ls", "came"),
    backbone: str = "cnn_transformer",
    progress: bool = True,
) -> dict[str, Any]:
    """Generate the data if needed, train every optimizer with every seed, write the summary."""
    out, data = Path(out), Path(data) if data is not None else dataset_path(size)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    _ensure_data(data, size)
    variants: dict[str, tuple[str, dict[str, Any]]] = {name: (name, {}) for name in optimizers}
    results = _train_all(variants, out, data, size, backbone, progress)
    summary = summarise(results)
    references = reference_rows(data / "annotation.json", "iu_xray", size.test_limit)
    paired = paired_differences(results)
    dynamics = {name: dynamics_summary(runs) for name, runs in results.items()}
    labels = {name: LABELS.get(name, name) for name in results}
    table = markdown_table(summary, references)
    meta = {
        "data": str(data),
        "backbone": backbone,
        "size": dataclasses.asdict(size),
        "task_weights": list(TrainConfig().task_weights),
        "total_seconds": time.perf_counter() - started,
    }
    (out / "summary.json").write_text(
        json.dumps(
            {
                "meta": meta,
                "optimizers": summary,
                "references": references,
                "paired": paired,
                "dynamics": dynamics,
            },
            indent=1,
        )
        + "\n"
    )
    verdict = verdict_line(paired)
    (out / "summary.md").write_text(
        f"# RRG demo ({backbone}, seeds {list(size.seeds)}, {size.epochs} epochs)\n\n{table}\n\n"
        f"{verdict}\n\n## Paired differences to LS (same seed)\n\n{paired_table(paired, labels)}"
        f"\n\n## Gradient dynamics\n\n{dynamics_table(dynamics, labels)}\n"
    )
    histories = {labels[n]: [r["history"] for r in runs] for n, runs in results.items()}
    title = f"RRG demo on synthetic IU X-Ray-style data ({backbone})"
    plot_runs(histories, out / "curves.png", title=title)
    plot_dilemma(histories, out / "dilemma.png", title=f"The double dilemma ({backbone})")
    print(table, verdict, sep="\n\n")
    print(f"wrote summary.json, summary.md, curves.png and dilemma.png into {out}")
    return {"meta": meta, "optimizers": summary, "references": references, "paired": paired,
            "dynamics": dynamics}  # fmt: skip


def dynamics_table(dynamics: Mapping[str, Any], labels: Mapping[str, str]) -> str:
    """The :func:`dynamics_summary` of every optimizer as a markdown table."""
    columns = (("recorded steps", "steps", "d"), ("cos < 0", "conflicting_fraction", ".1%"),
               ("median cos", "median_cosine", "+.3f"), ("median ‖g_lm‖/‖λ_cls g_cls‖",
               "median_ratio", ".3g"), ("median retention", "median_retention", ".3f"),
               ("median γ", "median_gain", ".3f"), ("mean ν_t", "mean_fusion", ".3f"))  # fmt: skip
    lines = ["| optimizer | " + " | ".join(c[0] for c in columns) + " |",
             "|" + "---|" * (len(columns) + 1)]  # fmt: skip
    for name, d in dynamics.items():
        cells = ["–" if key not in d else f"{d[key]:{fmt}}" for _, key, fmt in columns]
        lines.append(f"| {labels.get(name, name)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run_sweep(
    out: str | Path = "runs/sweep",
    data: str | Path | None = None,
    *,
    size: DemoSize = dataclasses.replace(DEFAULT, seeds=(0, 1)),
    backbone: str = "cnn_transformer",
    progress: bool = True,
) -> dict[str, Any]:
    """:data:`SWEEP` with every seed of ``size``: ``sweep.json``, ``sweep.md``, ``sweep.png``."""
    out, data = Path(out), Path(data) if data is not None else dataset_path(size)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    _ensure_data(data, size)
    results = _train_all(SWEEP, out, data, size, backbone, progress)
    summary = summarise(results)
    for name, entry in summary.items():
        entry["label"] = name
    paired = paired_differences(results)
    table = markdown_table(summary)
    labels = {name: name for name in results}
    meta = {"data": str(data), "backbone": backbone, "size": dataclasses.asdict(size),
            "total_seconds": time.perf_counter() - started}  # fmt: skip
    (out / "sweep.json").write_text(
        json.dumps({"meta": meta, "variants": summary, "paired": paired}, indent=1) + "\n"
    )
    (out / "sweep.md").write_text(
        f"# Sensitivity sweep ({backbone}, seeds {list(size.seeds)}, {size.epochs} epochs)\n\n"
        f"{table}\n\n## Paired differences to LS (same seed)\n\n{paired_table(paired, labels)}\n"
    )
    plot_sweep(summary, out / "sweep.png", keys=SWEEP_KEYS)
    print(table)
    print(f"wrote sweep.json, sweep.md and sweep.png into {out}")
    return {"meta": meta, "variants": summary, "paired": paired}


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m examples.rrg.demo", description=__doc__)
    parser.add_argument("--out", default=None, help="results folder (default runs/demo)")
    parser.add_argument("--data", default=None, help="dataset folder (default runs/data/...)")
    parser.add_argument("--size", choices=SIZES, default="default", help="preset (default)")
    parser.add_argument("--quick", action="store_true", help="same as --size quick (CI)")
    parser.add_argument("--ablation", action="store_true", help="add CAME-Grad's stage ablation")
    parser.add_argument(
        "--sweep", action="store_true", help="ρ, κ, ν one at a time and the ablation, 2 seeds"
    )
    parser.add_argument(
        "--backbone", default="cnn_transformer", help="the model (default %(default)s)"
    )
    parser.add_argument(
        "--seeds", type=int, nargs="+", default=None, help="seeds to train (default: the preset's)"
    )
    parser.add_argument("--epochs", type=int, default=None, help="epochs (default: the preset's)")
    parser.add_argument(
        "--num-studies",
        type=int,
        default=None,
        help="synthetic studies to generate (default: the preset's)",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    args = parser.parse_args(argv)
    size = SIZES["quick" if args.quick else args.size]
    if args.sweep and args.seeds is None:
        size = dataclasses.replace(size, seeds=size.seeds[:2])
    overrides = {
        "seeds": tuple(args.seeds) if args.seeds else None,
        "epochs": args.epochs,
        "num_studies": args.num_studies,
    }
    size = dataclasses.replace(size, **{k: v for k, v in overrides.items() if v is not None})
    common = {"size": size, "backbone": args.backbone, "progress": not args.no_progress}
    if args.sweep:
        return run_sweep(args.out or "runs/sweep", args.data, **common)
    optimizers = ABLATION if args.ablation else ("ls", "came")
    return run_demo(args.out or "runs/demo", args.data, optimizers=optimizers, **common)


if __name__ == "__main__":
    main()
