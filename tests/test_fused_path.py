"""The jitted aggregation reads each Jacobian leaf in place: no flattening, no copies, no host.

The program handed to XLA is inspected (the jaxpr, sub-jaxprs of cond/while/scan included):
for every weighting, no primitive reshapes, transposes, concatenates or copies an array as large
as a Jacobian leaf (flattening the tree with ``ravel_pytree`` would do all of these), the Gram
matrix takes one contraction per leaf, and nothing calls back to the host.
"""

from __future__ import annotations

import jax
import jax.extend
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import pytest

import camegrad_jax as cg

K = 3
# Leaf sizes no K×K intermediate can have, so any eqn touching this many elements touches a leaf.
JAC = {
    "kernel": jnp.asarray(np.random.default_rng(0).standard_normal((K, 37, 53)), jnp.float32),
    "bias": jnp.asarray(np.random.default_rng(1).standard_normal((K, 41)), jnp.float32),
}
PARAMS = jax.tree.map(lambda leaf: leaf[0], JAC)
LEAF_SIZE = min(leaf.size for leaf in jax.tree.leaves(JAC))
MOVES = {"reshape", "transpose", "concatenate", "copy", "copy_p", "pad", "gather", "rev", "sort"}
CALLBACKS = {"pure_callback", "io_callback", "debug_callback", "callback"}
TRANSFORMS = {
    "came": lambda: cg.came_grad(num_tasks=K),
    "mean": lambda: cg.aggregate(cg.weightings.mean(), num_tasks=K),
    **{
        name: (lambda name=name: getattr(cg, name)(num_tasks=K))
        for name in (
            "aligned_mtl",
            "cagrad",
            "config",
            "dualproj",
            "fairgrad",
            "gradvac",
            "imtl_g",
            "mgda",
            "nash_mtl",
            "pcgrad",
            "rlw",
            "upgrad",
        )
    },
}


def all_eqns(jaxpr):
    for eqn in jaxpr.eqns:
        yield eqn
        for sub in jax.extend.core.jaxprs_in_params(eqn.params):
            yield from all_eqns(sub)


def size(var) -> int:
    return int(np.prod(getattr(var.aval, "shape", ()), dtype=np.int64))


@pytest.mark.parametrize("name", sorted(TRANSFORMS))
def test_update_moves_no_leaf_and_calls_no_host(name):
    tx = TRANSFORMS[name]()
    closed = jax.make_jaxpr(tx.update)(JAC, tx.init(PARAMS), PARAMS)
    eqns = list(all_eqns(closed.jaxpr))
    names = {eqn.primitive.name for eqn in eqns}
    assert not names & CALLBACKS, f"host callbacks in the update: {names & CALLBACKS}"
    moved = [
        eqn.primitive.name
        for eqn in eqns
        if eqn.primitive.name in MOVES
        and any(size(v) >= LEAF_SIZE for v in (*eqn.invars, *eqn.outvars))
    ]
    assert not moved, f"leaf-sized data movement in the update: {moved}"
    # One contraction per leaf gives all K(K+1)/2 products; a second one per leaf combines.
    top_level_dots = [e for e in closed.jaxpr.eqns if e.primitive.name == "dot_general"]
    leaf_dots = [e for e in top_level_dots if any(size(v) >= LEAF_SIZE for v in e.invars)]
    assert len(leaf_dots) == 2 * len(jax.tree.leaves(JAC))


def test_the_inspection_catches_flattening():
    """A Gram matrix built through ravel_pytree is flagged by the same check."""

    def flattened_gram(jac):
        rows = jax.vmap(lambda row: jax.flatten_util.ravel_pytree(row)[0])(jac)
        return rows @ rows.T

    eqns = list(all_eqns(jax.make_jaxpr(flattened_gram)(JAC).jaxpr))
    assert any(
        e.primitive.name in MOVES and any(size(v) >= LEAF_SIZE for v in e.invars) for e in eqns
    )
