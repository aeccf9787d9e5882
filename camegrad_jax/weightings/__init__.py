"""Weightings: maps from the K×K Gram matrix to K combination coefficients."""

from camegrad_jax._came import CameState, came
from camegrad_jax.weightings._linear import linear, mean, sum

__all__ = ["CameState", "came", "linear", "mean", "sum"]
