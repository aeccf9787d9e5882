"""One process of the multi-process data-parallel check (launched by ``test_multiprocess.py``).

Usage: ``python tests/multiprocess_worker.py COORDINATOR NUM_PROCESSES PROCESS_ID OUT.npz``,
with ``JAX_NUM_CPU_DEVICES`` set to the number of CPU devices of this process. Every process
runs the same jitted train step on a global data-parallel mesh over all processes' devices;
each builds only its own part of the batch (``jax.make_array_from_process_local_data``).
Process 0 writes the final parameters to ``OUT.npz``.

Importing this module starts nothing: ``train`` is also what the test runs in one process.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

import camegrad_jax as cg

BATCH, DIM, HIDDEN, STEPS = 32, 4, 8, 5


def global_batch() -> tuple[np.ndarray, np.ndarray]:
    """The whole batch, the same on every process; each process keeps only its rows."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((BATCH, DIM)).astype(np.float32)
    y = np.stack([np.tanh(x @ rng.standard_normal(DIM)), np.sin(x[:, 0] - x[:, 1])], axis=1)
    return x, y.astype(np.float32)


def initial_params() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    return {
        "w1": (rng.standard_normal((DIM, HIDDEN)) / 2.0).astype(np.float32),
        "b1": np.zeros(HIDDEN, np.float32),
        "w2": (rng.standard_normal((HIDDEN, 2)) / 3.0).astype(np.float32),
    }


def task_losses(params, x, y):
    """A tiny MLP with two regression heads: two task losses."""
    hidden = jnp.tanh(x @ params["w1"] + params["b1"][None, :])
    return jnp.mean((hidden @ params["w2"] - y) ** 2, axis=0)


TX = optax.chain(cg.came_grad(num_tasks=2), optax.adam(1e-2))


@jax.jit
def train_step(params, opt_state, x, y):
    losses, jac = cg.value_and_jacobian(task_losses)(params, x, y)
    updates, opt_state = TX.update(jac, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, losses


def local_rows(sharding: NamedSharding, global_shape: tuple[int, ...]) -> slice:
    """The rows of the global batch that this process's devices hold (contiguous)."""
    indices = sharding.addressable_devices_indices_map(global_shape).values()
    starts = [index[0].start or 0 for index in indices]
    stops = [global_shape[0] if index[0].stop is None else index[0].stop for index in indices]
    return slice(min(starts), max(stops))


def train(mesh: jax.sharding.Mesh, steps: int = STEPS) -> dict[str, np.ndarray]:
    """Data-parallel training on ``mesh`` (axis "data"); returns the final parameters."""
    x, y = global_batch()
    batch_sharding = NamedSharding(mesh, P("data"))
    rows = local_rows(batch_sharding, x.shape)
    x, y = (
        jax.make_array_from_process_local_data(batch_sharding, a[rows], a.shape) for a in (x, y)
    )
    replicated = NamedSharding(mesh, P())
    params = {
        name: jax.make_array_from_process_local_data(replicated, value)
        for name, value in initial_params().items()
    }
    opt_state = TX.init(params)
    for _ in range(steps):
        params, opt_state, _ = train_step(params, opt_state, x, y)
    # Replicated: every process holds the whole value on each of its devices.
    return {name: np.asarray(value.addressable_data(0)) for name, value in params.items()}


def main(coordinator: str, num_processes: int, process_id: int, out: str) -> None:
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=coordinator,
        num_processes=num_processes,
        process_id=process_id,
        initialization_timeout=120,
    )
    try:
        mesh = jax.make_mesh((jax.device_count(),), ("data",))
        print(
            f"process {jax.process_index()}/{jax.process_count()}: "
            f"{jax.local_device_count()} local of {jax.device_count()} devices",
            flush=True,
        )
        params = train(mesh)
        if jax.process_index() == 0:
            np.savez(out, **params)
    finally:
        jax.distributed.shutdown()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
