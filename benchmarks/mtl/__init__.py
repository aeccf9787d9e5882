"""Multi-task benchmark suite: MultiDigits, ZDT1, CAGrad's toy and the synthetic RRG task.

Every weighting of ``camegrad_jax`` and CAME-Grad's stage ablations are trained on each problem
over several seeds; ``python -m benchmarks.mtl [--quick]`` writes ``results.json``,
``summary.md`` and PNG figures (see :mod:`benchmarks.mtl.run`).
"""
