"""Train a report generator with LS, CAME-Grad or any camegrad_jax weighting.

``python -m examples.rrg.train --data runs/data/iu_xray --optimizer came --task-weights 1 4``
trains on the ``annotation.json`` dataset at ``--data`` (make one with
``python -m examples.rrg.synthetic``), validates every epoch, checkpoints with orbax (``--resume``
continues a run exactly where its last epoch ended), evaluates on the test split and writes
``history.json``, ``metrics.json``, ``curves.png`` and generated reports into ``--out``.
Run ``python -m examples.rrg.train --help`` for every option.

``--distributed`` trains data parallel over every device of a multi-process (multi-host) job:
each process runs this same command, ``jax.distributed.initialize`` joins them (arguments from
``--coordinator``, ``--num-processes`` and ``--process-id``, or detected on Slurm, Open MPI and
Cloud TPU), every global batch of ``--batch-size`` studies is split over all devices and each
process loads only its rows of it. The parameters and the optimizer state are replicated, and
the Jacobian, hence the Gram matrix, is the one of the global batch: the run equals a
single-process run on as many devices. Process 0 alone prints and writes the results; every
process writes its part of the orbax checkpoint, so ``--out`` must be on a shared filesystem.
See ``docs/howto-sharding.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import itertools
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

import camegrad_jax as cg
from camegrad_jax import nnx as cgnnx
from examples.rrg import checkpoint
from examples.rrg.data import MIN_COUNT, RRGDataset, Vocabulary, load_annotation, prefetch
from examples.rrg.evaluate import evaluate
from examples.rrg.labeler import label_reports
from examples.rrg.models import BACKBONES, build_model
from examples.rrg.objectives import (
    OPTIMIZERS,
    aggregator,
    example_losses,
    scalarised,
    task_losses,
)
from examples.rrg.plots import plot_run

#: What the progress bar shows live: the task losses, cos(g_lm, g_cls) and CAME-Grad's γ, ν_t.
LIVE = ("lm", "cls", "dynamics/cosine", "gain", "fusion")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything a run depends on; saved as ``config.json`` next to its results."""

    data: str = "runs/data/iu_xray"
    layout: str = "iu_xray"
    out: str = "runs/rrg/came"
    backbone: str = "cnn_transformer"
    optimizer: str = "came"
    task_weights: tuple[float, ...] = (1.0, 4.0)
    rho: float = 0.5
    kappa: float | None = 1.5
    nu: float = 0.2
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_fraction: float = 0.05
    epochs: int = 8
    batch_size: int = 16
    seed: int = 0
    image_size: int = 64
    d_model: int = 64
    num_layers: int = 2
    dropout: float = 0.1
    guided: bool = True
    dynamics_every: int = 20
    beam_size: int = 3
    val_limit: int | None = 64
    test_limit: int | None = None


#: The command line's help for each :class:`TrainConfig` field (its default is appended).
FIELD_HELP = {
    "data": "dataset folder in R2Gen format (python -m examples.rrg.synthetic writes one)",
    "layout": "dataset layout: iu_xray (two views per study) or mimic_cxr (one)",
    "out": "output folder: config, checkpoint, metrics, generated reports, curves",
    "backbone": "image encoder and report decoder",
    "optimizer": "ls (the weighted sum, AdamW alone) or the aggregation chained before AdamW",
    "task_weights": "task weights λ of the language-model and classification losses",
    "rho": "CAME-Grad's conflict radius ρ",
    "kappa": "CAME-Grad's energy cap κ (none: no energy injection)",
    "nu": "CAME-Grad's fusion coefficient ν",
    "lr": "AdamW's peak learning rate (linear warm-up, then cosine decay)",
    "weight_decay": "AdamW's decoupled weight decay",
    "warmup_fraction": "fraction of the training steps spent warming the learning rate up",
    "epochs": "training epochs",
    "batch_size": "batch size (the global batch with --distributed)",
    "seed": "seed of the initialisation, the data order and dropout",
    "image_size": "side of the square input images, in pixels",
    "d_model": "width of the encoder and decoder",
    "num_layers": "transformer layers of the report decoder",
    "dropout": "dropout rate",
    "guided": "classification-guided decoding: the head's predicted findings as decoder memory",
    "dynamics_every": "ls: record the gradient dynamics every this many steps (0: never)",
    "beam_size": "beam width of the report decoding (1: greedy)",
    "val_limit": "validation studies evaluated after each epoch (0: all)",
    "test_limit": "test studies evaluated at the end (0: all)",
}


