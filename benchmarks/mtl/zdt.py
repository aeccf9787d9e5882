r"""ZDT1 (Zitzler, Deb and Thiele, 2000) in a smooth, unconstrained parametrisation.

With $x = \sigma(z) \in (0, 1)^n$,

$$
f_1 = x_1, \qquad g = 1 + \frac{9}{n-1}\sum_{i=2}^n x_i, \qquad
f_2 = g\Big(1 - \sqrt{f_1 / g}\Big).
$$

The Pareto set is $x_2 = \dots = x_n = 0$ ($g = 1$), the front $f_2 = 1 - \sqrt{f_1}$,
$f_1 \in [0, 1]$. Every feasible point satisfies $f_2 \ge 1 - \sqrt{f_1}$, so the distance of
$(f_1, f_2)$ to the front measures how far from Pareto-optimal it is.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.mtl.metrics import distance_to_polyline, hypervolume_2d

#: Reference point of the hypervolume (the usual choice for ZDT1).
HV_REFERENCE = (1.1, 1.1)
#: Hypervolume of the whole front for that reference:
#: $\int_0^1 (0.1 + \sqrt{f})\,df + 0.1 \cdot 1.1$.
HV_FRONT = 0.1 + 2.0 / 3.0 + 0.11


def objectives(z: jax.Array) -> jax.Array:
    """$(f_1, f_2)$ at the unconstrained point ``z`` (n,), $x = \\sigma(z)$."""
    x = jax.nn.sigmoid(z)
    f1 = x[0]
    g = 1.0 + 9.0 * jnp.sum(x[1:]) / (z.shape[0] - 1)
    return jnp.stack([f1, g * (1.0 - jnp.sqrt(f1 / g))])


@functools.lru_cache(maxsize=1)
def front(num: int = 4001) -> np.ndarray:
    """The true front as a ``(num, 2)`` polyline, denser near $f_1 = 0$ where it is steep."""
    f1 = np.linspace(0.0, 1.0, num) ** 2
    return np.stack([f1, 1.0 - np.sqrt(f1)], axis=1)


def front_distance(points: np.ndarray) -> np.ndarray:
    """Euclidean distance of each objective vector (N, 2) to the true front."""
    return distance_to_polyline(points, front())


def hypervolume(points: np.ndarray) -> float:
    """Hypervolume of the objective vectors (N, 2) against :data:`HV_REFERENCE`."""
    return hypervolume_2d(points, HV_REFERENCE)
