r"""ZDT1 by gradient descent: every method from the same fixed starts, all starts in one vmap.

For seed $s$ the starts are $z_0 \sim \mathcal U(-3, 3)^n$ drawn from ``key(s)``; each start
runs ``steps`` of ``chain(method, sgd(lr))`` on the Jacobian of $(f_1, f_2)$. Per seed the
scores are the mean distance of the final objective vectors to the front (lower is better), their
hypervolume against (1.1, 1.1) (higher is better) and the spread, the range of the final $f_1$.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

import camegrad_jax as cg
from benchmarks.mtl import zdt
from benchmarks.mtl.methods import Method, update_args

METRICS = {
    "distance": {"label": "dist. to front", "lower_is_better": True},
    "hypervolume": {"label": "hypervolume", "lower_is_better": False},
    "spread": {"label": "spread (f1 range)", "lower_is_better": False},
}


@dataclasses.dataclass(frozen=True)
class ZdtConfig:
    """Dimension, starts per seed, step count and SGD's learning rate."""

    dim: int = 20
    starts: int = 32
    steps: int = 3000
    lr: float = 0.1


QUICK = ZdtConfig(starts=16, steps=1500)


def starts(seeds: Sequence[int], config: ZdtConfig) -> jax.Array:
    """The start points, ``(len(seeds) * config.starts, dim)``, seed-major."""
    per_seed = [
        jax.random.uniform(jax.random.key(s), (config.starts, config.dim), minval=-3.0, maxval=3.0)
        for s in seeds
    ]
    return jnp.concatenate(per_seed)


def _program(method: Method, config: ZdtConfig) -> Any:
    tx = optax.chain(method.make(2), optax.sgd(config.lr))
    jacobian = cg.value_and_jacobian(zdt.objectives)

    def one(z: jax.Array) -> jax.Array:
        def step(carry: Any, _: None) -> tuple[Any, None]:
            z, opt_state = carry
            losses, jac = jacobian(z)
            updates, opt_state = tx.update(jac, opt_state, z, **update_args(method, losses))
            return (optax.apply_updates(z, updates), opt_state), None

        (z, _), _ = jax.lax.scan(step, (z, tx.init(z)), None, length=config.steps)
        return zdt.objectives(z)

    return jax.jit(jax.vmap(one))


def run(
    methods: Sequence[Method], seeds: Sequence[int], config: ZdtConfig, *, log: Any = print
) -> dict[str, Any]:
    """Optimise every start with every method; per-seed scores and the final objectives."""
    z0 = starts(seeds, config)
    results: dict[str, Any] = {}
    for method in methods:
        program = _program(method, config)
        t0 = time.perf_counter()
        compiled = program.lower(z0).compile()
        t1 = time.perf_counter()
        final = np.asarray(jax.block_until_ready(compiled(z0)), np.float64)
        t2 = time.perf_counter()
        per_seed: dict[str, list[float]] = {k: [] for k in METRICS}
        for points in final.reshape(len(seeds), config.starts, 2):
            per_seed["distance"].append(float(np.mean(zdt.front_distance(points))))
            per_seed["hypervolume"].append(zdt.hypervolume(points))
            per_seed["spread"].append(float(np.ptp(points[:, 0])))
        results[method.name] = {
            "per_seed": per_seed,
            "final_objectives": final.tolist(),
            "seconds": {"compile": t1 - t0, "run": t2 - t1, "total": t2 - t0},
        }
        log(
            f"  zdt1 {method.name:<24} dist {np.mean(per_seed['distance']):.4f} "
            f"HV {np.mean(per_seed['hypervolume']):.4f} ({t1 - t0:.1f}s compile, "
            f"{t2 - t1:.1f}s run)"
        )
    return {
        "problem": "zdt1",
        "title": f"ZDT1 (n={config.dim}, sigmoid parametrisation), gradient descent",
        "metrics": METRICS,
        "delta_m_metrics": ["distance", "hypervolume"],
        "methods": results,
        "meta": {
            "config": dataclasses.asdict(config),
            "seeds": list(seeds),
            "optimizer": f"chain(method, sgd({config.lr}))",
            "hv_reference": list(zdt.HV_REFERENCE),
            "hv_of_true_front": zdt.HV_FRONT,
        },
    }