def load_data(config: TrainConfig) -> tuple[Vocabulary, dict[str, RRGDataset]]:
    """The vocabulary of the training reports and the three splits, labelled by the labeler."""
    annotation = Path(config.data) / "annotation.json"
    if not annotation.is_file():
        raise FileNotFoundError(
            f"{annotation} not found: generate a dataset with `python -m examples.rrg.synthetic "
            f"--out {config.data}` or point --data at an R2Gen-format dataset."
        )
    train_reports = [r.report for r in load_annotation(annotation, config.layout)["train"]]
    vocab = Vocabulary.build(train_reports, MIN_COUNT[config.layout])
    splits = {
        split: RRGDataset.from_annotation(
            annotation,
            split,
            layout=config.layout,
            vocab=vocab,
            image_size=config.image_size,
            labeler=label_reports,
        )
        for split in ("train", "val", "test")
    }
    return vocab, splits


def _compiled_key(config: TrainConfig) -> TrainConfig:
    """The config with the fields that do not change the compiled step blanked: runs that differ
    only in seed, data folder or output folder share their jitted step (one compilation)."""
    return dataclasses.replace(
        config, seed=0, data="", out="", val_limit=None, test_limit=None, dynamics_every=0
    )


@functools.lru_cache(maxsize=8)
def _cached_optimizer(config: TrainConfig, total_steps: int) -> optax.GradientTransformation:
    return make_optimizer(config, total_steps)


def make_optimizer(config: TrainConfig, total_steps: int) -> optax.GradientTransformation:
    """AdamW on a warm-up + cosine schedule, after the aggregation unless ``ls``."""
    warmup = max(1, int(config.warmup_fraction * total_steps))
    schedule = optax.warmup_cosine_decay_schedule(0.0, config.lr, warmup, max(total_steps, 2))
    adamw = optax.adamw(schedule, weight_decay=config.weight_decay)
    if config.optimizer == "ls":
        return adamw
    agg = aggregator(
        config.optimizer, config.task_weights, rho=config.rho, kappa=config.kappa, nu=config.nu
    )
    return optax.chain(agg, adamw)


def dynamics_row(jac: Any, task_weights: tuple[float, ...]) -> dict[str, jax.Array]:
    """The double dilemma of one step, from its Jacobian (``cg.gradient_dynamics``):
    ``dynamics/cosine`` cos(g_lm, g_cls), ``dynamics/ratio`` ‖λ_lm g_lm‖ / ‖λ_cls g_cls‖ and
    ``dynamics/retention`` ‖g_λ‖ / Σ_i λ_i‖g_i‖."""
    stats = cg.gradient_dynamics(cg.gramian(jac), jnp.asarray(task_weights))
    lm, cls = stats.weighted_norms[0], stats.weighted_norms[1]
    return {
        "dynamics/cosine": stats.cosines[0, 1],
        "dynamics/ratio": jnp.where(cls > 0.0, lm / jnp.where(cls > 0.0, cls, 1.0), jnp.inf),
        "dynamics/retention": stats.retention,
    }


@functools.lru_cache(maxsize=8)
def make_dynamics_probe(config: TrainConfig) -> Any:
    """``(graphdef, state, batch) -> dynamics_row``: the task gradients of a model that the
    step does not compute them for (``ls``), for the record only. It runs on a merged copy, so
    the model and its dropout stream are left as they were: probing never changes a run."""
    jacobian = cgnnx.value_and_jacobian(task_losses, has_aux=True)

    def probe(graphdef: Any, state: Any, batch: dict) -> dict[str, jax.Array]:
        _, jac = jacobian(nnx.merge(graphdef, state), batch)
        return dynamics_row(jac, config.task_weights)

    return jax.jit(probe, static_argnums=0)


