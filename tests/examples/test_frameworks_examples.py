"""Each framework example trains (both task losses fall) and runs from its command line."""

from __future__ import annotations

import importlib

import jax.numpy as jnp
import pytest

EXAMPLES = ["linen_mlp", "equinox_mlp", "shared_heads"]


@pytest.fixture(name="example", params=EXAMPLES)
def fixture_example(request):
    if request.param == "equinox_mlp":
        pytest.importorskip("equinox")
    return importlib.import_module(f"examples.frameworks.{request.param}")


def test_training_lowers_both_losses(example):
    history = example.train(steps=40)
    assert history.shape == (40, 2)
    assert bool(jnp.all(history[-1] < 0.9 * history[0])), (history[0], history[-1])


def test_command_line(example, capsys):
    example.main(["--steps", "3"])
    out = capsys.readouterr().out
    assert out.startswith("task losses: [") and "at step 2" in out, out


def test_command_line_rejects_zero_steps(capsys):
    from examples.frameworks import linen_mlp

    with pytest.raises(SystemExit):
        linen_mlp.main(["--steps", "0"])
    assert "--steps must be at least 1" in capsys.readouterr().err
