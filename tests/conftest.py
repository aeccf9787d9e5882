"""Test configuration: strict JAX numerics and a multi-device CPU platform.

``JAX_NUM_CPU_DEVICES`` must be set before JAX starts, so it is set here, at import time.
"""

import os

os.environ.setdefault("JAX_NUM_CPU_DEVICES", "8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax

jax.config.update("jax_numpy_rank_promotion", "raise")
