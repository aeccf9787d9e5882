"""Weightings: maps from the K×K Gram matrix (or the task losses) to K combination coefficients."""

from camegrad_jax._solvers import DualSolver, MgdaSolver, NewtonSolver, QPSolver
from camegrad_jax.weightings._aligned_mtl import aligned_mtl
from camegrad_jax.weightings._cagrad import CAGradState, cagrad
from camegrad_jax.weightings._came import CameState, came
from camegrad_jax.weightings._config import config
from camegrad_jax.weightings._fairgrad import FairGradState, fairgrad
from camegrad_jax.weightings._gradvac import GradVacState, gradvac
from camegrad_jax.weightings._imtl import imtl_g
from camegrad_jax.weightings._linear import linear, mean, summed
from camegrad_jax.weightings._loss_based import (
    DwaState,
    FamoState,
    UncertaintyState,
    dwa,
    famo,
    uncertainty,
)
from camegrad_jax.weightings._mgda import MgdaState, mgda
from camegrad_jax.weightings._nash_mtl import NashMTLState, nash_mtl
from camegrad_jax.weightings._pcgrad import PCGradState, pcgrad
from camegrad_jax.weightings._projection import ProjectionState, dualproj, upgrad
from camegrad_jax.weightings._random import RandomState, rlw

__all__ = [
    "CAGradState",
    "CameState",
    "DualSolver",
    "DwaState",
    "FairGradState",
    "FamoState",
    "GradVacState",
    "MgdaSolver",
    "MgdaState",
    "NashMTLState",
    "NewtonSolver",
    "PCGradState",
    "ProjectionState",
    "QPSolver",
    "RandomState",
    "UncertaintyState",
    "aligned_mtl",
    "cagrad",
    "came",
    "config",
    "dualproj",
    "dwa",
    "fairgrad",
    "famo",
    "gradvac",
    "imtl_g",
    "linear",
    "mean",
    "mgda",
    "nash_mtl",
    "pcgrad",
    "rlw",
    "summed",
    "uncertainty",
    "upgrad",
]
