"""Step time of a jitted data-parallel CAME-Grad train step: an 8-device mesh against one device.

A small two-task MLP (two regression heads on a shared tanh trunk) trains with
``optax.chain(cg.came_grad(num_tasks=2), optax.adam(1e-3))``. The same jitted step runs once on
a single device and once data parallel on a mesh ``(8,) "data"`` (batch sharded, parameters
replicated, explicit sharding). Reported: the median wall time of a step (after compilation,
``block_until_ready``) and the ratio 8 devices / 1 device.

On CPU the 8 devices are XLA host devices (``JAX_NUM_CPU_DEVICES=8``) that share the
machine's cores, so the ratio measures the overhead of partitioning and of the all-reduces,
not a speed-up; on accelerators the same program runs each shard on its own chip. Run::

    python -m benchmarks.sharding [--quick] [--out outputs/benchmarks/sharding.json]
"""

from __future__ import annotations

import os

os.environ.setdefault("JAX_NUM_CPU_DEVICES", "8")

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import optax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

import camegrad_jax as cg

#: name -> (batch, input dim, hidden width)
SIZES = {"tiny": (64, 16, 32), "small": (512, 64, 256), "medium": (4096, 128, 512)}


def make_problem(batch: int, dim: int, hidden: int) -> tuple[Any, Any, Any]:
    kx, ky, k1, k2 = jax.random.split(jax.random.key(0), 4)
    x = jax.random.normal(kx, (batch, dim))
    y = jnp.tanh(x @ jax.random.normal(ky, (dim, 2)) / jnp.sqrt(dim))
    params = {
        "w1": jax.random.normal(k1, (dim, hidden)) / jnp.sqrt(dim),
        "b1": jnp.zeros(hidden),
        "w2": jax.random.normal(k2, (hidden, 2)) / jnp.sqrt(hidden),
    }
    return params, x, y


def task_losses(params: Any, x: Any, y: Any) -> Any:
    hidden = jnp.tanh(x @ params["w1"] + params["b1"][None, :])
    return jnp.mean((hidden @ params["w2"] - y) ** 2, axis=0)


TX = optax.chain(cg.came_grad(num_tasks=2), optax.adam(1e-3))


@jax.jit
def train_step(params: Any, opt_state: Any, x: Any, y: Any) -> Any:
    losses, jac = cg.value_and_jacobian(task_losses)(params, x, y)
    updates, opt_state = TX.update(jac, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, losses


def time_steps(params: Any, x: Any, y: Any, repeats: int) -> dict[str, float]:
    opt_state = TX.init(params)
    t0 = time.perf_counter()
    params, opt_state, _ = jax.block_until_ready(train_step(params, opt_state, x, y))
    first = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        params, opt_state, _ = jax.block_until_ready(train_step(params, opt_state, x, y))
        times.append(time.perf_counter() - t0)
    return {
        "compile_and_first_step_s": first,
        "median_step_ms": 1e3 * statistics.median(times),
        "min_step_ms": 1e3 * min(times),
        "repeats": repeats,
    }


def measure(size: str, repeats: int, num_devices: int) -> dict[str, Any]:
    batch, dim, hidden = SIZES[size]
    params, x, y = make_problem(batch, dim, hidden)
    one = time_steps(params, x, y, repeats)
    mesh = jax.make_mesh((num_devices,), ("data",))
    with jax.set_mesh(mesh):
        sharded = time_steps(
            jax.device_put(params, NamedSharding(mesh, P())),
            *jax.device_put((x, y), NamedSharding(mesh, P("data"))),
            repeats,
        )
    return {
        "size": size,
        "batch": batch,
        "dim": dim,
        "hidden": hidden,
        "one_device": one,
        f"{num_devices}_devices": sharded,
        "ratio": sharded["median_step_ms"] / one["median_step_ms"],
    }


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.sharding", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="the tiny and small sizes, 20 steps")
    parser.add_argument(
        "--out",
        default="outputs/benchmarks/sharding.json",
        help="JSON results (default outputs/benchmarks/sharding.json)",
    )
    parser.add_argument("--repeats", type=int, default=None, help="timed steps per setting")
    args = parser.parse_args(argv)
    num_devices = len(jax.devices())
    if num_devices < 2:
        parser.error("needs several devices: set JAX_NUM_CPU_DEVICES=8 before starting Python")
    sizes = ("tiny", "small") if args.quick else tuple(SIZES)
    repeats = args.repeats or (20 if args.quick else 100)
    print(f"{jax.devices()[0].platform}: {num_devices} devices, {os.cpu_count()} CPU cores")
    print(
        f"{'size':<8} {'batch':>6} {'hidden':>6} {'1 dev ms':>9} "
        f"{num_devices:>2} dev ms {'ratio':>6}"
    )
    rows = []
    for size in sizes:
        row = measure(size, repeats, num_devices)
        rows.append(row)
        print(
            f"{size:<8} {row['batch']:>6} {row['hidden']:>6} "
            f"{row['one_device']['median_step_ms']:>9.2f} "
            f"{row[f'{num_devices}_devices']['median_step_ms']:>9.2f} {row['ratio']:>6.2f}"
        )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "device": str(jax.devices()[0]),
        "platform": jax.devices()[0].platform,
        "num_devices": num_devices,
        "cpu_count": os.cpu_count(),
        "load_average": os.getloadavg(),
        "jax": jax.__version__,
        "repeats": repeats,
    }
    out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {out}")
    return rows


if __name__ == "__main__":
    main()
