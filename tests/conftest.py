"""Test configuration: strict JAX numerics and a multi-device CPU platform.

``JAX_NUM_CPU_DEVICES`` must be set before JAX starts, so it is set here, at import time.
"""

import os

os.environ.setdefault("JAX_NUM_CPU_DEVICES", "8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax
import pytest

jax.config.update("jax_numpy_rank_promotion", "raise")


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
    """Drop JAX's compiled programs after each test module.

    Every XLA:CPU executable keeps its kernels' machine code in memory maps of its own, and a
    test process that holds the ~1400 tests' programs at once passes the kernel's limit on
    maps per process (``vm.max_map_count``, 65530 by default): the next compilation then
    crashes with a segmentation fault. A module's tests share their jitted functions, so
    clearing between modules costs little recompilation.
    """
    yield
    jax.clear_caches()
