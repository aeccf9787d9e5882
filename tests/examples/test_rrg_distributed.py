"""The RRG example's ``--distributed`` path, with two CPU processes on localhost.

Two processes of ``python -m examples.rrg.train --distributed`` (2 CPU devices each, Gloo
collectives) train one epoch of a tiny configuration data parallel over the 4 devices of the
job, each loading only its half of every global batch, and write an orbax checkpoint together.
A one-process job on 4 CPU devices trains the same epoch alongside; every step's losses and the
final parameters must agree.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from test_multiprocess import free_port, tail
from test_rrg_train import SMALL, make_dataset

from examples.rrg.train import TrainConfig, parser

ROOT = Path(__file__).resolve().parents[2]
DEVICES, TIMEOUT_S = 4, 300


def read_checkpoint(path: Path) -> dict[str, np.ndarray]:
    """The model state of a checkpoint as ``{"a/b/c": array}``, read into one device."""
    checkpointer = ocp.StandardCheckpointer()
    metadata = checkpointer.metadata(path.absolute())
    tree = getattr(metadata, "item_metadata", metadata)
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device), tree)
    restored = checkpointer.restore(path.absolute(), target)
    leaves = jax.tree_util.tree_flatten_with_path(restored["model"])[0]
    return {jax.tree_util.keystr(k, simple=True, separator="/"): np.asarray(v) for k, v in leaves}


def command_line(config: TrainConfig) -> list[str]:
    """``python -m examples.rrg.train`` flags that reproduce ``config``."""
    flags = []
    for name, value in dataclasses.asdict(config).items():
        flag = name.replace("_", "-")
        if isinstance(value, bool):
            flags.append(f"--{flag}" if value else f"--no-{flag}")
            continue
        values = value if isinstance(value, tuple) else (value,)
        flags += [f"--{flag}", *map(str, values)]
    return flags


def start_job(config: TrainConfig, num_processes: int, logs: Path) -> list[subprocess.Popen[bytes]]:
    """Starts the processes of one ``--distributed`` job of ``DEVICES`` CPU devices in all,
    which train one epoch of ``config`` (``--stop-after 1``)."""
    coordinator = f"127.0.0.1:{free_port()}"
    env = {
        **os.environ,
        "JAX_PLATFORMS": "cpu",
        "JAX_NUM_CPU_DEVICES": str(DEVICES // num_processes),
        # Both jobs compile alike; the lowest LLVM optimisation level compiles ~2x faster.
        "XLA_FLAGS": "--xla_backend_optimization_level=0",
        "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]),
    }
    procs = []
    for rank in range(num_processes):
        command = [sys.executable, "-m", "examples.rrg.train", *command_line(config)]
        command += ["--no-progress", "--stop-after", "1", "--distributed"]
        command += ["--coordinator", coordinator, "--num-processes", str(num_processes)]
        command += ["--process-id", str(rank)]
        with (logs / f"{Path(config.out).name}{rank}.log").open("wb") as sink:
            procs.append(
                subprocess.Popen(command, cwd=ROOT, env=env, stdout=sink, stderr=subprocess.STDOUT)
            )
    return procs


def key_bias(name: str, value: np.ndarray) -> slice | None:
    """The key half of an attention's fused key/value bias, else None.

    Its gradient is zero in exact arithmetic (the softmax ignores a shift of all scores), so it
    is float round-off, which Adam normalises into steps of about the learning rate: it differs
    between any two reduction orders (one device vs four too), and is compared loosely.
    """
    return slice(0, value.shape[-1] // 2) if name.endswith("kv_proj/bias") else None


@pytest.mark.slow
def test_two_processes_train_like_one_process(tmp_path):
    data = make_dataset(tmp_path / "data")
    base = TrainConfig(data=str(data), optimizer="came", epochs=2, val_limit=4, test_limit=4,
                       **SMALL)  # fmt: skip
    runs = {"multi": 2, "single": 1}  # out folder -> processes, DEVICES devices in all
    procs = {}
    try:
        for name, num_processes in runs.items():
            config = dataclasses.replace(base, out=str(tmp_path / name))
            procs[name] = start_job(config, num_processes, tmp_path)
        for name, job in procs.items():
            for rank, proc in enumerate(job):
                log = tmp_path / f"{name}{rank}.log"
                try:
                    code = proc.wait(timeout=TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    pytest.fail(f"{name} process {rank} timed out after {TIMEOUT_S}s:\n{tail(log)}")
                assert code == 0, f"{name} process {rank} exited with {code}:\n{tail(log)}"
    finally:
        for job in procs.values():
            for proc in job:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait(timeout=30)

    steps = {}
    for name in runs:
        history = json.loads((tmp_path / name / "history.json").read_text())["history"]
        steps[name] = np.array([[s["lm"], s["cls"], s["gain"]] for s in history["steps"]])
    assert steps["multi"].shape == steps["single"].shape == (len(steps["single"]), 3)
    np.testing.assert_allclose(steps["multi"], steps["single"], rtol=1e-5)

    got, expected = (read_checkpoint(tmp_path / name / "checkpoint") for name in runs)
    assert set(got) == set(expected)
    differences = {}
    for name, value in expected.items():
        if not np.issubdtype(value.dtype, np.floating):  # RNG key data and counters
            np.testing.assert_array_equal(got[name], value, err_msg=name)
            continue
        difference = got[name] - value
        if (keys := key_bias(name, value)) is not None:
            bound = len(steps["single"]) * base.lr
            assert np.abs(difference[keys]).max() <= bound, name
            difference[keys], value = 0.0, np.delete(value, np.arange(value.shape[-1])[keys])
        differences[name] = float(
            np.linalg.norm(difference) / max(float(np.linalg.norm(value)), 1e-12)
        )
    worst = max(differences, key=differences.__getitem__)
    print(f"2 processes vs 1: max relative difference {differences[worst]:.1e} ({worst})")
    assert differences[worst] < 1e-5, differences


def test_command_line_reproduces_the_config():
    """The flags the job is started with parse back to the same config (booleans as
    --x/--no-x, κ = None as "None")."""
    config = TrainConfig(guided=False, kappa=None, task_weights=(1.0, 2.0), val_limit=4,
                         test_limit=8, dynamics_every=3)  # fmt: skip
    args = vars(parser().parse_args(command_line(config)))
    args["task_weights"] = tuple(args["task_weights"])
    for extra in ("resume", "no_progress", "stop_after", "distributed", "coordinator",
                  "num_processes", "process_id"):  # fmt: skip
        args.pop(extra)
    assert TrainConfig(**args) == config
