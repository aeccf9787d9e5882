"""Greedy and beam-search report decoding with fixed shapes (jit-able).

Output convention: ``(B, max_len)`` int32 sequences of *generated* tokens — no leading ``<bos>`` —
where everything after the first ``<eos>`` is ``<pad>``; a sequence that never emits ``<eos>``
fills all ``max_len`` positions. ``<pad>`` and ``<bos>`` are never generated. The images are encoded
once and the decoder runs one token per step on a key/value cache (``RRGModel.decode_step``),
always on an eval view of the model (dropout off). ``max_len`` and ``beam_size`` are static: jit
with e.g. ``nnx.jit(beam_decode, static_argnames=("max_len", "beam_size"))``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from examples.rrg.models import RRGModel
from examples.rrg.observations import BOS_ID, EOS_ID, PAD_ID


def _log_probs(logits: jax.Array) -> jax.Array:
    """``log_softmax`` over the vocabulary; ``-inf`` at ``<pad>`` and ``<bos>``, never generated."""
    ids = jnp.arange(logits.shape[-1])
    allowed = (ids != PAD_ID) & (ids != BOS_ID)
    lead = (1,) * (logits.ndim - 1)
    return jnp.where(allowed.reshape(*lead, -1), jax.nn.log_softmax(logits, axis=-1), -jnp.inf)


def greedy_decode(model: RRGModel, images: jax.Array, max_len: int) -> jax.Array:
    """Argmax decoding ``y_t = argmax_y log p(y | <bos>, y_<t, images)``: ``(B, max_len)`` int32."""
    model = nnx.view(model, deterministic=True)
    visual, _ = model.encode(images)
    b = visual.shape[0]

    def step(t: jax.Array, state: tuple) -> tuple:
        out, done, last, cache = state
        logits, cache = model.decode_step(cache, last, t)
        tok = jnp.where(done, PAD_ID, jnp.argmax(_log_probs(logits), axis=-1)).astype(jnp.int32)
        return out.at[:, t].set(tok), done | (tok == EOS_ID), tok, cache

    state = (
        jnp.full((b, max_len), PAD_ID, jnp.int32),
        jnp.zeros((b,), bool),
        jnp.full((b,), BOS_ID, jnp.int32),
        model.init_cache(visual, max_len),
    )
    return jax.lax.fori_loop(0, max_len, step, state)[0]


def beam_decode(
    model: RRGModel,
    images: jax.Array,
    *,
    beam_size: int = 3,
    max_len: int,
    length_penalty: float = 0.0,
) -> jax.Array:
    """Beam search on summed log-probabilities; returns the best beam, ``(B, max_len)`` int32.

    Each step extends the ``K = beam_size`` live hypotheses by every token and keeps the ``K`` best
    by total log-prob ``s``; a finished hypothesis (past ``<eos>``) carries on unchanged, extended
    by ``<pad>`` at cost 0, so it competes with the live ones. At the end the beam with the highest
    ``s / ((5 + n) / 6)^α`` (GNMT length penalty, ``n`` generated tokens incl. ``<eos>``,
    ``α = length_penalty``; ``α = 0`` ranks by ``s``) is returned. ``beam_size=1`` is greedy.
    """
    model = nnx.view(model, deterministic=True)
    visual, _ = model.encode(images)
    b, k = visual.shape[0], beam_size
    rows = jnp.arange(b)[:, None]

    def step(t: jax.Array, state: tuple) -> tuple:
        seqs, scores, done, last, cache = state
        logits, cache = model.decode_step(cache, last, t)
        logp = _log_probs(logits).reshape(b, k, -1)
        vocab = logp.shape[-1]
        pad_only = jnp.where(jnp.arange(vocab) == PAD_ID, 0.0, -jnp.inf)
        logp = jnp.where(done[..., None], pad_only[None, None], logp)
        scores, flat = jax.lax.top_k((scores[..., None] + logp).reshape(b, k * vocab), k)
        beam, tok = flat // vocab, (flat % vocab).astype(jnp.int32)
        seqs = seqs[rows, beam].at[:, :, t].set(tok)
        done = done[rows, beam] | (tok == EOS_ID)
        order = (rows * k + beam).reshape(-1)
        cache = jax.tree.map(lambda x: x[order], cache)
        return seqs, scores, done, tok.reshape(-1), cache

    state = (
        jnp.full((b, k, max_len), PAD_ID, jnp.int32),
        # Only beam 0 is live at the start: the K initial hypotheses are all "<bos>".
        jnp.tile(jnp.where(jnp.arange(k) == 0, 0.0, -jnp.inf)[None], (b, 1)),
        jnp.zeros((b, k), bool),
        jnp.full((b * k,), BOS_ID, jnp.int32),
        model.init_cache(jnp.repeat(visual, k, axis=0), max_len),
    )
    seqs, scores, *_ = jax.lax.fori_loop(0, max_len, step, state)
    lengths = jnp.sum(seqs != PAD_ID, axis=-1).astype(jnp.float32)
    best = jnp.argmax(scores / ((5.0 + lengths) / 6.0) ** length_penalty, axis=-1)
    return seqs[jnp.arange(b), best]
