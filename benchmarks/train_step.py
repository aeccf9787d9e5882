"""Step time and memory of the RRG demo model's train step, one way of getting gradients each.

The model is the RRG demo's CNN-Transformer at its default size (``examples.rrg``: 64×64
images, two views, ``d_model`` 64, two layers) on a random batch of the demo's size, with two
tasks (report cross-entropy and 14-observation classification, weights (1, 4)), AdamW after
the aggregation. Five steps are timed round-robin in one run:

* ``ls``: one backward pass of $\\lambda^\\top L$ (plain linear scalarisation);
* ``jacobian_sum``: the full Jacobian (one forward, K vmapped backward passes), then
  $\\sum_k \\lambda_k J_k$ with no Gram matrix;
* ``jacobian_came``: the full Jacobian, then CAME-Grad;
* ``chunked_came``: the same with the Jacobian's rows one at a time (``chunk_size=1``);
* ``representation_came``: shared-representation mode: the Gram matrix of the losses'
  gradients with respect to the encoder's features, then one backward pass.

Reported: the median step time, its ratio to ``ls`` and to ``jacobian_sum``, the ideal
$(1 + 2K)/3$ for the full Jacobian, and XLA's compiled memory estimate (temporary buffers plus
outputs, ``compiled.memory_analysis()``), the step's peak working memory beyond its inputs.
Run::

    python -m benchmarks.train_step [--quick] [--out outputs/benchmarks/train_step.json]
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import camegrad_jax as cg
from benchmarks._timing import interleaved_times, machine, write_json
from camegrad_jax import nnx as cgnnx
from examples.rrg.models import build_model
from examples.rrg.objectives import feature_losses, task_losses
from examples.rrg.observations import NUM_CLASSES, NUM_OBSERVATIONS

TASK_WEIGHTS = (1.0, 4.0)
METHODS = ("ls", "jacobian_sum", "jacobian_came", "chunked_came", "representation_came")


def make_batch(batch_size: int, image_size: int, seq_len: int, vocab: int) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    return {
        "images": jnp.asarray(rng.random((batch_size, 2, image_size, image_size, 1)), jnp.float32),
        "tokens": jnp.asarray(rng.integers(4, vocab, (batch_size, seq_len)), jnp.int32),
        "labels": jnp.asarray(
            rng.integers(0, NUM_CLASSES, (batch_size, NUM_OBSERVATIONS)), jnp.int32
        ),
    }


def weighted_sum(
    task_weights: Sequence[float] = TASK_WEIGHTS, *, wait_for_all: bool = False
) -> optax.GradientTransformation:
    """$\\sum_k \\lambda_k J_k$ leaf by leaf: the cheapest use of a full Jacobian.

    With ``wait_for_all`` no leaf is combined before every leaf of the Jacobian is computed
    (the coefficients read one entry of every leaf), as with any weighting whose
    coefficients depend on the whole Gram matrix; the plain sum lets XLA run each leaf's
    update (and the optimizer's after it) while the backward pass is still computing others.
    """
    weights = jnp.asarray(task_weights, jnp.float32)

    def update(jac: Any, state: Any, params: Any = None) -> tuple[Any, Any]:
        del params
        coeffs = weights
        if wait_for_all:
            # 0 * x is not folded away for floats, so the coefficients wait for every leaf (a
            # non-finite last entry would make them NaN: this sum is for timing only).
            last = sum(jnp.ravel(leaf)[-1] for leaf in jax.tree.leaves(jac))
            coeffs = weights + 0.0 * last
        return jax.tree.map(lambda leaf: jnp.tensordot(coeffs, leaf, axes=1), jac), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def encoder(model: Any, batch: dict) -> jax.Array:
    return model.features(batch["images"])


def gradients(
    method: str,
    losses: Callable[..., Any] = task_losses,
    task_weights: Sequence[float] = TASK_WEIGHTS,
) -> Callable[[Any, dict], Any]:
    """``(model, batch) -> gradient-like input of the optimizer`` for one method.

    ``losses(model, batch)`` returns the (K,) task losses and an aux; ``task_weights`` are LS's.
    """
    if method == "ls":
        weights = jnp.asarray(task_weights, jnp.float32)

        def objective(model: Any, batch: dict) -> tuple[jax.Array, jax.Array]:
            values, _ = losses(model, batch)
            return weights @ values, values

        grad = nnx.grad(objective, has_aux=True)
        return lambda model, batch: grad(model, batch)[0]
    if method == "representation_came":
        rep = cgnnx.value_and_representation_jacobian(encoder, feature_losses, has_aux=True)
        return lambda model, batch: rep(model, batch)[1]
    chunk = 1 if method == "chunked_came" else None
    jac = cgnnx.value_and_jacobian(losses, has_aux=True, chunk_size=chunk)
    return lambda model, batch: jac(model, batch)[1]


def transformation(
    method: str, task_weights: Sequence[float] = TASK_WEIGHTS
) -> optax.GradientTransformation:
    """AdamW after the method's aggregation (``jacobian_sum_synced``: the sum that waits for the
    whole Jacobian, `weighted_sum`'s ``wait_for_all``; every ``*_came``: CAME-Grad)."""
    adamw = optax.adamw(1e-3, weight_decay=0.05)
    if method == "ls":
        return adamw
    if method in ("jacobian_sum", "jacobian_sum_synced"):
        synced = method == "jacobian_sum_synced"
        return optax.chain(weighted_sum(task_weights, wait_for_all=synced), adamw)
    return optax.chain(cg.came_grad(task_weights=jnp.asarray(task_weights)), adamw)


def make_step(
    method: str,
    size: dict[str, int],
    losses: Callable[..., Any] = task_losses,
    task_weights: Sequence[float] = TASK_WEIGHTS,
) -> tuple[Callable[[], Any], Any]:
    """A zero-argument jitted step and XLA's compiled program of it (`memory_bytes`).

    ``losses`` and ``task_weights`` default to the demo's two tasks (``benchmarks.device``
    splits the classification loss into more).
    """
    model = build_model(
        "cnn_transformer",
        vocab_size=size["vocab"],
        image_size=size["image_size"],
        d_model=size["d_model"],
        num_layers=size["num_layers"],
        rngs=nnx.Rngs(0),
    )
    optimizer = nnx.Optimizer(model, transformation(method, task_weights), wrt=nnx.Param)
    graphdef, state = nnx.split((model, optimizer))
    grads_of = gradients(method, losses, task_weights)

    @jax.jit
    def step(state: Any, batch: dict) -> Any:
        model, optimizer = nnx.merge(graphdef, state)
        cgnnx.update(optimizer, model, grads_of(model, batch))
        return nnx.state((model, optimizer))

    batch = make_batch(size["batch_size"], size["image_size"], size["seq_len"], size["vocab"])
    return (lambda: step(state, batch)), step.lower(state, batch).compile()


def memory_bytes(compiled: Any) -> int:
    """XLA's memory estimate of a compiled step: temporary buffers plus outputs (-1 if none)."""
    memory = compiled.memory_analysis()
    return int(memory.temp_size_in_bytes + memory.output_size_in_bytes) if memory else -1


SIZES = {
    "default": {
        "batch_size": 16,
        "image_size": 64,
        "seq_len": 40,
        "vocab": 120,
        "d_model": 64,
        "num_layers": 2,
    },
    "quick": {
        "batch_size": 4,
        "image_size": 32,
        "seq_len": 12,
        "vocab": 40,
        "d_model": 32,
        "num_layers": 1,
    },
}


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a tiny model, for CI")
    parser.add_argument(
        "--out",
        default="outputs/benchmarks/train_step.json",
        help="JSON results (default outputs/benchmarks/train_step.json)",
    )
    parser.add_argument("--budget", type=float, default=None, help="timing seconds (all steps)")
    args = parser.parse_args(argv)
    size = SIZES["quick" if args.quick else "default"]
    steps, memory = {}, {}
    for method in METHODS:
        steps[method], compiled = make_step(method, size)
        memory[method] = memory_bytes(compiled)
    budget = args.budget if args.budget is not None else (1.0 if args.quick else 30.0)
    times = interleaved_times(steps, budget_s=budget)
    ls, summed = times["ls"]["median_ms"], times["jacobian_sum"]["median_ms"]
    num_tasks = len(TASK_WEIGHTS)
    rows = []
    print(f"{'method':22s} {'ms':>9s} {'× ls':>7s} {'× jac+sum':>9s} {'MiB':>8s} {'× jac+sum':>9s}")
    for method in METHODS:
        ms = times[method]["median_ms"]
        row = {
            "method": method,
            "median_ms": ms,
            "over_ls": ms / ls,
            "over_jacobian_sum": ms / summed,
            "memory_bytes": memory[method],
            "memory_over_jacobian_sum": memory[method] / memory["jacobian_sum"],
            **{k: v for k, v in times[method].items() if k != "median_ms"},
        }
        rows.append(row)
        print(
            f"{method:22s} {ms:9.2f} {row['over_ls']:7.2f} {row['over_jacobian_sum']:9.2f} "
            f"{memory[method] / 2**20:8.2f} {row['memory_over_jacobian_sum']:9.2f}"
        )
    ideal = (1 + 2 * num_tasks) / 3
    print(f"full Jacobian + sum: {summed / ls:.2f} × ls (ideal (1 + 2K)/3 = {ideal:.2f})")
    payload = {
        "meta": {**machine(), "size": size, "quick": args.quick, "task_weights": TASK_WEIGHTS},
        "rows": rows,
        "ideal_jacobian_over_ls": ideal,
    }
    write_json(Path(args.out), payload)
    return payload


if __name__ == "__main__":
    main()
