"""Fast checks of the benchmarks (aggregators, scaling, train_step, stage1_iterations, device,
eager, product_precision).

Each script runs its smallest configuration (for the timing ones K = 2, a few hundred parameters;
for stage1_iterations its ``--quick`` cases) with a very short timing budget through its
``main``; the JSON it writes must be well formed. The timings themselves are not checked, only
that they are finite and positive.
"""

from __future__ import annotations

import importlib.util
import json
import math

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import optax
import pytest

import camegrad_jax as cg
from benchmarks import (
    _hlo,
    aggregators,
    device,
    eager,
    product_precision,
    scaling,
    stage1_iterations,
    train_step,
)
from benchmarks import _timing as timing

HAS_TORCHJD = importlib.util.find_spec("torchjd") is not None


@pytest.mark.parametrize("p", [3, 4, 10, 100, 255, 256, 1000, 12_345, 100_000, 10_000_000])
def test_leaf_shapes_sum_to_p(p):
    shapes = timing.leaf_shapes(p)
    assert list(shapes) == ["kernel", "vector", "bias"]
    assert all(math.prod(shape) >= 1 for shape in shapes.values())
    assert sum(math.prod(shape) for shape in shapes.values()) == p
    assert len(shapes["kernel"]) == 2


@pytest.mark.parametrize(("k", "p"), [(1, 3), (2, 300), (4, 1000)])
def test_make_jacobian_has_k_tasks_and_p_parameters(k, p):
    jac = timing.make_jacobian(k, p)
    assert timing.jacobian_size(jac) == (k, p)
    assert all(leaf.shape[0] == k and leaf.dtype == jax.numpy.float32 for leaf in jac.values())
    matrix = timing.jacobian_matrix(jac)
    assert matrix.shape == (k, p)
    assert (matrix != 0).all(axis=1).any()
    if k >= 2:  # tasks 0 and 1 share a direction with opposite signs: they conflict
        assert float(matrix[0] @ matrix[1]) < 0


def test_make_jacobian_rejects_bad_sizes():
    with pytest.raises(ValueError, match="P must be"):
        timing.make_jacobian(2, 2)
    with pytest.raises(ValueError, match="K must be"):
        timing.make_jacobian(0, 10)


def test_interleaved_times_records_errors():
    def broken():
        raise RuntimeError("no solver")

    times = timing.interleaved_times({"ok": lambda: 1.0, "broken": broken}, budget_s=0.0)
    assert times["broken"] == {"error": "RuntimeError: no solver"}
    assert times["ok"]["repeats"] == 5 and times["ok"]["median_ms"] >= 0


def test_every_transformation_is_benchmarked():
    gram_transformations = {
        "came_grad", "mgda", "upgrad", "dualproj", "cagrad", "pcgrad", "gradvac",
        "nash_mtl", "fairgrad", "imtl_g", "aligned_mtl", "config", "rlw",
    }  # fmt: skip
    assert all(hasattr(cg, name) for name in gram_transformations)
    assert set(aggregators.METHODS) == gram_transformations | {"mean"}
    assert set(aggregators.TORCHJD) == set(aggregators.METHODS) - {"came_grad"}
    assert set(aggregators.HOST_SOLVED) <= set(aggregators.TORCHJD)


def _positive(entry):
    return all(math.isfinite(entry[key]) and entry[key] > 0 for key in ("median_ms", "min_ms"))


def _check_aggregators(payload, path, methods, torch):
    assert json.loads(path.read_text()) == json.loads(json.dumps(payload))
    assert set(payload) >= {"meta", "rows", "baselines", "targets"}
    assert [row["method"] for row in payload["rows"]] == methods
    for row in payload["rows"]:
        assert (row["k"], row["p"]) == (2, 300)
        assert _positive(row["update"]) and _positive(row["weigh"])
        assert row["ratio_to_sum"] > 0 and row["solve_share"] > 0
        if torch and row["method"] != "came_grad":
            assert _positive(row["torchjd"]) and row["ours_over_torchjd"] > 0
        else:
            assert "torchjd" not in row
    assert _positive(payload["baselines"][0]["sum"])
    assert _positive(payload["baselines"][0]["sum_reduce"])
    assert len(payload["targets"]) == (sum(m != "came_grad" for m in methods) if torch else 0)


