"""Multi-host data parallelism, emulated with two CPU processes on localhost.

Two worker processes (``multiprocess_worker.py``) join one ``jax.distributed`` job of 2 × 4 CPU
devices (cross-process collectives over Gloo) and train a tiny two-task MLP with
``optax.chain(cg.came_grad(num_tasks=2), optax.adam(1e-2))`` on a global data-parallel mesh of
8 devices, each process building only its half of the batch. The final parameters must match
the same training on the 8 devices of this one process.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

WORKER = Path(__file__).with_name("multiprocess_worker.py")
NUM_PROCESSES, DEVICES_PER_PROCESS, TIMEOUT_S = 2, 4, 300


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tail(path: Path, lines: int = 30) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def run_workers(tmp_path: Path) -> Path:
    """Runs the workers to completion; returns process 0's output file."""
    out = tmp_path / "params.npz"
    coordinator = f"127.0.0.1:{free_port()}"
    env = {
        **os.environ,
        "JAX_PLATFORMS": "cpu",
        "JAX_NUM_CPU_DEVICES": str(DEVICES_PER_PROCESS),
        "PYTHONPATH": os.pathsep.join(
            [str(WORKER.parent.parent), *filter(None, [os.environ.get("PYTHONPATH")])]
        ),
    }
    procs: list[tuple[subprocess.Popen[bytes], Path]] = []
    try:
        for rank in range(NUM_PROCESSES):
            log = tmp_path / f"worker{rank}.log"
            with log.open("wb") as sink:
                command = [sys.executable, str(WORKER), coordinator, str(NUM_PROCESSES)]
                command += [str(rank), str(out)]
                proc = subprocess.Popen(command, env=env, stdout=sink, stderr=subprocess.STDOUT)
            procs.append((proc, log))
        for rank, (proc, log) in enumerate(procs):
            try:
                code = proc.wait(timeout=TIMEOUT_S)
            except subprocess.TimeoutExpired:
                pytest.fail(f"worker {rank} timed out after {TIMEOUT_S}s:\n{tail(log)}")
            assert code == 0, f"worker {rank} exited with {code}:\n{tail(log)}"
    finally:
        for proc, _ in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)
    return out


@pytest.mark.slow
@pytest.mark.skipif(len(jax.devices()) < 8, reason="needs JAX_NUM_CPU_DEVICES=8")
def test_two_processes_match_one_process(tmp_path):
    import multiprocess_worker as worker

    out = run_workers(tmp_path)
    got = dict(np.load(out))
    expected = worker.train(jax.make_mesh((8,), ("data",)))
    initial = worker.initial_params()
    assert set(got) == set(expected)
    differences = {}
    for name, value in expected.items():
        # Training moved the parameters, so the comparison is not between two initialisations.
        assert np.linalg.norm(value - initial[name]) > 1e-2 * np.linalg.norm(value)
        differences[name] = np.linalg.norm(got[name] - value) / np.linalg.norm(value)
    print("2 processes vs 1, relative difference:", {k: f"{v:.1e}" for k, v in differences.items()})
    assert all(v < 1e-5 for v in differences.values()), differences
