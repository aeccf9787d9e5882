"""The two RRG task losses and the optimizers that combine them (LS, CAME-Grad, any weighting).

Task 0 is the report's language-model loss, task 1 the 14-observation classification loss:

$$
L_{lm} = \\frac{1}{\\sum m}\\sum_{b,t} m_{bt}\\,\\mathrm{CE}(z_{bt}, y_{b,t+1}), \\qquad
L_{cls} = \\frac{1}{14B}\\sum_{b,o}\\mathrm{CE}(c_{bo}, k_{bo}),
$$

with $m$ masking ``<pad>`` targets. ``ls`` minimises $\\lambda^\\top L$ with one backward pass
(the authors' baseline, ``loss_lm + 4·loss_cls``); every other optimizer gets the stacked
Jacobian of $L$ and aggregates it with a camegrad_jax transformation before AdamW.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import optax

import camegrad_jax as cg
from examples.rrg.observations import PAD_ID

TASKS = ("lm", "cls")

#: CAME-Grad and its ablations: name -> (rectify, energy injection, fusion) switches.
CAME_VARIANTS: Mapping[str, tuple[bool, bool, bool]] = {
    "came": (True, True, True),
    "came-rectify": (True, False, False),
    "came-rectify-energy": (True, True, False),
}
#: Gram weightings usable as ``--optimizer`` besides ``ls`` and the CAME variants.
WEIGHTINGS = (
    "mean",
    "mgda",
    "pcgrad",
    "gradvac",
    "cagrad",
    "nash_mtl",
    "imtl_g",
    "aligned_mtl",
    "upgrad",
    "dualproj",
    "config",
    "fairgrad",
    "random",
)
OPTIMIZERS = ("ls", *CAME_VARIANTS, *WEIGHTINGS)


def example_losses(
    model: Any, batch: Mapping[str, jax.Array]
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """Per study: summed token cross-entropy, target token count, mean classification
    cross-entropy over the 14 observations (all ``(B,)``), and the classification logits."""
    return losses_of_logits(*model(batch["images"], batch["tokens"][:, :-1]), batch)


def losses_of_logits(
    lm_logits: jax.Array, cls_logits: jax.Array, batch: Mapping[str, jax.Array]
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """:func:`example_losses` from the model's outputs."""
    targets = batch["tokens"][:, 1:]
    mask = (targets != PAD_ID).astype(jnp.float32)
    token_ce = optax.softmax_cross_entropy_with_integer_labels(lm_logits, targets)
    cls_ce = optax.softmax_cross_entropy_with_integer_labels(cls_logits, batch["labels"])
    return jnp.sum(token_ce * mask, 1), jnp.sum(mask, 1), jnp.mean(cls_ce, 1), cls_logits


def task_losses(model: Any, batch: Mapping[str, jax.Array]) -> tuple[jax.Array, dict[str, Any]]:
    """``(L_lm, L_cls)`` of a batch (teacher forcing), and the classification logits as aux."""
    return _mean_losses(*example_losses(model, batch))


def feature_losses(
    model: Any, feats: jax.Array, batch: Mapping[str, jax.Array]
) -> tuple[jax.Array, dict[str, Any]]:
    """:func:`task_losses` from the shared features ``model.features(images)``: the heads of
    the shared-representation mode (classification head and report decoder)."""
    visual, cls_logits = model.read_features(feats)
    lm_logits = model.decoder(visual, batch["tokens"][:, :-1])
    return _mean_losses(*losses_of_logits(lm_logits, cls_logits, batch))


def _mean_losses(
    lm_sum: jax.Array, count: jax.Array, cls: jax.Array, cls_logits: jax.Array
) -> tuple[jax.Array, dict[str, Any]]:
    lm = jnp.sum(lm_sum) / jnp.maximum(jnp.sum(count), 1.0)
    return jnp.stack([lm, jnp.mean(cls)]), {"cls_logits": cls_logits}


def aggregator(
    name: str,
    task_weights: Sequence[float],
    *,
    rho: float = 0.5,
    kappa: float | None = 1.5,
    nu: float = 0.2,
) -> optax.GradientTransformationExtraArgs:
    """The Jacobian-aggregating transformation of ``--optimizer name`` (not ``ls``).

    CAME variants use ``task_weights`` as $\\lambda$; ``rectify`` turns energy injection
    (``kappa=None``) and fusion (``nu=0``) off, ``rectify-energy`` fusion only. The other
    weightings run with their documented defaults (they have no task weights).
    """
    if name in CAME_VARIANTS:
        _, energy, fusion = CAME_VARIANTS[name]
        return cg.came_grad(
            task_weights=jnp.asarray(task_weights, jnp.float32),
            rho=rho,
            kappa=kappa if energy else None,
            nu=nu if fusion else 0.0,
        )
    if name in WEIGHTINGS:
        return cg.aggregate(getattr(cg.weightings, name)(), num_tasks=len(TASKS))
    raise ValueError(f"`optimizer` must be one of {OPTIMIZERS}; got {name!r}.")


def scalarised(task_weights: Sequence[float]) -> Callable[..., Any]:
    """``ls``'s objective $\\lambda^\\top L$ (one backward pass), with the task losses as aux."""
    weights = jnp.asarray(task_weights, jnp.float32)

    def loss(model: Any, batch: Mapping[str, jax.Array]) -> tuple[jax.Array, jax.Array]:
        losses, _ = task_losses(model, batch)
        return weights @ losses, losses

    return loss
