"""Fast checks of the CAGrad toy demo in ``examples/toy`` (a few steps, no full run)."""

from __future__ import annotations

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from examples.toy import demo


def _reference_losses(x1: float, x2: float) -> tuple[float, float]:
    """The toy's two losses written out directly from the formulas, in float64 numpy."""
    floor = 5e-6
    u1 = np.log(max(abs(0.5 * (-x1 - 7.0) - np.tanh(-x2)), floor)) + 6.0
    u2 = np.log(max(abs(0.5 * (-x1 + 3.0) + np.tanh(-x2) + 2.0), floor)) + 6.0
    c_up = max(np.tanh(x2 * 0.5), 0.0)
    q1 = ((-x1 + 7.0) ** 2 + 0.1 * (-x2 - 8.0) ** 2) / 10.0 - 20.0
    q2 = ((-x1 - 7.0) ** 2 + 0.1 * (-x2 - 8.0) ** 2) / 10.0 - 20.0
    c_low = max(np.tanh(-x2 * 0.5), 0.0)
    return u1 * c_up + q1 * c_low, u2 * c_up + q2 * c_low


POINTS = [
    (-8.5, 7.5),
    (-8.5, -5.0),
    (9.0, 9.0),
    (0.0, -8.3552),
    (7.0, -8.3552),
    (-3.0, 2.0),
    (4.2, 0.7),
    (1.5, -0.3),
    (-10.0, 10.0),
    (10.0, -10.0),
]


@pytest.mark.parametrize("point", POINTS)
def test_toy_losses_match_numpy_formulas(point):
    got = np.asarray(demo.toy_losses(jnp.asarray(point, jnp.float32)), np.float64)
    want = np.asarray(_reference_losses(*point))
    assert got.shape == (2,)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_pareto_set_is_pareto_stationary():
    curve = demo.pareto_set(201)
    assert curve.shape == (201, 2)
    # The reference plot draws the set as the segment x2 = -8.3552: the exact curve passes through
    # it at x1 = 0 and dips below it (by at most 0.08) towards the two task minimisers at x1 = ±7.
    np.testing.assert_allclose(curve[100], [0.0, demo.REFERENCE_PARETO_X2], atol=1e-3)
    assert np.all(curve[:, 1] <= demo.REFERENCE_PARETO_X2 + 1e-3)
    assert np.all(curve[:, 1] > demo.REFERENCE_PARETO_X2 - 0.1)
    np.testing.assert_allclose(curve[[0, -1], 0], [-7.0, 7.0])
    inner = curve[5:-5]  # at the two ends one gradient vanishes and the cosine is undefined
    cos = demo.gradient_cosine(inner)
    assert np.all(cos < -0.999), cos.max()
    assert demo.distance_to_set(curve[::7], curve).max() < 1e-9
    assert demo.distance_to_set(np.array([[0.0, -5.0]]), curve)[0] > 3.0


def test_masked_chunks_match_a_single_chunk():
    import camegrad_jax as cg

    starts = np.asarray(demo.STARTS)
    ls = cg.aggregate(cg.weightings.mean(), num_tasks=2)
    a = demo.run_method("ls", ls, starts, 7, chunk=3, progress=False)  # 3 + 3 + (1 of 3)
    b = demo.run_method("ls", ls, starts, 7, chunk=7, progress=False)
    assert a["traj"].shape == (8, 3, 2)
    np.testing.assert_allclose(a["traj"], b["traj"], rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(a["traj"][0], starts.astype(np.float32))


@pytest.mark.slow
def test_demo_writes_png_and_json(tmp_path):
    summary = demo.run_demo(tmp_path / "toy", steps=12, chunk=5, progress=False, verbose=False)
    png = tmp_path / "toy" / "toy_trajectories.png"
    js = tmp_path / "toy" / "toy_results.json"
    assert png.is_file() and png.stat().st_size > 10_000
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert js.is_file()
    data = json.loads(js.read_text(encoding="utf-8"))
    assert data["steps"] == 12
    rows = data["rows"]
    assert len(rows) == 3 * len(demo.STARTS)
    assert {r["method"] for r in rows} == set(demo.default_methods())
    for r in rows:
        for key in ("final_f1", "final_f2", "dist_to_pareto"):
            assert r[key] is not None and math.isfinite(r[key]), (r["method"], key, r[key])
        assert all(v is not None and math.isfinite(v) for v in r["final_x"])
        assert isinstance(r["reached_pareto"], bool)
    assert summary["rows"] == rows


def test_cli_quick_parses(monkeypatch):
    seen = {}

    def fake_run_demo(out, steps, **kwargs):
        seen.update(out=out, steps=steps, seed=kwargs["seed"])

    monkeypatch.setattr(demo, "run_demo", fake_run_demo)
    demo.main(["--quick", "--out", "somewhere", "--seed", "3"])
    assert seen == {"out": "somewhere", "steps": 2000, "seed": 3}


def test_jacobian_of_toy_is_finite_along_the_pareto_set():
    jac = jax.vmap(jax.jacrev(demo.toy_losses))(jnp.asarray(demo.pareto_set(51), jnp.float32))
    assert jac.shape == (51, 2, 2)
    assert bool(jnp.all(jnp.isfinite(jac)))


def test_all_methods_cover_every_gram_weighting(monkeypatch):
    """``--methods all`` runs every Gram weighting; only the documented exclusions are missing."""
    import camegrad_jax as cg

    weightings = {n for n in cg.weightings.__all__ if n[0].islower()}
    excluded = {"summed", "linear", "famo", "dwa", "uncertainty"}  # see all_methods' docstring
    covered = set(demo.GRAM_WEIGHTINGS.values()) | {"came"}
    assert covered == weightings - excluded
    methods = demo.all_methods()
    assert next(iter(methods)) == "LS (mean)" and list(methods)[-1] == "CAME-Grad"
    seen = {}

    def fake_run_demo(out, steps, **kwargs):
        seen.update(methods=list(kwargs["methods"]))

    monkeypatch.setattr(demo, "run_demo", fake_run_demo)
    demo.main(["--quick", "--methods", "all"])
    assert seen["methods"] == list(methods)
