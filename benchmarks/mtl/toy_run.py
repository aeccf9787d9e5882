r"""CAGrad's two-objective toy (``examples/toy``), scored by how many starts reach the Pareto set.

Per seed the starts are the reference experiment's three points plus ``extra_starts`` drawn
uniformly from $[-10, 10]^2$ with ``key(s)``. Every method runs ``chain(method, adam(1e-3))``
for ``steps`` steps from all starts at once (``examples.toy.demo.run_method``); a final point
reaches the Pareto set when its distance to it is below ``examples.toy.demo.PARETO_TOL``. The
loss-based weightings are left out: the toy's losses are negative.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

from benchmarks.mtl.methods import Method
from examples.toy import demo as toy

METRICS = {
    "pareto_fraction": {"label": "reached Pareto set", "lower_is_better": False},
    "distance": {"label": "mean dist. to Pareto set", "lower_is_better": True},
}


@dataclasses.dataclass(frozen=True)
class ToyConfig:
    """Random starts per seed (besides the three reference ones) and the step count."""

    extra_starts: int = 5
    steps: int = 30_000  # the reference experiment runs 100 000; fewer fit the time budget


QUICK = ToyConfig(extra_starts=3, steps=3000)


def starts(seeds: Sequence[int], config: ToyConfig) -> np.ndarray:
    """``(len(seeds) * (3 + extra_starts), 2)`` start points, seed-major."""
    reference = np.asarray(toy.STARTS, np.float64)
    blocks = []
    for s in seeds:
        extra = jax.random.uniform(
            jax.random.key(s), (config.extra_starts, 2), minval=-10.0, maxval=10.0
        )
        blocks.append(np.concatenate([reference, np.asarray(extra, np.float64)]))
    return np.concatenate(blocks)


def run(
    methods: Sequence[Method], seeds: Sequence[int], config: ToyConfig, *, log: Any = print
) -> dict[str, Any]:
    """Run every (Gram) method from every start; per-seed fraction on the Pareto set."""
    x0 = starts(seeds, config)
    per = 3 + config.extra_starts
    curve = toy.pareto_set()
    results: dict[str, Any] = {}
    for method in methods:
        if method.needs_losses:
            continue
        res = toy.run_method(method.name, method.make(2), x0, config.steps, progress=False)
        dist = toy.distance_to_set(res["final"], curve).reshape(len(seeds), per)
        dist = np.where(np.isfinite(dist), dist, np.inf)
        reached = dist < toy.PARETO_TOL
        results[method.name] = {
            "per_seed": {
                "pareto_fraction": reached.mean(1).tolist(),
                "distance": [float(np.mean(d)) if np.all(np.isfinite(d)) else None for d in dist],
            },
            "reference_starts_reached": reached[:, :3].tolist(),
            "final_points": res["final"].tolist(),
            "seconds": {"compile": None, "run": None, "total": res["seconds"]},
        }
        log(
            f"  toy {method.name:<24} reached {reached.mean():.3f} "
            f"(reference starts {reached[:, :3].mean():.2f}) ({res['seconds']:.1f}s)"
        )
    return {
        "problem": "toy",
        "title": "CAGrad's toy (Liu et al. 2021), Adam lr 1e-3",
        "metrics": METRICS,
        "delta_m_metrics": None,
        "rank_by": ["pareto_fraction", "distance"],
        "methods": results,
        "meta": {
            "config": dataclasses.asdict(config),
            "seeds": list(seeds),
            "starts_per_seed": per,
            "pareto_tolerance": toy.PARETO_TOL,
            "optimizer": f"chain(method, adam({toy.LR}))",
            "starts": x0.tolist(),
        },
    }
