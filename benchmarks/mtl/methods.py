r"""The compared methods: every Gram weighting, the loss-based ones and CAME-Grad's ablations.

Each method is an Optax transformation placed before the problem's optimiser. LS is the mean
of the task losses ($\lambda = 1/K$); CAME-Grad gets the same $\lambda$ with its documented
defaults $\rho = 0.5$, $\kappa = 1.5$, $\nu = 0.2$, so that ``rho=0, kappa=1`` is exactly LS.
The ablations switch one stage off each (``rho=0``: no rectification, ``kappa=None``: no energy
injection, ``nu=0``: no fusion); "rectify only" keeps stage 1 alone (CAGrad without its
rescaling). Every other weighting runs with its documented defaults.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import jax.numpy as jnp
import optax

import camegrad_jax as cg


@dataclasses.dataclass(frozen=True)
class Method:
    """A method: its display name, a factory ``num_tasks -> transformation`` and its family.

    ``needs_losses`` marks the loss-based weightings, whose ``update`` takes ``losses=``.
    """

    name: str
    make: Callable[[int], optax.GradientTransformationExtraArgs]
    family: str
    needs_losses: bool = False


def _gram(factory: str) -> Callable[[int], Any]:
    return lambda k: cg.aggregate(getattr(cg.weightings, factory)(), num_tasks=k)


def _came(**kwargs: Any) -> Callable[[int], Any]:
    return lambda k: cg.came_grad(task_weights=jnp.full((k,), 1.0 / k), **kwargs)


#: Name of the baseline every Δm% is measured against.
BASELINE = "LS"

#: Every method, in display order (baseline first, CAME-Grad and its ablations last).
METHODS: tuple[Method, ...] = (
    Method("LS", _gram("mean"), "linear"),
    Method("RLW", _gram("rlw"), "linear"),
    Method("MGDA", _gram("mgda"), "gram"),
    Method("PCGrad", _gram("pcgrad"), "gram"),
    Method("GradVac", _gram("gradvac"), "gram"),
    Method("IMTL-G", _gram("imtl_g"), "gram"),
    Method("Aligned-MTL", _gram("aligned_mtl"), "gram"),
    Method("CAGrad", _gram("cagrad"), "gram"),
    Method("Nash-MTL", _gram("nash_mtl"), "gram"),
    Method("UPGrad", _gram("upgrad"), "gram"),
    Method("DualProj", _gram("dualproj"), "gram"),
    Method("ConFIG", _gram("config"), "gram"),
    Method("FairGrad", _gram("fairgrad"), "gram"),
    Method("DWA", _gram("dwa"), "loss", needs_losses=True),
    Method("Uncertainty", _gram("uncertainty"), "loss", needs_losses=True),
    Method("FAMO", _gram("famo"), "loss", needs_losses=True),
    Method("CAME-Grad", _came(), "came"),
    Method("CAME −rectify (ρ=0)", _came(rho=0.0), "came"),
    Method("CAME −energy (κ=None)", _came(kappa=None), "came"),
    Method("CAME −fusion (ν=0)", _came(nu=0.0), "came"),
    Method("CAME rectify only", _came(kappa=None, nu=0.0), "came"),
)
BY_NAME = {m.name: m for m in METHODS}

#: The ``--quick`` subset: the baseline, CAME-Grad and two others.
QUICK = ("LS", "MGDA", "UPGrad", "CAME-Grad")


def select(names: Sequence[str] | None, *, losses_allowed: bool = True) -> list[Method]:
    """The methods called ``names`` (all when None), minus the loss-based ones if not allowed."""
    chosen = list(METHODS) if names is None else [BY_NAME[n] for n in names]
    return [m for m in chosen if losses_allowed or not m.needs_losses]


def update_args(method: Method, losses: Any) -> dict[str, Any]:
    """The extra arguments of ``tx.update`` for this method (the losses when it needs them)."""
    return {"losses": losses} if method.needs_losses else {}
