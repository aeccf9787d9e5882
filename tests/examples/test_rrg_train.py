"""The RRG training loop: steps reduce both losses, resuming equals not stopping, demo summary."""

from __future__ import annotations

import dataclasses
import json

import jax
import numpy as np
import pytest
from flax import nnx

import camegrad_jax as cg
from examples.rrg import demo, plots
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
        last, arrays = step(model, optimizer_, batch)
    diag = cg.flatten_diagnostics(jax.device_get(arrays))
    first, last = np.asarray(first), np.asarray(last)
    assert np.all(last < 0.8 * first), (first, last)
    if optimizer == "came":
        assert {"gain", "fusion", "coefficients/0", "cosines/0/1"} <= set(diag)
        assert 0.0 < float(diag["gain"]) <= config.kappa
        # The step's gradient dynamics (cg.gramian + cg.gradient_dynamics) agree with the
        # cosine CAME-Grad computed on its own (rescaled) Gram matrix.
        np.testing.assert_allclose(diag["dynamics/cosine"], diag["cosines/0/1"], atol=1e-5)
        assert 0.0 <= float(diag["dynamics/retention"]) <= 1.0


@pytest.mark.slow
def test_ls_dynamics_probe_leaves_the_run_unchanged(dataset, tmp_path):
    base = TrainConfig(data=str(dataset), optimizer="ls", epochs=1, val_limit=8, test_limit=8,
                       **SMALL)  # fmt: skip
    plain = train(
        dataclasses.replace(base, out=str(tmp_path / "a"), dynamics_every=0), progress=False
    )
    probed = train(
        dataclasses.replace(base, out=str(tmp_path / "b"), dynamics_every=2), progress=False
    )
    assert plain is not None and probed is not None
    losses = lambda r: [(s["lm"], s["cls"]) for s in r["history"]["steps"]]  # noqa: E731
    assert losses(probed) == losses(plain)  # the probe consumed no dropout randomness
    rows = probed["history"]["steps"]
    recorded = [i for i, s in enumerate(rows) if "dynamics/cosine" in s]
    assert recorded == list(range(0, len(rows), 2)) and len(recorded) >= 2
    assert all(-1.0 <= rows[i]["dynamics/cosine"] <= 1.0 for i in recorded)
    assert not any("dynamics/cosine" in s for s in plain["history"]["steps"])


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
    size = demo.DemoSize(0, epochs=1, seeds=(0, 1), val_limit=8, test_limit=8, beam_size=1,
                         image_size=32, d_model=32, num_layers=1, batch_size=8)  # fmt: skip
    summary = demo.run_demo(tmp_path / "demo", dataset, size=size, progress=False)
    on_disk = json.loads((tmp_path / "demo" / "summary.json").read_text())
    assert on_disk["optimizers"] == json.loads(json.dumps(summary["optimizers"]))
    assert set(summary["optimizers"]) == {"ls", "came"}
    runs = {}
    for name, entry in summary["optimizers"].items():
        assert entry["seeds"] == [0, 1]
        runs[name] = [
            json.loads((tmp_path / "demo" / name / f"seed{s}" / "metrics.json").read_text())
            for s in (0, 1)
        ]
        assert runs[name][0]["config"]["guided"]  # the demo decodes guided
        for _, key, _ in demo.COLUMNS:
            values = entry[key]["values"]
            assert len(values) == 2 and all(np.isfinite(values)), (name, key)
            assert entry[key]["mean"] == pytest.approx(sum(values) / 2)
            assert entry[key]["std"] == pytest.approx(abs(values[0] - values[1]) / 2**0.5)
        assert runs[name][0]["test"]["ce14_f1_micro"] == entry["ce14_f1_micro"]["values"][0]
    # Paired differences, from the runs' own metrics files.
    for key in demo.PAIRED:
        d = summary["paired"]["came"][key]
        want = [runs["came"][s]["test"][key] - runs["ls"][s]["test"][key] for s in (0, 1)]
        assert d["differences"] == pytest.approx(want) and d["seeds"] == [0, 1]
        low, high = d["ci95"]
        assert low <= d["mean"] <= high
        assert d["verdict"] == (
            "better" if low > 0 else "worse" if high < 0 else "within the spread"
        )
    # The references: the ceiling's labels are the references' own, so its CE-5 F1 is perfect
    # unless the test split has no positive among the 5.
    ceiling, floor = summary["references"]["ceiling"], summary["references"]["floor"]
    assert ceiling["ce5_f1_micro"] in (1.0, None) and floor["BLEU_4"] < 1.0
    # The dynamics: every CAME-Grad step and every 5th LS step, fractions from the histories.
    for name, every in (("came", 1), ("ls", 20)):
        rows = [s for r in runs[name] for s in r["history"]["steps"]]
        cos = [s["dynamics/cosine"] for s in rows if "dynamics/cosine" in s]
        assert len(cos) == sum(len(r["history"]["steps"][::every]) for r in runs[name])
        d = summary["dynamics"][name]
        assert d["steps"] == len(cos)
        assert d["conflicting_fraction"] == pytest.approx(np.mean(np.asarray(cos) < 0))
    assert "median_gain" in summary["dynamics"]["came"]
    assert "median_gain" not in summary["dynamics"]["ls"]
    text = (tmp_path / "demo" / "summary.md").read_text()
    assert "Verdict: CAME-Grad (full) vs LS on CE-F1 macro" in text
    assert "reference: most frequent report" in text and "reference: labels → templates" in text
    for png in ("curves.png", "dilemma.png"):
        assert (tmp_path / "demo" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_large_preset_trains_a_few_steps(tmp_path):
    """``--size large`` (meant for a GPU) builds and takes CAME-Grad steps that lower the
    losses on one repeated batch, at its own image size, width, depth and batch size."""
    large = demo.LARGE
    root = tmp_path / "data"
    generate(root, layout="iu_xray", num_studies=2 * large.batch_size, image_size=large.image_size,
             seed=4, wording="canonical")  # fmt: skip
    config = TrainConfig(data=str(root), optimizer="came", image_size=large.image_size,
                         d_model=large.d_model, num_layers=large.num_layers,
                         batch_size=large.batch_size, lr=large.lr)  # fmt: skip
    vocab, data = load_data(config)
    batch = _device(next(data["train"].batches(large.batch_size, drop_last=True)))
    model = build_model(
        "cnn_transformer", vocab_size=len(vocab), num_views=2, image_size=large.image_size,
        d_model=large.d_model, num_layers=large.num_layers, guided=True, rngs=nnx.Rngs(0),
    )  # fmt: skip
    total = int(0.7 * large.num_studies) // large.batch_size * large.epochs  # the preset's schedule
    optimizer = nnx.Optimizer(model, make_optimizer(config, total), wrt=nnx.Param)
    step = make_train_step(dataclasses.replace(config, data=""))
    losses = [np.asarray(step(model, optimizer, batch)[0]) for _ in range(6)]
    assert np.all(np.isfinite(losses)) and np.all(losses[-1] < losses[0]), losses


@pytest.mark.slow
def test_sweep_writes_its_table_and_figure(dataset, tmp_path, monkeypatch):
    """The sweep machinery on two of its variants (κ = None reaches the optimizer as None), the
    docs' way of drawing the figure from a saved sweep.json, and resuming."""
    monkeypatch.setattr(demo, "SWEEP", {k: demo.SWEEP[k] for k in ("ls", "kappa=None")})
    size = demo.DemoSize(0, epochs=1, seeds=(0,), val_limit=8, test_limit=8, beam_size=1,
                         image_size=32, d_model=32, num_layers=1, batch_size=8)  # fmt: skip
    result = demo.run_sweep(tmp_path / "sweep", dataset, size=size, progress=False)
    assert list(result["variants"]) == ["ls", "kappa=None"]
    config = json.loads((tmp_path / "sweep" / "kappa=None" / "seed0" / "config.json").read_text())
    assert config["kappa"] is None and config["optimizer"] == "came"
    assert result["paired"]["kappa=None"]["ce14_f1_macro"]["verdict"] == "too few seeds"
    assert "| kappa=None |" in (tmp_path / "sweep" / "sweep.md").read_text()
    plots.main([str(tmp_path / "sweep" / "sweep.json"), str(tmp_path / "docs" / "sweep.png")])

    def no_training(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(demo, "train", no_training)  # a re-run reuses every finished run ...
    again = demo.run_sweep(tmp_path / "sweep", dataset, size=size, progress=False)
    assert again["variants"] == result["variants"]
    with pytest.raises(AssertionError, match="trained again"):  # ... of the same config only
        demo.run_sweep(tmp_path / "sweep", dataset, size=dataclasses.replace(size, epochs=2))
    for png in (tmp_path / "sweep" / "sweep.png", tmp_path / "docs" / "sweep.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
