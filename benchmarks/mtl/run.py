"""The suite's command line: run the problems, write ``results.json``, ``summary.md`` and plots.

``python -m benchmarks.mtl [--quick] [--out outputs/benchmarks/mtl] [--seeds N]
[--problems multidigits zdt1 toy rrg] [--methods NAME ...]``
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax

from benchmarks.mtl import digits_run, methods, plots, report, rrg_run, toy_run, zdt_run

PROBLEMS = ("multidigits", "zdt1", "toy", "rrg")
#: ``--quick`` leaves RRG out unless it is asked for: it compiles a transformer per method.
QUICK_PROBLEMS = ("multidigits", "zdt1", "toy")


def _finite(obj: Any) -> Any:
    """The results with NaN/Inf replaced by None (JSON has no such numbers)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    return obj


def run_problem(
    name: str,
    *,
    quick: bool,
    seeds: Sequence[int],
    method_names: Sequence[str] | None,
    out: Path,
    log: Callable[[str], None],
) -> dict[str, Any]:
    """One problem's raw results (before :func:`report.summarise`)."""
    names = method_names or (methods.QUICK if quick else None)
    chosen = methods.select(names)
    if methods.BASELINE not in [m.name for m in chosen]:
        chosen.insert(0, methods.BY_NAME[methods.BASELINE])
    if name == "multidigits":
        return digits_run.run(
            chosen, seeds, digits_run.QUICK if quick else digits_run.DigitsConfig(), log=log
        )
    if name == "zdt1":
        return zdt_run.run(chosen, seeds, zdt_run.QUICK if quick else zdt_run.ZdtConfig(), log=log)
    if name == "toy":
        return toy_run.run(chosen, seeds, toy_run.QUICK if quick else toy_run.ToyConfig(), log=log)
    if name == "rrg":
        config = rrg_run.QUICK if quick else rrg_run.RrgConfig()
        if method_names:
            wanted = {methods.BASELINE, *method_names}
            chosen_rrg = tuple(n for n in rrg_run.OPTIMIZERS if n in wanted)
            config = dataclasses.replace(config, methods=chosen_rrg)
        return rrg_run.run(seeds, config, out, log=log)
    raise ValueError(f"unknown problem {name!r}; expected one of {PROBLEMS}")


def run_suite(
    out: str | Path = "outputs/benchmarks/mtl",
    *,
    quick: bool = False,
    num_seeds: int | None = None,
    problems: Sequence[str] | None = None,
    method_names: Sequence[str] | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run the suite and write its files into ``out``; returns what ``results.json`` holds."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    seeds = list(range(num_seeds if num_seeds is not None else (2 if quick else 5)))
    problems = list(problems or (QUICK_PROBLEMS if quick else PROBLEMS))
    started = time.perf_counter()
    results: dict[str, Any] = {}
    for name in problems:
        t0 = time.perf_counter()
        log(f"[{name}] seeds {seeds}")
        problem = run_problem(
            name, quick=quick, seeds=seeds, method_names=method_names, out=out, log=log
        )
        problem["seconds"] = time.perf_counter() - t0
        results[name] = report.summarise(problem)
        log(f"[{name}] done in {problem['seconds']:.0f}s; {report.came_position(problem)}")
    figures = _plot(results, out)
    total = time.perf_counter() - started
    meta = {
        "command": " ".join(["python -m benchmarks.mtl", *sys.argv[1:]]),
        "quick": quick,
        "seeds": seeds,
        "problems": problems,
        "total_seconds": total,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {jax.default_backend()}",
        "jax": jax.__version__,
        "figures": {k: str(v) for k, v in figures.items()},
        "delta_m": "LibMTL's Δm% against LS, paired per seed: (100/T) Σ_t (-1)^{s_t} "
        "(M_t - M_t^LS) / M_t^LS, s_t = 1 when lower is better",
    }
    payload = _finite({"meta": meta, "problems": results})
    (out / "results.json").write_text(json.dumps(payload, indent=1, ensure_ascii=False) + "\n")
    (out / "summary.md").write_text(summary_markdown(payload), encoding="utf-8")
    log(
        f"wrote {out / 'results.json'}, {out / 'summary.md'} and {len(figures)} figures "
        f"in {total:.0f}s"
    )
    return payload


def _plot(results: dict[str, Any], out: Path) -> dict[str, Path]:
    figures = {}
    for name, problem in results.items():
        figures[f"{name}_ranking"] = plots.ranking(problem, out / f"{name}_ranking.png")
    if "zdt1" in results:
        figures["zdt1_points"] = plots.zdt_points(results["zdt1"], out / "zdt1_points.png")
    for name in ("multidigits", "rrg"):
        if name in results:
            figures[f"{name}_tasks"] = plots.task_scatter(results[name], out / f"{name}_tasks.png")
    figures["wall_time"] = plots.wall_times(results, out / "wall_time.png")
    return figures


def summary_markdown(payload: dict[str, Any]) -> str:
    """``summary.md``: the command, the machine, then one ranked table per problem."""
    meta = payload["meta"]
    lines = [
        "# Multi-task benchmark suite",
        "",
        f"`{meta['command']}` — seeds {meta['seeds']}, {meta['machine']}, "
        f"{meta['total_seconds']:.0f} s in total.",
        "",
        f"Δm%: {meta['delta_m']}. Times: wall seconds per method for all seeds, "
        "compilation included.",
    ]
    for problem in payload["problems"].values():
        lines += ["", f"## {problem['title']}", "", report.markdown(problem), ""]
        lines.append(report.came_position(problem))
        cfg = problem["meta"].get("config")
        if cfg is not None:
            lines += [
                "",
                f"Settings: `{json.dumps(cfg, ensure_ascii=False)}`; "
                f"optimizer {problem['meta'].get('optimizer')}; seeds "
                f"{problem['meta'].get('seeds')}.",
            ]
    lines += ["", "Figures: " + ", ".join(f"`{Path(p).name}`" for p in meta["figures"].values())]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.mtl", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="CI size (about 2 minutes)")
    parser.add_argument("--out", default="outputs/benchmarks/mtl", help="output folder")
    parser.add_argument("--seeds", type=int, default=None, help="seeds 0..N-1 (5; quick: 2)")
    parser.add_argument(
        "--problems",
        nargs="+",
        choices=PROBLEMS,
        default=None,
        help="a subset of the problems (default all; --quick: all but rrg)",
    )
    parser.add_argument(
        "--methods",
        nargs="+",
        choices=[m.name for m in methods.METHODS],
        default=None,
        help="a subset of the methods (LS is always added)",
    )
    args = parser.parse_args(argv)
    if args.seeds is not None and args.seeds < 1:
        parser.error("--seeds must be >= 1")
    return run_suite(
        args.out,
        quick=args.quick,
        num_seeds=args.seeds,
        problems=args.problems,
        method_names=args.methods,
    )
