"""camegrad_jax: conflict-averse, magnitude-enhanced multi-task gradients for JAX and Optax.

The data path is Jacobian → Gram → coefficients → combine::

    losses, jac = cg.value_and_jacobian(loss_fn)(params, batch)
    updates, opt_state = tx.update(jac, opt_state, params)   # tx = optax.chain(cg.came_grad(), ...)
"""

from camegrad_jax import weightings
from camegrad_jax._gram import combine, gramian
from camegrad_jax._jacobian import value_and_jacobian
from camegrad_jax._simplex import DualSolver
from camegrad_jax._transform import AggregateState, aggregate, came_grad, transformation
from camegrad_jax._weighting import Weighting

__version__ = "0.1.0"

__all__ = [
    "AggregateState",
    "DualSolver",
    "Weighting",
    "aggregate",
    "came_grad",
    "combine",
    "gramian",
    "transformation",
    "value_and_jacobian",
    "weightings",
]
