r"""The synthetic radiology report generation task of ``examples/rrg``, at a small size.

Each (method, seed) is one call of ``examples.rrg.train.train`` on a synthetic IU X-Ray-style
dataset generated once into the output folder. LS is that example's baseline
$L_{lm} + 4L_{cls}$ with one backward pass; CAME-Grad and its ablations (``CAME_VARIANTS``) use
$\lambda = (1, 4)$. Scores are the test split's CE-F1 (micro and macro over the 14
observations) and BLEU-4, all higher is better.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

METRICS = {
    "ce14_f1_micro": {"label": "CE-F1 micro", "lower_is_better": False},
    "ce14_f1_macro": {"label": "CE-F1 macro", "lower_is_better": False},
    "BLEU_4": {"label": "BLEU-4", "lower_is_better": False},
}

#: Our method names -> ``examples.rrg`` optimizer names.
OPTIMIZERS = {
    "LS": "ls",
    "CAME-Grad": "came",
    "CAME −fusion (ν=0)": "came-rectify-energy",
    "CAME rectify only": "came-rectify",
    "MGDA": "mgda",
    "UPGrad": "upgrad",
}


@dataclasses.dataclass(frozen=True)
class RrgConfig:
    """Dataset size, model and training length, and how many of the seeds to use."""

    num_studies: int = 1000
    image_size: int = 32
    d_model: int = 64
    num_layers: int = 2
    epochs: int = 8
    batch_size: int = 16
    max_seeds: int = 2
    methods: tuple[str, ...] = ("LS", "CAME-Grad", "CAME −fusion (ν=0)", "CAME rectify only")


QUICK = RrgConfig(num_studies=160, epochs=1, max_seeds=1, methods=("LS", "CAME-Grad"))


def run(seeds: Sequence[int], config: RrgConfig, out: Path, *, log: Any = print) -> dict[str, Any]:
    """Train every method on the first ``max_seeds`` seeds; per-seed test metrics."""
    from examples.rrg.synthetic import generate
    from examples.rrg.train import TrainConfig, train

    seeds = list(seeds)[: config.max_seeds]
    log(f"  rrg uses seeds {seeds} (at most {config.max_seeds}: one run costs minutes)")
    data = out / "rrg" / f"data_{config.num_studies}_{config.image_size}"
    if not (data / "annotation.json").is_file():
        generate(data, num_studies=config.num_studies, image_size=config.image_size, seed=0)
    results: dict[str, Any] = {}
    for name in config.methods:
        optimizer = OPTIMIZERS[name]
        per_seed: dict[str, list[float | None]] = {k: [] for k in METRICS}
        started = time.perf_counter()
        train_seconds, first_steps = [], []
        for seed in seeds:
            result = train(
                TrainConfig(
                    data=str(data),
                    out=str(out / "rrg" / "runs" / optimizer / f"seed{seed}"),
                    optimizer=optimizer,
                    seed=seed,
                    epochs=config.epochs,
                    batch_size=config.batch_size,
                    image_size=config.image_size,
                    d_model=config.d_model,
                    num_layers=config.num_layers,
                    val_limit=16,
                    test_limit=None,
                    beam_size=1,
                ),
                progress=False,
            )
            assert result is not None
            for key in METRICS:
                per_seed[key].append(result["test"][key])
            train_seconds.append(result["train_seconds"])
            first_steps.append(result["first_step_seconds"])
        total = time.perf_counter() - started
        results[name] = {
            "per_seed": per_seed,
            "optimizer": optimizer,
            "seconds": {
                "compile": first_steps[0],
                "run": float(sum(train_seconds)),
                "total": total,
            },
        }
        summary = {
            k: round(float(np.mean([x for x in v if x is not None])), 4)
            for k, v in per_seed.items()
        }
        log(f"  rrg {name:<24} {summary} ({total:.1f}s incl. evaluation)")
    return {
        "problem": "rrg",
        "title": "Synthetic RRG (examples/rrg), small size",
        "metrics": METRICS,
        "delta_m_metrics": list(METRICS),
        "methods": results,
        "meta": {
            "config": dataclasses.asdict(config),
            "seeds": seeds,
            "task_weights": [1.0, 4.0],
            "optimizer": "examples.rrg.train (AdamW, warm-up + cosine), beam 1",
            "seconds_note": "compile = the first step of the first seed; run = the other "
            "training steps of all seeds; total includes data loading and evaluation",
        },
    }
