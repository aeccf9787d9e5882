"""camegrad_jax: conflict-averse, magnitude-enhanced multi-task gradients for JAX and Optax.

The data path is Jacobian → Gram → coefficients → combine::

    losses, jac = cg.value_and_jacobian(loss_fn)(params, batch)
    updates, opt_state = tx.update(jac, opt_state, params)   # tx = optax.chain(cg.came_grad(), ...)
"""

from camegrad_jax import weightings
from camegrad_jax._accumulate import AccumulateState, accumulate, apply_if_finite
from camegrad_jax._dynamics import GradientDynamics, gradient_dynamics
from camegrad_jax._gram import combine, gramian
from camegrad_jax._jacobian import value_and_jacobian
from camegrad_jax._logging import diagnostic_arrays, diagnostics
from camegrad_jax._representation import (
    RepresentationJacobian,
    value_and_representation_jacobian,
)
from camegrad_jax._solvers import DualSolver, MgdaSolver, NewtonSolver, QPSolver
from camegrad_jax._transform import AggregateState, aggregate, came_grad, transformation
from camegrad_jax._weighting import Weighting

__version__ = "0.1.0"

# Ready transformations for the baseline weightings: cg.<name>(..., num_tasks=K, groups=None).
aligned_mtl = transformation(weightings.aligned_mtl)
cagrad = transformation(weightings.cagrad)
config = transformation(weightings.config)
dualproj = transformation(weightings.dualproj)
dwa = transformation(weightings.dwa)
fairgrad = transformation(weightings.fairgrad)
famo = transformation(weightings.famo)
gradvac = transformation(weightings.gradvac)
imtl_g = transformation(weightings.imtl_g)
mgda = transformation(weightings.mgda)
nash_mtl = transformation(weightings.nash_mtl)
pcgrad = transformation(weightings.pcgrad)
rlw = transformation(weightings.random)
uncertainty = transformation(weightings.uncertainty)
upgrad = transformation(weightings.upgrad)

__all__ = [
    "AccumulateState",
    "AggregateState",
    "DualSolver",
    "GradientDynamics",
    "MgdaSolver",
    "NewtonSolver",
    "QPSolver",
    "RepresentationJacobian",
    "Weighting",
    "accumulate",
    "aggregate",
    "aligned_mtl",
    "apply_if_finite",
    "cagrad",
    "came_grad",
    "combine",
    "config",
    "diagnostic_arrays",
    "diagnostics",
    "dualproj",
    "dwa",
    "fairgrad",
    "famo",
    "gradient_dynamics",
    "gradvac",
    "gramian",
    "imtl_g",
    "mgda",
    "nash_mtl",
    "pcgrad",
    "rlw",
    "transformation",
    "uncertainty",
    "upgrad",
    "value_and_jacobian",
    "value_and_representation_jacobian",
    "weightings",
]
