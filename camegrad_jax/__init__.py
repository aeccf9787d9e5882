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
from camegrad_jax._logging import diagnostic_arrays, diagnostics, flatten_diagnostics
from camegrad_jax._representation import (
    RepresentationJacobian,
    value_and_representation_jacobian,
)
from camegrad_jax._solvers import DualSolver, MgdaSolver, NewtonSolver, QPSolver
from camegrad_jax._transform import AggregateState, aggregate, transformation
from camegrad_jax._transformations import (
    aligned_mtl,
    cagrad,
    came_grad,
    config,
    dualproj,
    dwa,
    fairgrad,
    famo,
    gradvac,
    imtl_g,
    mgda,
    nash_mtl,
    pcgrad,
    rlw,
    uncertainty,
    upgrad,
)
from camegrad_jax._weighting import Weighting

__version__ = "0.1.0"

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
    "flatten_diagnostics",
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
