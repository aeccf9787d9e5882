"""Tests of the multi-task benchmark suite (benchmarks/mtl): data, scores and the quick run."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.datasets import load_digits

from benchmarks.mtl import methods, metrics, multidigits, report, zdt
from benchmarks.mtl.run import run_suite

SMALL = multidigits.DigitsSize(train=2000, val=300, test=300)


@pytest.fixture(scope="module")
def digits0() -> dict:
    return multidigits.build(0, SMALL)


def test_multidigits_is_deterministic_per_seed(digits0: dict) -> None:
    again = multidigits.build(0, SMALL)
    other = multidigits.build(1, SMALL)
    for split in multidigits.SPLITS:
        for key in ("images", "labels", "sources"):
            np.testing.assert_array_equal(digits0[split][key], again[split][key])
        assert not np.array_equal(digits0[split]["images"], other[split]["images"])
        assert not np.array_equal(digits0[split]["sources"], other[split]["sources"])


def test_multidigits_shapes_and_ranges(digits0: dict) -> None:
    for split in multidigits.SPLITS:
        n = getattr(SMALL, split)
        images, labels = digits0[split]["images"], digits0[split]["labels"]
        assert images.shape == (n, SMALL.canvas, SMALL.canvas) and images.dtype == np.float32
        assert labels.shape == (n, 2) and digits0[split]["sources"].shape == (n, 2)
        assert images.min() >= 0.0 and images.max() <= 1.0
        assert set(np.unique(labels)) <= set(range(10))


def test_multidigits_labels_are_balanced(digits0: dict) -> None:
    labels = digits0["train"]["labels"]
    for task in range(2):
        share = np.bincount(labels[:, task], minlength=10) / len(labels)
        assert share.min() > 0.05 and share.max() < 0.16, share


def test_multidigits_splits_share_no_source_image(digits0: dict) -> None:
    pools = {s: set(digits0[s]["sources"].ravel().tolist()) for s in multidigits.SPLITS}
    assert not pools["train"] & pools["val"]
    assert not pools["train"] & pools["test"]
    assert not pools["val"] & pools["test"]
    # Distinct source indices could still be the same picture: compare the pixels too.
    raw = load_digits().images
    train_pixels = {raw[i].tobytes() for i in pools["train"]}
    assert not any(raw[i].tobytes() in train_pixels for i in pools["test"] | pools["val"])


def test_multidigits_images_are_the_overlay_of_their_sources(digits0: dict) -> None:
    raw, target = load_digits(return_X_y=False).images / 16.0, load_digits().target
    c = SMALL.canvas
    for i in range(25):
        left_i, right_i = digits0["train"]["sources"][i]
        np.testing.assert_array_equal(digits0["train"]["labels"][i], target[[left_i, right_i]])
        matches = []
        for r, q, r2, q2 in np.ndindex(2, 2, 2, 2):
            left = np.pad(raw[left_i], ((r, c - 8 - r), (q, c - 8 - q)))
            right = np.pad(raw[right_i], ((c - 8 - r2, r2), (c - 8 - q2, q2)))
            matches.append(np.allclose(np.maximum(left, right), digits0["train"]["images"][i]))
        assert any(matches), i


def test_delta_m_against_a_hand_computed_example() -> None:
    # accuracy 0.8 -> 0.9 (higher is better): +12.5 %; error 0.2 -> 0.15 (lower): +25 %.
    # Δm% = (12.5 + 25) / 2 = 18.75.
    value = metrics.delta_m(
        {"acc": 0.9, "err": 0.15}, {"acc": 0.8, "err": 0.2}, {"acc": False, "err": True}
    )
    assert value == pytest.approx(18.75)
    worse = metrics.delta_m({"err": 0.3}, {"err": 0.2}, {"err": True})
    assert worse == pytest.approx(-50.0)
    for zero in (0.0, 1e-15):
        with pytest.raises(ValueError):
            metrics.delta_m({"acc": 1.0}, {"acc": zero}, {"acc": False})


def test_paired_delta_m_and_ranking_in_the_summary() -> None:
    problem = {
        "metrics": {"a": {"label": "a", "lower_is_better": False}},
        "delta_m_metrics": ["a"],
        "methods": {
            "LS": {"per_seed": {"a": [0.5, 0.4]}, "seconds": {"total": 1.0}},
            "X": {"per_seed": {"a": [0.6, 0.6]}, "seconds": {"total": 1.0}},
            "Y": {"per_seed": {"a": [0.45, 0.4]}, "seconds": {"total": 1.0}},
        },
    }
    out = report.summarise(problem)
    # X: +20 % on seed 0 and +50 % on seed 1.
    assert out["summary"]["X"]["delta_m"]["values"] == pytest.approx([20.0, 50.0])
    assert out["summary"]["X"]["delta_m"]["std"] == pytest.approx(np.std([20, 50], ddof=1))
    assert out["ranking"] == ["X", "LS", "Y"]


def test_pareto_distance_against_closed_forms() -> None:
    # At f1 = 1/4 the front f2 = 1 - √f1 passes (1/4, 1/2) with slope -1/(2√f1) = -1, so its
    # normal is (1, 1)/√2. The front is the boundary of the convex set {f2 >= 1 - √f1}; a
    # point outside it on that normal is at exactly the step's distance.
    d = 0.1
    below = [0.25 - d / math.sqrt(2), 0.5 - d / math.sqrt(2)]
    beyond_end = [1.0 + 0.05, 0.0]  # nearest front point is the end (1, 0)
    on_front = [0.64, 0.2]
    got = zdt.front_distance(np.array([below, beyond_end, on_front]))
    np.testing.assert_allclose(got, [0.1, 0.05, 0.0], atol=1e-6)


def test_zdt1_objectives_match_the_published_definition() -> None:
    rng = np.random.default_rng(0)
    z = rng.normal(size=10)
    x = 1.0 / (1.0 + np.exp(-z))
    g = 1.0 + 9.0 * x[1:].sum() / 9.0
    expected = [x[0], g * (1.0 - np.sqrt(x[0] / g))]
    np.testing.assert_allclose(
        np.asarray(zdt.objectives(jnp.asarray(z, jnp.float32))), expected, rtol=1e-5
    )
    # On the Pareto set (x_2..x_n -> 0) the objectives lie on the front.
    pareto = np.asarray(zdt.objectives(jnp.concatenate([jnp.array([0.3]), jnp.full(9, -40.0)])))
    assert zdt.front_distance(pareto[None])[0] < 1e-5


def test_hypervolume_2d_against_a_hand_computed_union() -> None:
    # Boxes [0,2]x[1,2] (area 2) and [1,2]x[0,2] (area 2) overlap in [1,2]x[1,2] (area 1).
    # The dominated (1.5, 1.5) and the point outside the reference add nothing.
    points = np.array([[0.0, 1.0], [1.0, 0.0], [1.5, 1.5], [3.0, -1.0]])
    assert metrics.hypervolume_2d(points, (2.0, 2.0)) == pytest.approx(3.0)
    # The whole ZDT1 front: ∫₀¹ (0.1 + √f) df + 0.1 · 1.1.
    assert zdt.hypervolume(zdt.front()) == pytest.approx(0.1 + 2 / 3 + 0.11, abs=1e-3)


@pytest.mark.slow
def test_every_method_builds_and_steps() -> None:
    jac = {"w": jnp.array([[1.0, 0.0], [-0.5, 1.0]])}
    for method in methods.METHODS:
        tx = method.make(2)
        update, _ = tx.update(
            jac, tx.init({"w": jnp.zeros(2)}), None, **methods.update_args(method, jnp.ones(2))
        )
        assert np.all(np.isfinite(np.asarray(update["w"]))), method.name


def _check_results(payload: dict, problems: list[str], names: list[str]) -> None:
    assert set(payload) == {"meta", "problems"}
    assert list(payload["problems"]) == problems
    for name, problem in payload["problems"].items():
        expected = [n for n in names if not (name == "toy" and methods.BY_NAME[n].needs_losses)]
        assert sorted(problem["methods"]) == sorted(expected)
        assert sorted(problem["ranking"]) == sorted(expected)
        for method, entry in problem["summary"].items():
            for key in problem["metrics"]:
                stat = entry[key]
                assert stat["mean"] is not None and math.isfinite(stat["mean"]), (name, method)
                assert len(stat["values"]) == len(payload["meta"]["seeds"])
            if problem["delta_m_metrics"]:
                assert math.isfinite(entry["delta_m"]["mean"]), (name, method)
            assert entry["seconds"]["total"] > 0


def test_suite_writes_well_formed_results_for_zdt1(tmp_path: Path) -> None:
    names = ["LS", "FAMO", "CAME-Grad"]
    payload = run_suite(
        tmp_path, quick=True, problems=["zdt1"], method_names=names, log=lambda _: None
    )
    _check_results(payload, ["zdt1"], names)
    assert payload["problems"]["zdt1"]["summary"]["LS"]["delta_m"]["mean"] == 0.0
    on_disk = json.loads((tmp_path / "results.json").read_text())
    assert on_disk["problems"]["zdt1"]["ranking"] == payload["problems"]["zdt1"]["ranking"]
    assert "| # | method |" in (tmp_path / "summary.md").read_text()
    assert (tmp_path / "zdt1_points.png").stat().st_size > 0


@pytest.mark.slow
def test_quick_command_writes_well_formed_results(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[2]
    subprocess.run(
        [sys.executable, "-m", "benchmarks.mtl", "--quick", "--out", str(tmp_path)],
        cwd=root,
        check=True,
        capture_output=True,
    )
    payload = json.loads((tmp_path / "results.json").read_text())
    _check_results(payload, ["multidigits", "zdt1", "toy"], list(methods.QUICK))
    for figure in payload["meta"]["figures"].values():
        assert Path(figure).stat().st_size > 0
