"""The K×K solvers behind the weightings, one module per problem.

Each problem has a solver object of static settings (a NamedTuple of counts, validated when a
weighting is built) and a solve that returns its solution and a residual or gap, which the
weighting's state keeps as a diagnostic. Small K is solved exactly and loop-free by support
enumeration (`_enumeration`), larger K by fixed iteration counts.
"""

from camegrad_jax._solvers._conflict_dual import DualSolver
from camegrad_jax._solvers._min_norm import MgdaSolver
from camegrad_jax._solvers._newton import NewtonSolver
from camegrad_jax._solvers._nonneg_qp import QPSolver

__all__ = ["DualSolver", "MgdaSolver", "NewtonSolver", "QPSolver"]
