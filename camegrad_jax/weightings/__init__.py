"""Weightings: maps from the K×K Gram matrix to K combination coefficients."""

from camegrad_jax._came import CameState, came
from camegrad_jax.weightings._linear import linear, mean, sum
from camegrad_jax.weightings._loss_based import (
    DwaState,
    FamoState,
    UncertaintyState,
    dwa,
    famo,
    uncertainty,
)

__all__ = [
    "CameState",
    "DwaState",
    "FamoState",
    "UncertaintyState",
    "came",
    "dwa",
    "famo",
    "linear",
    "mean",
    "sum",
    "uncertainty",
]