@functools.lru_cache(maxsize=8)
def make_train_step(config: TrainConfig) -> Any:
    """The jitted step ``(model, optimizer, batch) -> (task losses, diagnostics)``; the
    diagnostics are ``cg.diagnostic_arrays`` of the optimizer state (γ as ``gain``, ν_t as
    ``fusion``, ...) and the step's :func:`dynamics_row` (both empty for ``ls``)."""
    if config.optimizer == "ls":
        objective = scalarised(config.task_weights)

        @nnx.jit
        def ls_step(model: Any, optimizer: Any, batch: dict) -> tuple[jax.Array, dict]:
            (_, losses), grads = nnx.value_and_grad(objective, has_aux=True)(model, batch)
            optimizer.update(model, grads)
            return losses, {}

        return ls_step

    jacobian = cgnnx.value_and_jacobian(task_losses, has_aux=True)

    @nnx.jit
    def jacobian_step(model: Any, optimizer: Any, batch: dict) -> tuple[jax.Array, dict]:
        (losses, _), jac = jacobian(model, batch)
        optimizer.update(model, jac)
        diagnostics = cg.diagnostic_arrays(optimizer.opt_state)
        return losses, diagnostics | dynamics_row(jac, config.task_weights)

    return jacobian_step


@nnx.jit
def _eval_losses(model: Any, batch: dict) -> tuple[jax.Array, jax.Array, jax.Array]:
    return example_losses(nnx.view(model, deterministic=True), batch)[:3]


def validation_losses(model: Any, dataset: RRGDataset, batch_size: int) -> list[float]:
    """``[L_lm, L_cls]`` over a whole split, eval mode; the last batch is padded (one shape)."""
    lm_sum = count = cls_sum = 0.0
    for batch in dataset.batches(batch_size):
        n = len(batch["index"])
        padded = {k: np.concatenate([v, v[:1].repeat(batch_size - n, 0)]) for k, v in batch.items()}
        lm, tokens, cls = (
            np.asarray(x, np.float64)[:n] for x in _eval_losses(model, _device(padded))
        )
        lm_sum, count, cls_sum = lm_sum + lm.sum(), count + tokens.sum(), cls_sum + cls.sum()
    return [lm_sum / max(count, 1.0), cls_sum / len(dataset)]


def _device(batch: dict[str, np.ndarray]) -> dict[str, jax.Array]:
    return {k: jnp.asarray(v) for k, v in batch.items() if k != "index"}


def initialize_distributed(
    coordinator: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
) -> None:
    """``jax.distributed.initialize``: call it in every process before any other JAX call.

    Arguments left ``None`` are detected by JAX (the coordinator also from the
    ``JAX_COORDINATOR_ADDRESS`` variable; all three on Slurm, Open MPI and Cloud TPU pods).
    On CPU the cross-process collectives go over Gloo, on GPU over NCCL.
    """
    jax.distributed.initialize(
        coordinator_address=coordinator, num_processes=num_processes, process_id=process_id
    )


def data_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A one-axis ``"data"`` mesh over ``devices``, by default every device of every process
    of the job. The axis is *automatic*: the models carry no sharding annotations (an explicit
    axis would make e.g. the embedding lookup of a batch-sharded input ambiguous), so the
    compiler propagates the batch sharding through them."""
    devices = list(jax.devices() if devices is None else devices)
    return jax.make_mesh((len(devices),), ("data",), axis_types=(AxisType.Auto,), devices=devices)


def _through_keys(fn: Any) -> Any:
    """``fn`` for arrays that also maps typed PRNG keys, through their raw key data."""

    def apply(x: Any) -> Any:
        if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            data = fn(jax.random.key_data(x))
            return jax.random.wrap_key_data(data, impl=jax.random.key_impl(x))
        return fn(x)

    return apply


def _first_copy(x: Any) -> Any:
    """This process's first copy of a (replicated) global array; other values unchanged."""
    return x.addressable_data(0) if isinstance(x, jax.Array) else x


def _replicated(tree: Any, mesh: Mesh) -> Any:
    """Every array of ``tree`` (the same values on every process) as a global array replicated
    over ``mesh``; typed PRNG keys stay keys."""
    sharding = NamedSharding(mesh, P())

    def put(x: Any) -> jax.Array:
        value = np.asarray(_first_copy(x))
        return jax.make_array_from_process_local_data(sharding, value, value.shape)

    return jax.tree.map(_through_keys(put), tree)


def _local_copy(model: Any) -> Any:
    """The model with its (replicated) global arrays replaced by this process's first copy: an
    ordinary one-device model, for evaluation without cross-process communication."""
    graphdef, state = nnx.split(model)
    return nnx.merge(graphdef, jax.tree.map(_through_keys(_first_copy), state))


