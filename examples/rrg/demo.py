"""The main job: LS against CAME-Grad on the built-in synthetic RRG data, several seeds, one table.

``python -m examples.rrg.demo`` generates the synthetic dataset if it is absent, trains LS
(``loss_lm + 4·loss_cls``, the authors' baseline) and CAME-Grad (task weights 1 and 4) with the
same seeds, evaluates both on the test split and writes ``summary.json``, ``summary.md`` and
``curves.png`` into ``--out`` (default ``runs/demo``). ``--ablation`` adds CAME-Grad's stage
combinations (rectification only; + energy injection); ``--quick`` is a tiny run for CI.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from examples.rrg.plots import plot_runs
from examples.rrg.synthetic import generate
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
ABLATION = ("ls", "came-rectify", "came-rectify-energy", "came")
LABELS = {
    "ls": "LS (λ·L, one backward)",
    "came-rectify": "rectification only",
    "came-rectify-energy": "+ energy injection",
    "came": "CAME-Grad (full)",
}


@dataclasses.dataclass(frozen=True)
class DemoSize:
    """How big the demo is: dataset, training length and evaluation."""

    num_studies: int
    epochs: int
    seeds: tuple[int, ...]
    val_limit: int | None
    test_limit: int | None
    beam_size: int


DEFAULT = DemoSize(1500, epochs=8, seeds=(0, 1, 2), val_limit=64, test_limit=None, beam_size=3)
QUICK = DemoSize(160, epochs=1, seeds=(0, 1), val_limit=16, test_limit=16, beam_size=1)


def _mean_std(values: Sequence[float | None]) -> tuple[float | None, float | None]:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return None, None
    return float(np.mean(finite)), float(np.std(finite, ddof=1)) if len(finite) > 1 else 0.0


def summarise(results: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Per optimizer: mean and std over seeds of every column, and the per-seed values."""
    summary: dict[str, Any] = {}
    for name, runs in results.items():
        entry: dict[str, Any] = {"label": LABELS.get(name, name), "seeds": []}
        for label, key, _ in COLUMNS:
            values = [
                r["train_seconds"] if key == "train_seconds" else r["test"][key] for r in runs
            ]
            mean, std = _mean_std(values)
            entry[key] = {"mean": mean, "std": std, "values": values, "label": label}
        entry["seeds"] = [r["config"]["seed"] for r in runs]
        summary[name] = entry
    return summary


def markdown_table(summary: dict[str, Any]) -> str:
    """The summary as a markdown table, ``mean ± std`` over seeds."""
    head = "| optimizer | " + " | ".join(label for label, _, _ in COLUMNS) + " |"
    lines = [head, "|" + "---|" * (len(COLUMNS) + 1)]
    for entry in summary.values():
        cells = []
        for _, key, fmt in COLUMNS:
            m, s = entry[key]["mean"], entry[key]["std"]
            cells.append("n/a" if m is None else f"{m:{fmt}} ± {s:{fmt}}")
        lines.append(f"| {entry['label']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run_demo(
    out: str | Path = "runs/demo",
    data: str | Path = "runs/data/iu_xray",
    *,
    size: DemoSize = DEFAULT,
    optimizers: Sequence[str] = ("ls", "came"),
    backbone: str = "cnn_transformer",
    progress: bool = True,
) -> dict[str, Any]:
    """Generate the data if needed, train every optimizer with every seed, write the summary."""
    out, data = Path(out), Path(data)
    started = time.perf_counter()
    if not (data / "annotation.json").is_file():
        print(f"generating {size.num_studies} synthetic studies into {data} ...")
        generate(data, layout="iu_xray", num_studies=size.num_studies, image_size=64, seed=0)
    results: dict[str, list[dict[str, Any]]] = {}
    for name in optimizers:
        for seed in size.seeds:
            config = TrainConfig(
                data=str(data),
                out=str(out / name / f"seed{seed}"),
                backbone=backbone,
                optimizer=name,
                epochs=size.epochs,
                seed=seed,
                val_limit=size.val_limit,
                test_limit=size.test_limit,
                beam_size=size.beam_size,
            )
            result = train(config, progress=progress)
            assert result is not None
            results.setdefault(name, []).append(result)
    summary = summarise(results)
    table = markdown_table(summary)
    meta = {
        "data": str(data),
        "backbone": backbone,
        "size": dataclasses.asdict(size),
        "task_weights": list(TrainConfig().task_weights),
        "total_seconds": time.perf_counter() - started,
    }
    (out / "summary.json").write_text(
        json.dumps({"meta": meta, "optimizers": summary}, indent=1) + "\n"
    )
    (out / "summary.md").write_text(
        f"# RRG demo ({backbone}, seeds {list(size.seeds)}, {size.epochs} epochs)\n\n{table}\n"
    )
    plot_runs(
        {LABELS.get(n, n): [r["history"] for r in runs] for n, runs in results.items()},
        out / "curves.png",
        title=f"RRG demo on synthetic IU X-Ray-style data ({backbone})",
    )
    print(table)
    print(f"wrote {out / 'summary.json'}, {out / 'summary.md'} and {out / 'curves.png'}")
    return {"meta": meta, "optimizers": summary}


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m examples.rrg.demo", description=__doc__)
    parser.add_argument("--out", default="runs/demo", help="results folder (default runs/demo)")
    parser.add_argument("--data", default=None, help="dataset folder (default runs/data/...)")
    parser.add_argument("--quick", action="store_true", help="a tiny run for CI (minutes)")
    parser.add_argument("--ablation", action="store_true", help="add CAME-Grad's stage ablation")
    parser.add_argument("--backbone", default="cnn_transformer")
    parser.add_argument("--seeds", type=int, nargs="+", default=None)
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--num-studies", type=int, default=None)
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    args = parser.parse_args(argv)
    size = QUICK if args.quick else DEFAULT
    overrides = {
        "seeds": tuple(args.seeds) if args.seeds else None,
        "epochs": args.epochs,
        "num_studies": args.num_studies,
    }
    size = dataclasses.replace(size, **{k: v for k, v in overrides.items() if v is not None})
    data = args.data or f"runs/data/iu_xray_{size.num_studies}"
    optimizers = ABLATION if args.ablation else ("ls", "came")
    return run_demo(
        args.out,
        data,
        size=size,
        optimizers=optimizers,
        backbone=args.backbone,
        progress=not args.no_progress,
    )


if __name__ == "__main__":
    main()
