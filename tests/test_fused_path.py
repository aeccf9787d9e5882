"""The jitted aggregation reads each Jacobian leaf in place: no flattening, no copies, no host.

For every weighting, two programs are inspected:

* the jaxpr handed to XLA (sub-jaxprs of cond/while/scan included): nothing calls back to the
  host, no primitive transposes, concatenates, pads, gathers or copies an array as large as a
  Jacobian leaf (flattening the tree with ``ravel_pytree`` concatenates), a reshape of a leaf
  only merges or splits its trailing axes, and the Gram matrix takes one contraction per leaf
  (none for weightings that declare ``uses_gram=False``) and the combination one more;
* the optimised CPU HLO: no ``copy``, ``transpose``, ``concatenate`` or real ``reshape`` of a
  leaf-sized array survives (the trailing-axis merges compile to free ``bitcast`` instructions; a
  contraction over several trailing axes would compile to a transpose and a copy of the leaf).
"""

from __future__ import annotations

import re

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
PARAM_SIZE = min(leaf.size for leaf in jax.tree.leaves(PARAMS))  # a leaf of d = Jᵀc
MOVES = {"transpose", "concatenate", "copy", "copy_p", "pad", "gather", "rev", "sort"}
HLO_MOVES = {"copy", "transpose", "concatenate", "reshape", "pad", "gather", "reverse", "sort"}
HLO_INSTRUCTION = re.compile(r"= \w+\[([\d,]*)\]\{[^}]*\} ([\w-]+)\(")
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
    reshapes = [
        (eqn.invars[0].aval.shape, eqn.outvars[0].aval.shape)
        for eqn in eqns
        if eqn.primitive.name == "reshape" and size(eqn.invars[0]) >= LEAF_SIZE
    ]
    assert all(trailing_merge(*pair) for pair in reshapes), reshapes
    # One contraction per leaf gives all K(K+1)/2 products; a second one per leaf combines.
    top_level_dots = [e for e in closed.jaxpr.eqns if e.primitive.name == "dot_general"]
    leaf_dots = [e for e in top_level_dots if any(size(v) >= LEAF_SIZE for v in e.invars)]
    per_leaf = 2 if tx_uses_gram(name) else 1
    assert len(leaf_dots) == per_leaf * len(jax.tree.leaves(JAC))


@pytest.mark.parametrize("name", sorted(TRANSFORMS))
def test_entries_are_checked_for_nan_only_in_branches(name):
    """With a Gram matrix, a finite Gram matrix certifies J and a bound from it certifies
    d = Jᵀc, so no leaf-sized NaN/Inf check runs on every step: they sit in branches (the
    rescaled Gram matrix, a d near float32's end). Without one (mean, RLW) d's entries are
    checked at the top level, once per leaf."""
    tx = TRANSFORMS[name]()
    closed = jax.make_jaxpr(tx.update)(JAC, tx.init(PARAMS), PARAMS)
    top_level = [
        e
        for e in closed.jaxpr.eqns
        if e.primitive.name == "is_finite" and size(e.invars[0]) >= PARAM_SIZE
    ]
    assert len(top_level) == (0 if tx_uses_gram(name) else len(jax.tree.leaves(JAC)))
    in_branches = [
        e
        for e in all_eqns(closed.jaxpr)
        if e.primitive.name == "is_finite" and size(e.invars[0]) >= PARAM_SIZE
    ]
    assert len(in_branches) >= len(top_level)


def tx_uses_gram(name: str) -> bool:
    return name not in {"mean", "rlw"}


def trailing_merge(before: tuple[int, ...], after: tuple[int, ...]) -> bool:
    """Whether a reshape views (K, a, b, ...) as (K, a·b·...), or a row (a·b·...) as (a, b, ...)."""
    if len(before) > len(after):
        return after == (before[0], int(np.prod(before[1:])))
    return before == (int(np.prod(after)),) and len(after) > 1


@pytest.mark.parametrize("name", sorted(TRANSFORMS))
def test_compiled_update_copies_no_leaf(name):
    tx = TRANSFORMS[name]()
    hlo = jax.jit(tx.update).lower(JAC, tx.init(PARAMS), PARAMS).compile().as_text()
    moved = [
        (opcode, dims)
        for dims, opcode in HLO_INSTRUCTION.findall(hlo)
        if opcode in HLO_MOVES and np.prod([int(d) for d in dims.split(",") if d]) >= LEAF_SIZE
    ]
    assert not moved, f"leaf-sized copies in the compiled update: {moved}"


def test_the_inspection_catches_flattening():
    """A Gram matrix built through ravel_pytree is flagged by the same check."""

    def flattened_gram(jac):
        rows = jax.vmap(lambda row: jax.flatten_util.ravel_pytree(row)[0])(jac)
        return rows @ rows.T

    eqns = list(all_eqns(jax.make_jaxpr(flattened_gram)(JAC).jaxpr))
    assert any(
        e.primitive.name in MOVES and any(size(v) >= LEAF_SIZE for v in e.invars) for e in eqns
    )


def _materialised_leaf_copies(tx) -> int:
    """Leaf-sized arrays the entry computation writes in a fused step: the Jacobian of a small
    tanh network (``value_and_jacobian``) aggregated by ``tx``, its 64×64 kernel's leaf."""
    rng = np.random.default_rng(2)
    params = {
        "w1": jnp.asarray(rng.standard_normal((16, 64)), jnp.float32),
        "w2": jnp.asarray(rng.standard_normal((64, 64)), jnp.float32),
        "head": jnp.asarray(rng.standard_normal((2, 64)), jnp.float32),
    }
    x = jnp.asarray(rng.standard_normal((32, 16)), jnp.float32)

    def losses(p):
        h = jnp.tanh(jnp.tanh(x @ p["w1"]) @ p["w2"])
        return jnp.mean((h @ p["head"].T) ** 2, axis=0)

    jacobian = cg.value_and_jacobian(losses)
    hlo = jax.jit(lambda p, s: tx.update(jacobian(p)[1], s, p)).lower(params, tx.init(params))
    text = hlo.compile().as_text()
    entry = text[text.index("\nENTRY") :]
    leaf = re.compile(r"= f32\[(2,64,64|2,4096)\]\{[^}]*\} (?!parameter)")
    return sum(bool(leaf.search(line)) for line in entry.splitlines())


def test_fused_step_writes_the_jacobian_once():
    """Inside a train step CAME-Grad writes each Jacobian leaf no more often than the mean.

    The overflow-safe Gram branch (a cond) used to receive the leaves themselves, and XLA:CPU
    wrote a second, transposed copy of each for it (1.27× the Jacobian + sum step on the MLP of
    ``python -m benchmarks.device``, 1.05× without).
    """
    came = _materialised_leaf_copies(cg.came_grad(num_tasks=2))
    assert came <= _materialised_leaf_copies(cg.aggregate(cg.weightings.mean(), num_tasks=2))
