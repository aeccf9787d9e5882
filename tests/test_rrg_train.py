"""The RRG training loop: steps reduce both losses, resuming equals not stopping, demo summary."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from flax import nnx

from examples.rrg import demo
from examples.rrg.models import build_model
from examples.rrg.synthetic import generate
from examples.rrg.train import (
    TrainConfig,
    _device,
    load_data,
    make_optimizer,
    make_train_step,
    train,
)

SMALL = {"image_size": 32, "d_model": 32, "num_layers": 1, "batch_size": 8, "beam_size": 1}


def make_dataset(root):
    """A tiny synthetic IU X-Ray dataset at ``root`` for the ``SMALL`` configuration."""
    generate(root, layout="iu_xray", num_studies=60, image_size=32, seed=3)
    return root


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("rrg") / "data")


@pytest.mark.parametrize("optimizer", ["ls", "came"])
def test_jitted_steps_reduce_both_losses(dataset, optimizer):
    config = TrainConfig(data=str(dataset), optimizer=optimizer, lr=3e-3, **SMALL)
    vocab, data = load_data(config)
    batch = _device(next(data["train"].batches(8, drop_last=True)))
    model = build_model(
        "cnn_transformer", vocab_size=len(vocab), num_views=2, image_size=32, d_model=32,
        num_layers=1, dropout=0.0, rngs=nnx.Rngs(0),
    )  # fmt: skip
    optimizer_ = nnx.Optimizer(model, make_optimizer(config, 400), wrt=nnx.Param)
    step = make_train_step(config)
    first, _ = step(model, optimizer_, batch)
    for _ in range(40):
        last, diag = step(model, optimizer_, batch)
    first, last = np.asarray(first), np.asarray(last)
    assert np.all(last < 0.8 * first), (first, last)
    if optimizer == "came":
        assert {"gain", "fusion", "coefficients/0", "cosines/0/1"} <= set(diag)
        assert 0.0 < float(diag["gain"]) <= config.kappa


@pytest.mark.slow
def test_resume_equals_an_uninterrupted_run(dataset, tmp_path):
    base = TrainConfig(data=str(dataset), optimizer="came", epochs=2, val_limit=8, test_limit=8,
                       **SMALL)  # fmt: skip
    whole = train(dataclasses.replace(base, out=str(tmp_path / "whole")), progress=False)
    split = dataclasses.replace(base, out=str(tmp_path / "split"))
    assert train(split, progress=False, stop_after=1) is None
    assert not (tmp_path / "split" / "metrics.json").exists()
    resumed = train(split, progress=False, resume=True)
    assert whole is not None and resumed is not None
    steps = lambda r: [(s["lm"], s["cls"], s["gain"]) for s in r["history"]["steps"]]  # noqa: E731
    assert steps(resumed) == steps(whole)  # every step's losses, bit for bit
    assert resumed["history"]["epochs"] == whole["history"]["epochs"]
    assert resumed["test"] == whole["test"]


@pytest.mark.slow
def test_demo_quick_writes_a_well_formed_summary(dataset, tmp_path):
    size = demo.DemoSize(0, epochs=1, seeds=(0, 1), val_limit=8, test_limit=8, beam_size=1)
    summary = demo.run_demo(tmp_path / "demo", dataset, size=size, progress=False)
    on_disk = json.loads((tmp_path / "demo" / "summary.json").read_text())
    assert on_disk["optimizers"] == json.loads(json.dumps(summary["optimizers"]))
    assert set(summary["optimizers"]) == {"ls", "came"}
    for name, entry in summary["optimizers"].items():
        assert entry["seeds"] == [0, 1]
        for _, key, _ in demo.COLUMNS:
            values = entry[key]["values"]
            assert len(values) == 2 and all(np.isfinite(values)), (name, key)
            assert entry[key]["mean"] == pytest.approx(sum(values) / 2)
            assert entry[key]["std"] == pytest.approx(abs(values[0] - values[1]) / 2**0.5)
        metrics = json.loads((tmp_path / "demo" / name / "seed0" / "metrics.json").read_text())
        assert metrics["test"]["ce14_f1_micro"] == entry["ce14_f1_micro"]["values"][0]
    table = (tmp_path / "demo" / "summary.md").read_text()
    assert table.count("\n| ") == 3  # header row + two optimizers
    png = (tmp_path / "demo" / "curves.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