def test_aggregators_smallest_run(tmp_path):
    """Two cheap methods at K = 2, P = 300, without TorchJD and plots."""
    methods = ["mean", "mgda"]
    out = tmp_path / "aggregators.json"
    argv = ["--ks", "2", "--ps", "300", "--methods", *methods, "--budget", "0.01"]
    payload = aggregators.main([*argv, "--out", str(out), "--no-torch", "--no-plot"])
    _check_aggregators(payload, out, methods, False)


@pytest.mark.slow
@pytest.mark.skipif(not HAS_TORCHJD, reason="TorchJD not installed (the `bench` extra)")
def test_aggregators_against_torchjd(tmp_path):
    """Against TorchJD (importing torch takes seconds), with both plots."""
    methods = ["came_grad", "mean", "mgda"]
    out = tmp_path / "aggregators.json"
    argv = ["--ks", "2", "--ps", "300", "--methods", *methods, "--budget", "0.01"]
    payload = aggregators.main([*argv, "--out", str(out), "--torch-ks", "2", "--torch-ps", "300"])
    _check_aggregators(payload, out, methods, True)
    assert payload["meta"]["torchjd"]["torchjd"] == "0.18.0"
    assert len(payload["plots"]) == 2
    assert all(path.endswith(".png") for path in payload["plots"])


@pytest.mark.slow
def test_aggregators_every_method(tmp_path):
    """Every weighting at K = 2, P = 300, without TorchJD (about a minute: 28 compilations)."""
    out = tmp_path / "aggregators.json"
    argv = ["--ks", "2", "--ps", "300", "--budget", "0.01", "--no-torch", "--no-plot"]
    payload = aggregators.main([*argv, "--out", str(out)])
    _check_aggregators(payload, out, list(aggregators.METHODS), False)


def test_scaling_smallest_run(tmp_path):
    out = tmp_path / "scaling.json"
    argv = ["--ks", "2", "--k-p", "300", "--ps", "300", "--p-k", "2"]  # one point, shared
    argv += ["--methods", "came_grad", "--budget", "0.01", "--out", str(out)]
    payload = scaling.main(argv)
    assert json.loads(out.read_text()) == json.loads(json.dumps(payload))
    assert set(payload) >= {"meta", "vs_k", "vs_p", "targets", "plot"}
    assert [pt["k"] for pt in payload["vs_k"]["points"]] == [2]
    assert payload["vs_p"]["points"] == payload["vs_k"]["points"]
    for point in payload["vs_k"]["points"] + payload["vs_p"]["points"]:
        assert set(point["times"]) == {"came_grad", *scaling.PARTS}
        assert all(_positive(entry) for entry in point["times"].values())
        # The share in the update is a difference of two timings: noise may make it negative.
        times = point["times"]
        in_update = 1.0 - times["no_solve"]["median_ms"] / times["came_grad"]["median_ms"]
        assert point["solve_share"] == pytest.approx(in_update, rel=1e-9, abs=1e-12)
        assert point["solve_share_alone"] > 0
    assert payload["vs_k"]["slopes"] == payload["vs_p"]["slopes"] == {}  # one point: no fit
    assert payload["targets"]["slope_in_p"]["met"] is None  # no P >= 1e5 here
    assert payload["targets"]["solve_share"]["met"] is None  # no P = 1e6 here
    assert payload["targets"]["solve_share_k4"]["met"] is None
    assert payload["plot"].endswith(".png")


