r"""MultiDigits training: a shared MLP trunk with two heads, one jitted program per method.

Per seed the losses are $L = (\mathrm{CE}_{left}, \mathrm{CE}_{right})$ on a minibatch; their
Jacobian (``camegrad_jax.nnx.value_and_jacobian``) goes through the method's transformation and
then Adam. All seeds train at once under ``jax.vmap`` inside one ``lax.scan``, so a method
compiles once. The test accuracies are read at the checkpoint with the best mean validation
accuracy (``evals`` checkpoints evenly spaced).
"""

from __future__ import annotations

import dataclasses
import itertools
import time
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from benchmarks.mtl import multidigits
from benchmarks.mtl.methods import Method, update_args
from camegrad_jax import nnx as cgnnx

METRICS = {
    "acc_left": {"label": "left acc.", "lower_is_better": False},
    "acc_right": {"label": "right acc.", "lower_is_better": False},
}


@dataclasses.dataclass(frozen=True)
class DigitsConfig:
    """Data size, model width and training length."""

    data: multidigits.DigitsSize = dataclasses.field(default_factory=multidigits.DigitsSize)
    hidden: tuple[int, ...] = (128, 64)
    steps: int = 1200
    batch_size: int = 64
    lr: float = 1e-3
    evals: int = 6


QUICK = DigitsConfig(data=multidigits.DigitsSize(train=800, val=200, test=400), steps=150, evals=3)


class TwoHeadMLP(nnx.Module):
    """$h = \\mathrm{MLP}(x)$ shared, then one linear head of 10 logits per task."""

    def __init__(self, in_features: int, hidden: Sequence[int], *, rngs: nnx.Rngs):
        sizes = (in_features, *hidden)
        self.trunk = nnx.List([nnx.Linear(a, b, rngs=rngs) for a, b in itertools.pairwise(sizes)])
        self.left = nnx.Linear(sizes[-1], 10, rngs=rngs)
        self.right = nnx.Linear(sizes[-1], 10, rngs=rngs)

    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        h = x.reshape(x.shape[0], -1)
        for layer in self.trunk:
            h = jax.nn.relu(layer(h))
        return self.left(h), self.right(h)


def task_losses(model: TwoHeadMLP, x: jax.Array, y: jax.Array) -> jax.Array:
    """$(\\mathrm{CE}_{left}, \\mathrm{CE}_{right})$, each averaged over the batch."""
    left, right = model(x)
    ce = optax.softmax_cross_entropy_with_integer_labels
    return jnp.stack([jnp.mean(ce(left, y[:, 0])), jnp.mean(ce(right, y[:, 1]))])


def _stack(trees: list[Any]) -> Any:
    return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def _data(seeds: Sequence[int], config: DigitsConfig) -> dict[str, dict[str, jax.Array]]:
    built = [multidigits.build(s, config.data) for s in seeds]
    return {
        split: {
            key: jnp.asarray(np.stack([b[split][key] for b in built]))
            for key in ("images", "labels")
        }
        for split in multidigits.SPLITS
    }


def _program(method: Method, graphdef: Any, config: DigitsConfig) -> tuple[Any, Any]:
    """``tx`` and the jitted, seed-vmapped ``train(params, key, data) -> (val, test)``
    accuracies at each checkpoint, shapes ``(seeds, evals, 2)``."""
    tx = optax.chain(method.make(2), optax.adam(config.lr))
    jacobian = cgnnx.value_and_jacobian(task_losses)
    chunk = max(1, config.steps // config.evals)

    def accuracy(params: Any, split: dict[str, jax.Array]) -> jax.Array:
        left, right = nnx.merge(graphdef, params)(split["images"])
        preds = jnp.stack([jnp.argmax(left, -1), jnp.argmax(right, -1)], -1)
        return jnp.mean(preds == split["labels"], axis=0)

    def train_one(params: Any, key: jax.Array, data: dict[str, Any]) -> tuple[Any, Any]:
        train = data["train"]
        n = train["images"].shape[0]

        def step(carry: Any, step_key: jax.Array) -> tuple[Any, None]:
            params, opt_state = carry
            idx = jax.random.randint(step_key, (config.batch_size,), 0, n)
            x, y = train["images"][idx], train["labels"][idx]
            losses, jac = jacobian(nnx.merge(graphdef, params), x, y)
            updates, opt_state = tx.update(jac, opt_state, params, **update_args(method, losses))
            return (optax.apply_updates(params, updates), opt_state), None

        def block(carry: Any, block_key: jax.Array) -> tuple[Any, Any]:
            carry, _ = jax.lax.scan(step, carry, jax.random.split(block_key, chunk))
            return carry, (accuracy(carry[0], data["val"]), accuracy(carry[0], data["test"]))

        carry = (params, tx.init(params))
        _, (val, test) = jax.lax.scan(block, carry, jax.random.split(key, config.evals))
        return val, test

    return tx, jax.jit(jax.vmap(train_one))


def run(
    methods: Sequence[Method], seeds: Sequence[int], config: DigitsConfig, *, log: Any = print
) -> dict[str, Any]:
    """Train every method on every seed; per-seed test accuracies and wall times."""
    data = _data(seeds, config)
    in_features = config.data.canvas**2
    models = [TwoHeadMLP(in_features, config.hidden, rngs=nnx.Rngs(s)) for s in seeds]
    graphdef = nnx.graphdef(models[0])
    params = _stack([nnx.state(m, nnx.Param) for m in models])
    keys = jnp.stack([jax.random.key_data(jax.random.key(1000 + s)) for s in seeds])
    keys = jax.vmap(jax.random.wrap_key_data)(keys)
    results: dict[str, Any] = {}
    for method in methods:
        _, program = _program(method, graphdef, config)
        t0 = time.perf_counter()
        compiled = program.lower(params, keys, data).compile()
        t1 = time.perf_counter()
        val, test = jax.block_until_ready(compiled(params, keys, data))
        t2 = time.perf_counter()
        val, test = np.asarray(val, np.float64), np.asarray(test, np.float64)
        best = np.argmax(val.mean(-1), axis=1)  # (seeds,)
        chosen = test[np.arange(len(seeds)), best]  # (seeds, 2)
        results[method.name] = {
            "per_seed": {"acc_left": chosen[:, 0].tolist(), "acc_right": chosen[:, 1].tolist()},
            "final_per_seed": {
                "acc_left": test[:, -1, 0].tolist(),
                "acc_right": test[:, -1, 1].tolist(),
            },
            "best_checkpoint": best.tolist(),
            "seconds": {"compile": t1 - t0, "run": t2 - t1, "total": t2 - t0},
        }
        log(
            f"  multidigits {method.name:<24} acc {chosen.mean(0).round(4).tolist()} "
            f"({t1 - t0:.1f}s compile, {t2 - t1:.1f}s run)"
        )
    return {
        "problem": "multidigits",
        "title": "MultiDigits (MultiMNIST-style, sklearn 8×8 digits)",
        "metrics": METRICS,
        "delta_m_metrics": list(METRICS),
        "methods": results,
        "meta": {
            "config": dataclasses.asdict(config),
            "seeds": list(seeds),
            "optimizer": f"chain(method, adam({config.lr}))",
            "selection": "test accuracy at the checkpoint with the best mean val accuracy",
        },
    }
