"""CAGrad's two-objective toy problem: ``python -m examples.toy``."""

from examples.toy.demo import STARTS, main, pareto_set, run_demo, toy_losses

__all__ = ["STARTS", "main", "pareto_set", "run_demo", "toy_losses"]
