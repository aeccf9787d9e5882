r"""Shared-representation mode (MGDA-UB, LibMTL's ``rep_grad``): Gram from the shared features.

A multi-task model is usually an encoder shared by every task and small task heads,

$$
z = f_\phi(x), \qquad L_k = h_k(\psi, z), \qquad \theta = (\phi, \psi).
$$

The full Jacobian needs K backward passes through the encoder. In shared-representation mode
the Gram matrix is built from the gradients of the losses with respect to the features,

$$
Z_k = \frac{\partial L_k}{\partial z}, \qquad G_z = Z Z^\top ,
$$

which costs K backward passes through the heads only. A weighting turns $G_z$ into
coefficients $c$, and **one** backward pass of $\sum_k c_k L_k$ through the whole model gives
the update $d = J_\theta^\top c$, the exact gradient of the weighted loss. A step costs about
one forward pass, one backward pass and K passes through the heads.

It is an approximation: $G_z$ is not the Gram matrix $G_\theta = J_\theta J_\theta^\top$ of the
parameters. By the chain rule the encoder's rows are $\nabla_\phi L_k = (\partial z /
\partial\phi)^\top Z_k$, so $G_\theta$ weighs $Z$ with the encoder's metric
$(\partial z/\partial\phi)(\partial z/\partial\phi)^\top$, which $G_z$ replaces by the identity,
and $G_z$ leaves out the heads' parameters. Sener & Koltun (2018) show that for MGDA the
update still decreases an upper bound of the objective (hence "MGDA-UB"); for other
weightings it is a heuristic that works well in practice. Both Gram matrices agree when the
encoder is the identity and the heads have no parameters of their own (a test checks this).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from camegrad_jax._jacobian import losses_and_aux

Array = jax.Array


class RepresentationJacobian(NamedTuple):
    """What [`value_and_representation_jacobian`][camegrad_jax.value_and_representation_jacobian]
    hands to an aggregation in place of the stacked Jacobian.

    Attributes:
      features: $\\partial L_k / \\partial z$ stacked over the tasks: the pytree of the
        features ``z`` with a leading axis of size K on every leaf. Its Gram matrix is $G_z$.
      backward: ``backward(c)`` returns $\\nabla_\\theta \\sum_k c_k L_k$, shaped like the
        parameters, from one backward pass (a ``jax.tree_util.Partial``, so the whole tuple
        can cross a ``jax.jit`` boundary).
    """

    features: Any
    backward: jax.tree_util.Partial


def _weighted_backward(
    heads_pullback: Any, encoder_pullback: Any, losses: Array, coeffs: Array
) -> Any:
    """$\\nabla_\\theta \\sum_k c_k L_k$: the heads' pullback of $c$, then the encoder's.

    ``losses`` is only read for its dtype, which the cotangent $c$ must have.
    """
    head_grads, feature_cotangent = heads_pullback(coeffs.astype(losses.dtype))
    (encoder_grads,) = encoder_pullback(feature_cotangent)
    return jax.tree_util.tree_map(jnp.add, head_grads, encoder_grads)


def representation_jacobian(
    encoder_fn: Callable[[Any], tuple[Any, Any]],
    heads_fn: Callable[[Any, Any, Any], tuple[Array, Any]],
    params: Any,
) -> tuple[Array, Any, RepresentationJacobian]:
    """The shared machinery of the plain-JAX and the NNX entry points.

    ``encoder_fn(params) -> (z, encoder_aux)`` and
    ``heads_fn(params, z, encoder_aux) -> (losses, aux)``; returns ``(losses, aux, rep)``.
    """
    features, encoder_pullback, encoder_aux = jax.vjp(encoder_fn, params, has_aux=True)

    def heads_of(p: Any, z: Any) -> tuple[Array, Any]:
        return heads_fn(p, z, encoder_aux)

    losses, heads_pullback, aux = jax.vjp(heads_of, params, features, has_aux=True)
    shape = jnp.shape(losses)
    if len(shape) != 1:
        raise ValueError(f"The heads must return a 1-D vector of K task losses; got shape {shape}.")
    basis = jnp.eye(shape[0], dtype=jnp.result_type(losses))
    # Row k is dL_k/dz; the heads' parameter cotangents computed alongside are never used and
    # the compiler drops them.
    _, feature_rows = jax.vmap(heads_pullback)(basis)
    backward = jax.tree_util.Partial(_weighted_backward, heads_pullback, encoder_pullback, losses)
    return losses, aux, RepresentationJacobian(feature_rows, backward)


def value_and_representation_jacobian(
    encoder: Callable[..., Any], heads: Callable[..., Any], has_aux: bool = False
) -> Callable[..., Any]:
    r"""The task losses and their shared-representation Jacobian, for
    [`aggregate`][camegrad_jax.aggregate] and every transformation built on it.

    ``encoder(params, *args, **kwargs) -> z`` computes the shared features (any pytree) and
    ``heads(params, z, *args, **kwargs) -> losses`` the K task losses from them; both receive
    the whole ``params``. The result replaces the stacked Jacobian in the same optax chain::

        losses, rep = cg.value_and_representation_jacobian(encoder, heads)(params, batch)
        updates, opt_state = tx.update(rep, opt_state, params)   # tx = chain(came_grad, adam)

    The aggregation builds $G_z$ from $\partial L_k/\partial z$, asks the weighting for $c$ and
    returns $\nabla_\theta \sum_k c_k L_k$ from one backward pass (see the module notes for when
    $G_z$ differs from the parameters' Gram matrix). Under ``jax.jit`` with a batch-sharded
    input it is the global batch's, as for the full Jacobian; it has no ``shard_map`` mode and
    cannot be accumulated with [`accumulate`][camegrad_jax.accumulate].

    Args:
      encoder: ``encoder(params, *args) -> z``.
      heads: ``heads(params, z, *args) -> losses`` with ``losses`` of shape ``(K,)``, or
        ``-> (losses, aux)`` when ``has_aux``.
      has_aux: whether ``heads`` also returns auxiliary data.

    Returns:
      A function ``(params, *args, **kwargs) -> (losses, rep)`` (``((losses, aux), rep)`` with
      ``has_aux``), ``rep`` a [`RepresentationJacobian`][camegrad_jax.RepresentationJacobian].

    Examples:
      >>> import jax, jax.numpy as jnp, optax, camegrad_jax as cg
      >>> encoder = lambda p, x: jnp.tanh(x @ p["shared"])
      >>> heads = lambda p, z, x: jnp.stack([jnp.mean(z @ p["a"]), jnp.mean((z @ p["b"]) ** 2)])
      >>> params = {"shared": jnp.ones((3, 4)), "a": jnp.ones(4), "b": -jnp.ones(4)}
      >>> value_and_rep = cg.value_and_representation_jacobian(encoder, heads)
      >>> losses, rep = value_and_rep(params, jnp.ones((8, 3)))
      >>> rep.features.shape  # (K, batch, features)
      (2, 8, 4)
      >>> tx = optax.chain(cg.came_grad(num_tasks=2), optax.sgd(0.1))
      >>> updates, _ = tx.update(rep, tx.init(params), params)
      >>> jax.tree.map(jnp.shape, updates)
      {'a': (4,), 'b': (4,), 'shared': (3, 4)}
    """

    def wrapped(params: Any, *args: Any, **kwargs: Any) -> Any:
        def encoder_fn(p: Any) -> tuple[Any, None]:
            return encoder(p, *args, **kwargs), None

        def heads_fn(p: Any, z: Any, _: None) -> tuple[Array, Any]:
            return losses_and_aux(heads(p, z, *args, **kwargs), has_aux)

        losses, aux, rep = representation_jacobian(encoder_fn, heads_fn, params)
        return ((losses, aux), rep) if has_aux else (losses, rep)

    return wrapped
