"""Weightings: maps from the K×K Gram matrix (or the task losses) to K combination coefficients."""

from camegrad_jax._came import CameState, came
from camegrad_jax.weightings._aligned_mtl import aligned_mtl
from camegrad_jax.weightings._imtl import imtl_g
from camegrad_jax.weightings._linear import linear, mean, sum
from camegrad_jax.weightings._loss_based import (
    DwaState,
    FamoState,
    UncertaintyState,
    dwa,
    famo,
    uncertainty,
)
from camegrad_jax.weightings._mgda import MgdaSolver, MgdaState, mgda
from camegrad_jax.weightings._random import RandomState, random

__all__ = [
    "CameState",
    "DwaState",
    "FamoState",
    "MgdaSolver",
    "MgdaState",
    "RandomState",
    "UncertaintyState",
    "aligned_mtl",
    "came",
    "dwa",
    "famo",
    "imtl_g",
    "linear",
    "mean",
    "mgda",
    "random",
    "sum",
    "uncertainty",
]
