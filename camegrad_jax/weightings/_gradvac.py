r"""Gradient Vaccine: raise each pair's cosine to an EMA target, in Gram space."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from camegrad_jax._checks import check_in_range, concrete
from camegrad_jax._numerics import safe_sqrt
from camegrad_jax._weighting import Weighting
from camegrad_jax.weightings._common import gram_scale, key_data, split_key_data

Array = jax.Array


class GradVacState(NamedTuple):
    r"""State and diagnostics of [`gradvac`][camegrad_jax.weightings.gradvac].

    Attributes:
      targets: the K×K EMA targets $\hat\phi_{ij}$ (the diagonal is unused).
      key: the PRNG key (raw ``uint32[2]``) that draws the next step's visiting orders.
      order: the ``(K, K-1)`` visiting orders of the last step: row $i$ lists the tasks $j$
        in the order $g_i$ was vaccinated against them.
    """

    targets: Array
    key: Array
    order: Array


def visiting_orders(key: Array, num_tasks: int) -> Array:
    """For each task i, a uniformly random order of the other tasks, ``(K, K-1)`` int32."""
    keys = jax.random.split(key, num_tasks)
    perms = jax.vmap(lambda k: jax.random.permutation(k, num_tasks - 1))(keys)
    return (perms + (perms >= jnp.arange(num_tasks)[:, None])).astype(jnp.int32)


def vaccinate(gram_hat: Array, targets: Array, order: Array, beta: Array) -> tuple[Array, Array]:
    r"""The coefficient matrix $C$ ($g_i^{PC} = \sum_k C_{ik} g_k$) and the new targets.

    Row $i$ starts at $e_i$ and visits the tasks $j$ of ``order[i]`` in turn. With
    $\phi = \cos(g_i^{PC}, g_j)$ and $\hat\phi = \hat\phi_{ij}$, if
    $\phi < \hat\phi$ it adds $a\,g_j$ with the paper's closed form

    $$
    a = \frac{\|g_i^{PC}\|\,(\hat\phi\sqrt{1-\phi^2} - \phi\sqrt{1-\hat\phi^2})}
             {\|g_j\|\sqrt{1-\hat\phi^2}},
    $$

    after which $\cos(g_i^{PC}, g_j) = \hat\phi$; then
    $\hat\phi_{ij} \leftarrow (1-\beta)\hat\phi_{ij} + \beta\phi$ with the cosine
    measured before the correction, for every pair (the paper's Algorithm 1 and TorchJD; LibMTL
    updates it only for pairs below their target).
    Norms and inner products come from the Gram matrix: $\|g_i^{PC}\|^2 = c_i^\top Gc_i$,
    $\langle g_i^{PC}, g_j\rangle = (Gc_i)_j$. A zero gradient has cosine 0 with every other
    and is never corrected; $1 - \hat\phi^2$ is floored at the dtype's epsilon, so a target
    of 1 gives a large but finite correction. Rows are independent, so they are computed in
    parallel (``vmap``), each a ``lax.scan`` over its K-1 partners.
    """
    k = gram_hat.shape[-1]
    dtype = gram_hat.dtype
    eps = jnp.finfo(dtype).eps
    norms = safe_sqrt(jnp.diagonal(gram_hat))

    def row(i: Array, partners: Array, target_row: Array) -> tuple[Array, Array]:
        def visit(carry: tuple[Array, Array, Array], j: Array):
            c, cg, target_row = carry
            norm_i = safe_sqrt(c @ cg)
            norm_j = norms[j]
            valid = (norm_i > 0.0) & (norm_j > 0.0)
            denom = jnp.where(valid, norm_i * norm_j, 1.0)
            phi = jnp.where(valid, jnp.clip(cg[j] / denom, -1.0, 1.0), 0.0)
            target = target_row[j]
            sin_phi = safe_sqrt(1.0 - phi * phi)
            sin_target = jnp.sqrt(jnp.maximum(1.0 - target * target, eps))
            step = norm_i * (target * sin_phi - phi * sin_target)
            step = step / (jnp.where(valid, norm_j, 1.0) * sin_target)
            step = jnp.where(valid & (phi < target), step, 0.0)
            c = c.at[j].add(step)
            cg = cg + step * gram_hat[j]
            target_row = target_row.at[j].set((1.0 - beta) * target + beta * phi)
            return (c, cg, target_row), None

        c0 = jax.nn.one_hot(i, k, dtype=dtype)
        (c, _, target_row), _ = jax.lax.scan(visit, (c0, gram_hat[i], target_row), partners)
        return c, target_row

    return jax.vmap(row)(jnp.arange(k), order, targets)


def gradvac(beta: Any = 0.01, seed: Any = 0) -> Weighting:
    r"""Gradient Vaccine (Wang et al., ICLR 2021), in Gram space.

    For each task $i$ and, in a random order, each other task $j$: if the cosine
    $\phi_{ij}$ between the (already corrected) $g_i^{PC}$ and $g_j$ is below its EMA
    target $\hat\phi_{ij}$, add the multiple of $g_j$ that brings it exactly to
    $\hat\phi_{ij}$ (see `vaccinate`); then
    $\hat\phi_{ij} \leftarrow (1-\beta)\hat\phi_{ij} + \beta\phi_{ij}$. The update is
    $\sum_i g_i^{PC} = J^\top C^\top\mathbf 1$, so the coefficients are the column sums of
    $C$. Targets start at 0 as in the paper, so the first step is PCGrad (a pair with a
    negative cosine is projected to orthogonality). The coefficients are scale invariant
    (every quantity is a cosine or a ratio of norms).

    The paper's models used one target per pair and per layer group; this weighting sees the
    whole Jacobian through its Gram matrix, i.e. the ``whole_model`` grouping of TorchJD and
    LibMTL. The orders are drawn from the PRNG key in the state (``jax.random``), so runs are
    reproducible and the orders used are in the state's ``order``.

    Args:
      beta: the EMA rate $\beta \in [0, 1]$ of the targets (paper: 1e-2; TorchJD and LibMTL
        default to 0.5). May be traced.
      seed: the integer seed of the PRNG key created by ``init``.

    Returns:
      A [`Weighting`][camegrad_jax.Weighting] whose state is a `GradVacState`.

    Examples:
      >>> import jax.numpy as jnp
      >>> from camegrad_jax.weightings import gradvac
      >>> weighting = gradvac()
      >>> jac = jnp.array([[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]])
      >>> coeffs, state = weighting.weigh(jac @ jac.T, weighting.init(2))
      >>> coeffs  # targets start at 0: PCGrad, as TorchJD's GradVac gives [2.2222, 1.5789]
      Array([2.2222, 1.5789], dtype=float32)
      >>> state.targets[0, 1]  # 0.99 * 0 + 0.01 * cos(g_1, g_2), cos = -22 / sqrt(18 * 38)
      Array(-0.008412, dtype=float32)

    References:
      Wang, Tsvetkov, Firat and Cao, *Gradient Vaccine: Investigating and Improving
      Multi-task Optimization in Massively Multilingual Models*, ICLR 2021
      (arXiv:2010.05874).
    """
    check_in_range("beta", beta, 0.0, 1.0, expected="in [0, 1] (the EMA rate)")
    known_seed = concrete(seed)
    if known_seed is not None and (known_seed.shape != () or not float(known_seed).is_integer()):
        raise ValueError(f"`seed` must be an integer; got {known_seed.tolist()}.")

    def init(num_tasks: int) -> GradVacState:
        key = key_data(seed)
        others = jnp.arange(num_tasks - 1, dtype=jnp.int32)
        return GradVacState(
            targets=jnp.zeros((num_tasks, num_tasks), jnp.float32),
            key=key,
            order=others[None, :]
            + (others[None, :] >= jnp.arange(num_tasks, dtype=jnp.int32)[:, None]),
        )

    def weigh(gram: Array, state: GradVacState, **extra_args: Any) -> tuple[Array, Any]:
        del extra_args
        k = gram.shape[-1]
        dtype = gram.dtype
        gram_hat = gram / gram_scale(gram, per_task=True)[0]
        key, subkey = split_key_data(state.key)
        order = visiting_orders(subkey, k)
        rows, targets = vaccinate(
            gram_hat, state.targets.astype(dtype), order, jnp.asarray(beta, dtype)
        )
        coeffs = jnp.sum(rows, axis=0)
        new_state = GradVacState(targets=targets.astype(state.targets.dtype), key=key, order=order)
        return coeffs, new_state

    return Weighting(init, weigh, scale_invariant=True)