def _process_rows(sharding: NamedSharding, batch_size: int) -> slice:
    """The rows of a global batch that this process's devices hold (a contiguous block)."""
    where = sharding.addressable_devices_indices_map((batch_size,)).values()
    spans = sorted({index[0].indices(batch_size)[:2] for index in where if index is not None})
    if any(end != begin for (_, end), (begin, _) in itertools.pairwise(spans)):
        raise ValueError(f"this process's devices hold non-contiguous parts of the batch: {spans}")
    return slice(spans[0][0], spans[-1][1])


def _host(x: jax.Array) -> np.ndarray:
    """A replicated array's value (one process's first copy), as numpy."""
    return np.asarray(_first_copy(x))


def train(
    config: TrainConfig,
    *,
    resume: bool = False,
    progress: bool = True,
    stop_after: int | None = None,
    mesh: Mesh | None = None,
) -> dict[str, Any] | None:
    """Train, validate every epoch, checkpoint, then evaluate on the test split.

    ``resume`` continues from the checkpoint in ``config.out``; ``stop_after`` ends the call
    after that many epochs (counted from the first, as an interruption would; returns None),
    so that a time-limited job can be resumed later.

    ``mesh`` (e.g. :func:`data_mesh`, after :func:`initialize_distributed` in a multi-process
    job) trains data parallel: every global batch of ``config.batch_size`` studies is split
    over the mesh's ``"data"`` axis, each process building only its rows; the parameters and
    optimizer state are replicated and the train step runs on the global arrays, so the
    Jacobian and its Gram matrix are the global batch's. Each process validates and evaluates
    a local copy of the model; only process 0 shows progress and writes results (the
    checkpoint is written by all), and the other processes return None.

    Every step's row of ``history["steps"]`` holds the task losses and, for the Jacobian
    optimizers, the diagnostics and the :func:`dynamics_row`; for ``ls`` the dynamics are
    probed every ``config.dynamics_every`` steps (single process only; not timed).

    Returns ``{"config", "history", "test", "train_seconds", "first_step_seconds"}`` (also in
    ``config.out``): ``train_seconds`` sums the step times except the run's first step, which
    includes the compilation when no earlier run in the process compiled the same step.
    """
    from tqdm.auto import tqdm

    if config.optimizer not in OPTIMIZERS:
        raise ValueError(f"`optimizer` must be one of {OPTIMIZERS}; got {config.optimizer!r}.")
    if config.backbone not in BACKBONES:
        raise ValueError(f"`backbone` must be one of {BACKBONES}; got {config.backbone!r}.")
    if len(config.task_weights) != 2 or min(config.task_weights) < 0:
        raise ValueError(f"`task_weights` must be two numbers >= 0; got {config.task_weights}.")
    rows: slice | None = None
    batch_sharding: NamedSharding | None = None
    if mesh is not None:
        devices = mesh.shape["data"]
        if config.batch_size % devices:
            raise ValueError(
                f"--batch-size {config.batch_size} must be divisible by the number of devices "
                f"({devices}): every device gets an equal part of each global batch."
            )
        batch_sharding = NamedSharding(mesh, P("data"))
        rows = _process_rows(batch_sharding, config.batch_size)
    main_process = jax.process_index() == 0
    progress = progress and main_process
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    if main_process:
        (out / "config.json").write_text(json.dumps(dataclasses.asdict(config), indent=2) + "\n")
    vocab, data = load_data(config)
    if main_process:
        vocab.save(out / "vocab.json")
    steps_per_epoch = len(data["train"]) // config.batch_size
    if steps_per_epoch == 0:
        raise ValueError(
            f"the training split has {len(data['train'])} studies, fewer than one batch "
            f"(--batch-size {config.batch_size})."
        )
    model = build_model(
        config.backbone,
        vocab_size=len(vocab),
        num_views=data["train"].images.shape[1],
        image_size=config.image_size,
        d_model=config.d_model,
        num_layers=config.num_layers,
        dropout=config.dropout,
        guided=config.guided,
        rngs=nnx.Rngs(config.seed),
    )
    key = _compiled_key(config)
    tx = _cached_optimizer(key, steps_per_epoch * config.epochs)
    if mesh is not None:
        nnx.update(model, _replicated(nnx.state(model), mesh))
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    if mesh is not None:
        nnx.update(optimizer, _replicated(nnx.state(optimizer), mesh))
    step_fn = make_train_step(key)
    probe = None
    if config.optimizer == "ls" and config.dynamics_every > 0 and mesh is None:
        probe = make_dynamics_probe(key)
    on_mesh = contextlib.nullcontext if mesh is None else functools.partial(jax.set_mesh, mesh)
    history: dict[str, Any] = {"steps": [], "epochs": []}
    first_epoch, train_seconds = 0, 0.0
    first_step_seconds: float | None = None
    ckpt = out / "checkpoint"
    if resume and ckpt.exists():
        like = {"model": nnx.state(model), "optimizer": nnx.state(optimizer), "epoch": 0}
        restored = checkpoint.restore(ckpt, nnx.as_pure(like))
        nnx.update(model, restored["model"])
        nnx.update(optimizer, restored["optimizer"])
        first_epoch = int(restored["epoch"])
        saved = json.loads((out / "history.json").read_text())
        history, train_seconds = saved["history"], saved["train_seconds"]

    for epoch in range(first_epoch, config.epochs):
        batches = data["train"].batches(
            config.batch_size,
            shuffle=True,
            seed=config.seed * 100_003 + epoch,
            drop_last=True,
            rows=rows,
        )
        bar = tqdm(
            prefetch(batches),
            total=steps_per_epoch,
            desc=f"{config.optimizer} epoch {epoch + 1}/{config.epochs}",
            disable=not progress,
            leave=False,
        )
        for batch in bar:
            started = time.perf_counter()
            if batch_sharding is None:
                losses, diag = step_fn(model, optimizer, _device(batch))
                row = {"lm": float(losses[0]), "cls": float(losses[1])}  # waits for the step
            else:
                arrays = {
                    k: jax.make_array_from_process_local_data(
                        batch_sharding, v, (config.batch_size, *v.shape[1:])
                    )
                    for k, v in batch.items()
                    if k != "index"
                }
                with on_mesh():
                    losses, diag = step_fn(model, optimizer, arrays)
                diag = {k: _host(v) for k, v in diag.items()}
                lm, cls = _host(losses).tolist()  # waits for the step
                row = {"lm": lm, "cls": cls}
            if first_step_seconds is None:  # this process's first step compiles: kept apart
                first_step_seconds = time.perf_counter() - started
            else:
                train_seconds += time.perf_counter() - started
            if probe is not None and len(history["steps"]) % config.dynamics_every == 0:
                diag = probe(*nnx.split(model), _device(batch))  # after the step, not timed
            row.update(cg.flatten_diagnostics(diag))
            history["steps"].append(row)
            shown = {k: f"{row[k]:.3f}" for k in LIVE if k in row}
            bar.set_postfix(shown, refresh=False)
        eval_model = model if mesh is None else _local_copy(model)
        val_lm, val_cls = validation_losses(eval_model, data["val"], config.batch_size)
        val_metrics, _ = evaluate(
            eval_model,
            data["val"],
            vocab,
            batch_size=config.batch_size,
            beam_size=1,
            limit=config.val_limit,
        )
        summary = {"epoch": epoch + 1, "val_lm": val_lm, "val_cls": val_cls}
        history["epochs"].append(summary | {f"val_{k}": v for k, v in val_metrics.items()})
        if progress:
            print(
                f"{config.optimizer} epoch {epoch + 1}: val lm {val_lm:.3f} cls {val_cls:.3f} "
                f"CE-F1 {val_metrics['ce14_f1_micro']:.3f} BLEU-4 {val_metrics['BLEU_4']:.3f}"
            )
        state = {"model": nnx.state(model), "optimizer": nnx.state(optimizer), "epoch": epoch + 1}
        checkpoint.save(ckpt, nnx.as_pure(state))  # by every process, each its own part
        if main_process:
            (out / "history.json").write_text(
                json.dumps({"history": history, "train_seconds": train_seconds}) + "\n"
            )
        if stop_after is not None and epoch + 1 >= stop_after:
            return None

    test_metrics, generated = evaluate(
        model if mesh is None else _local_copy(model),
        data["test"],
        vocab,
        batch_size=config.batch_size,
        beam_size=config.beam_size,
        limit=config.test_limit,
    )
    result = {
        "config": dataclasses.asdict(config),
        "history": history,
        "test": test_metrics,
        "train_seconds": train_seconds,
        "first_step_seconds": first_step_seconds,
    }
    if not main_process:
        return None
    (out / "metrics.json").write_text(json.dumps(result, indent=1) + "\n")
    samples = [
        {"id": i, "generated": g, "reference": r}
        for i, g, r in zip(data["test"].ids, generated, data["test"].reports, strict=False)
    ]
    (out / "generated.json").write_text(json.dumps(samples, indent=1) + "\n")
    plot_run(history, out / "curves.png", title=f"{config.optimizer} ({config.backbone})")
    return result


