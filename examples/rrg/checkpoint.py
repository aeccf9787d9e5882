"""Orbax checkpoints of a whole training state (model, optimizer, counters), PRNG keys included.

Typed PRNG keys (``nnx.Rngs`` state) are stored as their raw ``uint32`` data and re-wrapped on
restore, so a resumed run draws the same dropout masks as an uninterrupted one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp


def _is_key(x: Any) -> bool:
    return isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def _to_saveable(tree: Any) -> Any:
    return jax.tree.map(lambda x: jax.random.key_data(x) if _is_key(x) else x, tree)


def save(path: str | Path, tree: Any) -> None:
    """Write ``tree`` (a pytree of arrays and scalars) to the directory ``path``, replacing it."""
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(Path(path).absolute(), _to_saveable(tree), force=True)
    checkpointer.wait_until_finished()


def restore(path: str | Path, like: Any) -> Any:
    """Read the checkpoint at ``path`` into the structure, shapes and dtypes of ``like``."""
    target = jax.tree.map(ocp.utils.to_shape_dtype_struct, _to_saveable(like))
    raw = ocp.StandardCheckpointer().restore(Path(path).absolute(), target)
    return jax.tree.map(
        lambda x, ref: (
            jax.random.wrap_key_data(x, impl=jax.random.key_impl(ref)) if _is_key(ref) else x
        ),
        raw,
        like,
    )