def test_share_targets_take_the_worst_point_of_their_range():
    points = [
        {"k": k, "p": p, "solve_share": share}
        for k, p, share in [(2, 10**6, 0.06), (4, 10**6, 0.03), (16, 10**6, 0.2), (4, 10**5, 0.9)]
    ]
    at_four = scaling.share_target(points, 4, 4)
    assert (at_four["value"], at_four["worst_k"], at_four["met"]) == (0.03, 4, True)
    up_to_32 = scaling.share_target(points, 2, 32)
    assert (up_to_32["value"], up_to_32["worst_k"], up_to_32["met"]) == (0.2, 16, False)


def test_eager_smallest_run(tmp_path):
    out = tmp_path / "eager.json"
    payload = eager.main(["--ks", "2", "--p", "300", "--budget", "0.01", "--out", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(payload))
    (row,) = payload["rows"]
    assert (row["k"], row["p"]) == (2, 300)
    assert row["eager_ms"] > row["jit_ms"] > 0 and row["ratio"] > 1


def test_scaling_fits_slopes():
    points = [{"k": 2, "p": p, "times": {"a": {"median_ms": 1e-3 * p}}} for p in (1e4, 1e5, 1e6)]
    assert scaling.fit(points, "p", ["a"], 100_000) == pytest.approx({"a": 1.0})
    assert timing.fit_slope([1, 10, 100], [3, 30, 300]) == pytest.approx(1.0)


@pytest.mark.slow
def test_train_step_quick_run_is_well_formed(tmp_path):
    """The RRG train-step benchmark at its CI size: every method timed, memory estimated."""
    out = tmp_path / "train_step.json"
    payload = train_step.main(["--quick", "--budget", "0.05", "--out", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(payload))
    rows = {row["method"]: row for row in payload["rows"]}
    assert set(rows) == set(train_step.METHODS)
    for row in rows.values():
        assert _positive(row) and row["memory_bytes"] > 0
    ls_ms = rows["ls"]["median_ms"]
    for row in rows.values():  # the ratios are to the LS step measured in the same run
        assert row["over_ls"] == pytest.approx(row["median_ms"] / ls_ms)


@pytest.mark.slow
def test_stage1_iterations_quick_run_is_well_formed(tmp_path):
    out = tmp_path / "stage1.json"
    payload = stage1_iterations.main(["--quick", "--budget", "0.05", "--out", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(payload))
    assert [row["pdhg_iters"] for row in payload["rows"]] == [250, 2000]
    for row in payload["rows"]:
        assert 0 <= row["worst_gap_smooth"] <= 1e-5  # the active set finishes smooth cases
        assert row["worst_gap_kink"] >= 0
        assert all(_positive(t) for t in row["weigh"].values())


def test_hlo_launch_counts_multiply_loops_by_their_trip_count():
    """A fori_loop of 50 steps counts its body's kernels 50 times; the body alone, a few."""

    def body(x):
        return jax.numpy.sin(x) @ x

    x = jax.numpy.eye(3)
    looped = _hlo.compiled_counts(lambda y: jax.lax.fori_loop(0, 50, lambda _, z: body(z), y), x)
    once = _hlo.compiled_counts(body, x)
    assert looped["while_loops"] == 1 and once["while_loops"] == 0
    assert 1 <= once["launches"] < 10 and looped["launches"] >= 50


def test_hlo_launch_counts_take_a_conditionals_costliest_and_cheapest_branch():
    """A cond between a 30-step loop and the identity: at least 30 launches on its costliest
    branch, none from it on its cheapest (the other instructions count in both)."""

    def heavy(y):
        return jax.lax.fori_loop(0, 30, lambda _, z: jax.numpy.sin(z) @ z, y)

    def step(x, flag):
        return jax.lax.cond(flag, heavy, lambda y: y, x) * 2.0

    counts = _hlo.compiled_counts(step, jax.numpy.eye(3), True)
    assert counts["launches"] - counts["fewest_launches"] >= 30
    assert counts["fewest_launches"] < 10


@pytest.mark.slow
def test_device_quick_run_is_well_formed(tmp_path):
    """``python -m benchmarks.device --quick``: every table filled, the exact stage 1 loop-free."""
    out = tmp_path / "device.json"
    payload = device.main(["--quick", "--budget", "0.01", "--out", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(payload))
    for table in ("stage1", "solve", "rrg_step", "mlp_step"):
        assert payload[table] and all(_positive(row) for row in payload[table])
        assert all(row["launches"] > 0 for row in payload[table])
    stage1 = {row["solver"]: row for row in payload["stage1"]}
    assert stage1["enumeration"]["while_loops"] == 0 < stage1["iterative"]["while_loops"]
    assert stage1["enumeration"]["gap"]["smooth"] <= 1e-5
    assert {row["method"] for row in payload["rrg_step"]} == set(device.STEP_METHODS)


def test_synced_weighted_sum_is_the_plain_sum():
    """The synced sum only orders the work: its update is the plain sum's, leaf by leaf."""
    rng = np.random.default_rng(3)
    jac = {
        "a": jnp.asarray(rng.standard_normal((2, 3, 4))),
        "b": jnp.asarray(rng.standard_normal((2, 5))),
    }
    plain, _ = train_step.weighted_sum((1.0, 4.0)).update(jac, optax.EmptyState())
    synced, _ = jax.jit(train_step.weighted_sum((1.0, 4.0), wait_for_all=True).update)(
        jac, optax.EmptyState()
    )
    for name, leaf in jac.items():
        expected = np.asarray(leaf[0]) + 4.0 * np.asarray(leaf[1])
        np.testing.assert_allclose(plain[name], expected, rtol=1e-6)
        np.testing.assert_allclose(synced[name], expected, rtol=1e-6)


def test_emulated_roundings_give_the_nearest_tf32_and_bf16_values():
    """bfloat16 against ml_dtypes' own conversion; TensorFloat-32 by its definition: 10 stored
    mantissa bits (the low 13 of float32's are zero), within half a unit of the last place."""
    rng = np.random.default_rng(5)
    x = (rng.standard_normal(4096) * 10.0 ** rng.uniform(-6, 6, 4096)).astype(np.float32)
    bf16 = np.asarray(product_precision.to_bf16(jnp.asarray(x)))
    np.testing.assert_array_equal(bf16, x.astype(ml_dtypes.bfloat16).astype(np.float32))
    tf32 = np.asarray(product_precision.to_tf32(jnp.asarray(x)))
    assert not np.any(tf32.view(np.uint32) & 0x1FFF)
    ulp = 2.0 ** (np.floor(np.log2(np.abs(x.astype(np.float64)))) - 10)
    assert np.all(np.abs(tf32.astype(np.float64) - x) <= ulp / 2)
    assert np.any(tf32 != x) and np.any(bf16 != x)


def test_rounded_products_spare_only_the_products_that_ask_for_float32():
    x = jnp.full((2, 2), 1.0 + 2.0**-12, jnp.float32)  # neither a bfloat16 nor a TF32 value
    with product_precision.rounded_products(product_precision.to_bf16):
        default = jax.jit(jnp.dot)(x, x)
        full = jax.jit(lambda a, b: jnp.dot(a, b, precision="highest"))(x, x)
    assert float(default[0, 0]) == 2.0
    assert float(full[0, 0]) == pytest.approx(2.0 * (1.0 + 2.0**-12) ** 2, rel=1e-7)


@pytest.mark.slow
def test_product_precision_quick_run_leaves_the_librarys_products_alone(tmp_path):
    """Under every emulated rounding the solver as shipped gives exactly the unrounded gaps;
    with its products left at the default, bfloat16 moves them."""
    out = tmp_path / "product_precision.json"
    payload = product_precision.main(["--quick", "--out", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(payload))
    rows = {(r["rounding"], r["products"]): (r["smooth"], r["kink"]) for r in payload["rows"]}
    exact = rows["none", "float32"]
    assert rows["none", "default"] == exact
    assert rows["tf32", "float32"] == rows["bf16", "float32"] == exact
    assert rows["bf16", "default"] != exact