def parser() -> argparse.ArgumentParser:
    """The command line, one flag per :class:`TrainConfig` field plus ``--resume``."""
    p = argparse.ArgumentParser(
        prog="python -m examples.rrg.train", description=__doc__.split("\n\n")[0]
    )
    defaults = TrainConfig()
    for field in dataclasses.fields(TrainConfig):
        flag = "--" + field.name.replace("_", "-")
        default = getattr(defaults, field.name)
        help_text = FIELD_HELP[field.name] + " (default %(default)s)"
        if field.name == "task_weights":
            p.add_argument(
                flag,
                type=float,
                nargs=2,
                default=list(default),
                metavar=("LM", "CLS"),
                help=help_text,
            )
        elif field.name == "guided":
            p.add_argument(
                flag, action=argparse.BooleanOptionalAction, default=default, help=help_text
            )
        elif field.name == "kappa":
            p.add_argument(
                flag,
                type=lambda v: None if v.lower() == "none" else float(v),
                default=default,
                help=help_text,
            )
        elif field.name in ("val_limit", "test_limit"):
            p.add_argument(flag, type=int, default=default, help=help_text)
        else:
            kind = type(default)
            choices = {"optimizer": OPTIMIZERS, "backbone": BACKBONES, "layout": MIN_COUNT}
            p.add_argument(
                flag, type=kind, default=default, choices=choices.get(field.name), help=help_text
            )
    p.add_argument("--resume", action="store_true", help="continue from --out's checkpoint")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    p.add_argument(
        "--stop-after",
        type=int,
        default=None,
        metavar="EPOCHS",
        help="end after this many epochs, checkpointed, without testing (continue with --resume)",
    )
    group = p.add_argument_group(
        "multi-process (multi-host) data parallelism",
        "Run the same command in every process; see docs/howto-sharding.md.",
    )
    group.add_argument(
        "--distributed",
        action="store_true",
        help="join a jax.distributed job and train data parallel over all its devices "
        "(--batch-size is the global batch; --out must be shared by all processes)",
    )
    group.add_argument(
        "--coordinator",
        default=None,
        metavar="HOST:PORT",
        help="process 0's address and a free port (default: $JAX_COORDINATOR_ADDRESS, or "
        "detected on Slurm, Open MPI and Cloud TPU)",
    )
    group.add_argument(
        "--num-processes",
        type=int,
        default=None,
        metavar="N",
        help="number of processes of the job (default: from the environment, as --coordinator)",
    )
    group.add_argument("--process-id", type=int, default=None, metavar="I", help="0 .. N-1")
    return p


def main(argv: Sequence[str] | None = None) -> dict[str, Any] | None:
    """The command line. Returns the result of :func:`train` (None before the end of the run,
    with ``--stop-after``, and on processes other than 0)."""
    p = parser()
    args = vars(p.parse_args(argv))
    resume, progress = args.pop("resume"), not args.pop("no_progress")
    stop_after = args.pop("stop_after")
    distributed = args.pop("distributed")
    launch = {k: args.pop(k) for k in ("coordinator", "num_processes", "process_id")}
    if not distributed and any(v is not None for v in launch.values()):
        p.error("--coordinator, --num-processes and --process-id need --distributed")
    args["task_weights"] = tuple(args["task_weights"])
    for key in ("val_limit", "test_limit"):
        args[key] = args[key] or None
    config = TrainConfig(**args)
    if not distributed:
        result = train(config, resume=resume, progress=progress, stop_after=stop_after)
    else:
        initialize_distributed(**launch)
        try:
            result = train(
                config, resume=resume, progress=progress, stop_after=stop_after, mesh=data_mesh()
            )
        finally:
            jax.distributed.shutdown()
    if result is not None:
        print(json.dumps(result["test"], indent=1))
    return result


if __name__ == "__main__":
    main()
