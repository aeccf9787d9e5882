"""Flax NNX report generators: image encoder, CheXpert classification head and text decoder.

``model(images, tokens) -> (lm_logits, cls_logits)``:

* ``images`` float32 ``(B, V, H, W, 1)``: the ``V`` views (2 for IU X-Ray, 1 for MIMIC-CXR) share
  one encoder and their visual tokens are concatenated, as in R2Gen, each tagged with a learned
  view embedding; a model built for ``num_views`` accepts any ``V <= num_views``.
* ``tokens`` int32 ``(B, T)``, the teacher-forced decoder input starting with ``<bos>``;
  ``lm_logits`` float32 ``(B, T, vocab)``: position ``t`` predicts token ``t + 1`` (causal). The
  caller masks ``<pad>`` targets in the loss.
* ``cls_logits`` float32 ``(B, 14, 4)``: a linear head on all (layer-normed) visual tokens
  (classes of :mod:`examples.rrg.observations`); it never sees the tokens.

Classification-guided decoding (``guided=True``, as in PromptMRG's diagnosis prompts): the
decoder's memory gets 14 more tokens, one per observation, ``e_o + Σ_c softmax(cls_logits)_{o,c}
E_{o,c}`` (learned ``e`` and ``E``): the report reads the head's predicted finding states. The
path is differentiable, so the language-model loss also trains the head and the encoder through
it: this is where the two tasks' gradients meet.

Dropout, the NNX way: models are built in training mode, ``nnx.Dropout`` drawing masks from the
``dropout`` stream of the construction ``rngs``; ``model.eval()`` turns every dropout off and
``model.train()`` on again (or use ``nnx.view(model, deterministic=True)``, as decoding does).

Both decoders use sinusoidal positions and an output projection tied to the token embedding.
``init_cache``/``decode_step`` run them one token at a time on a key/value cache (plus the
relational memory state), with the same logits as the teacher-forced pass.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from examples.rrg.observations import NUM_CLASSES, NUM_OBSERVATIONS

#: Decoder state of :meth:`RRGModel.decode_step`: per layer ``(k, v, cross_k, cross_v)`` buffers
#: (leading axis the batch) and the relational memory (``None`` without one).
Cache = dict[str, Any]
BACKBONES = ("cnn_transformer", "vit_memory")


# Initialisers draw flat vectors and reshape them: n-D random draws compile very slowly on XLA:CPU.
def _xavier(key: jax.Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> jax.Array:
    """Glorot uniform ``U(±√(6 / (fan_in + fan_out)))``, R2Gen's init of every weight matrix."""
    receptive = math.prod(shape[:-2])
    limit = math.sqrt(6.0 / ((shape[-2] + shape[-1]) * receptive))
    return jax.random.uniform(key, (math.prod(shape),), dtype, -limit, limit).reshape(shape)


def _normal(std: float) -> nnx.Initializer:
    """``N(0, std²)`` entries."""

    def init(key: jax.Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> jax.Array:
        return std * jax.random.normal(key, (math.prod(shape),), dtype).reshape(shape)

    return init


_linear = functools.partial(nnx.Linear, kernel_init=_xavier)
_conv = functools.partial(nnx.Conv, kernel_init=_xavier)


def sinusoid(positions: jax.Array, d: int) -> jax.Array:
    """Sinusoidal codes ``(T,) -> (T, d)``: ``[sin(p ω_i), cos(p ω_i)]``, ``ω_i = 10⁴^(-2i/d)``."""
    freq = jnp.exp(-math.log(1e4) * 2.0 * jnp.arange(d // 2) / d)
    angle = positions.astype(jnp.float32)[:, None] * freq[None, :]
    return jnp.concatenate([jnp.sin(angle), jnp.cos(angle)], axis=-1)


def _small_normal(rngs: nnx.Rngs, shape: tuple[int, ...]) -> nnx.Param:
    return nnx.Param(_normal(0.02)(rngs.params(), shape))


class Attention(nnx.Module):
    """Multi-head attention ``softmax(q kᵀ / √d_h + mask) v`` with split key/value projection."""

    def __init__(self, d: int, heads: int, *, rngs: nnx.Rngs):
        self.heads = heads
        self.q = _linear(d, d, rngs=rngs)
        self.kv_proj = _linear(d, 2 * d, rngs=rngs)
        self.out = _linear(d, d, rngs=rngs)

    def _split(self, x: jax.Array) -> jax.Array:
        return x.reshape(*x.shape[:-1], self.heads, x.shape[-1] // self.heads)

    def kv(self, y: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Keys and values ``(B, Tk, H, d_h)`` of the attended sequence ``y`` ``(B, Tk, d)``."""
        k, v = jnp.split(self.kv_proj(y), 2, axis=-1)
        return self._split(k), self._split(v)

    def attend(
        self, x: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array | None = None
    ) -> jax.Array:
        """Queries from ``x`` ``(B, Tq, d)``; ``mask`` ``(Tq, Tk)`` bool, True where allowed."""
        q = self._split(self.q(x))
        s = jnp.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(q.shape[-1])
        if mask is not None:
            s = jnp.where(mask[None, None], s, -1e9)
        o = jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(s, axis=-1), v)
        return self.out(o.reshape(x.shape))

    def __call__(self, x: jax.Array, y: jax.Array, mask: jax.Array | None = None) -> jax.Array:
        return self.attend(x, *self.kv(y), mask)


class CondLayerNorm(nnx.Module):
    """LayerNorm ``n(x) γ + β``; with ``cond_dim`` R2Gen's MCLN ``n(x) (γ + f_γ(m)) + β + f_β(m)``.

    ``n(x) = (x - mean) / √(var + ε)`` over the last axis; ``f_γ, f_β`` are two-layer ReLU MLPs of
    the flattened memory ``m`` ``(..., cond_dim)``, which must share ``x``'s leading axes.
    """

    def __init__(self, d: int, cond_dim: int | None = None, *, rngs: nnx.Rngs):
        self.scale = nnx.Param(jnp.ones((d,)))
        self.bias = nnx.Param(jnp.zeros((d,)))
        self.f_scale, self.f_bias = (
            nnx.Sequential(_linear(cond_dim, d, rngs=rngs), nnx.relu, _linear(d, d, rngs=rngs))
            if cond_dim is not None
            else None
            for _ in range(2)
        )

    def __call__(self, x: jax.Array, mem: jax.Array | None = None) -> jax.Array:
        lead = (1,) * (x.ndim - 1)
        n = (x - x.mean(-1, keepdims=True)) * jax.lax.rsqrt(x.var(-1, keepdims=True) + 1e-6)
        scale, bias = self.scale[...].reshape(*lead, -1), self.bias[...].reshape(*lead, -1)
        if self.f_scale is not None and mem is not None:
            scale, bias = scale + self.f_scale(mem), bias + self.f_bias(mem)
        return n * scale + bias


class Block(nnx.Module):
    """Pre-LN block: ``x += SA(N₁x)``, [``x += CA(N₂x, visual)``], ``x += MLP(N₃x)``, with dropout.

    The norms are :class:`CondLayerNorm` (MCLN when ``cond_dim`` is given). With ``cache=(k, v)``
    buffers ``(B, L, H, d_h)`` the new keys/values are written at position ``t`` before attending.
    """

    def __init__(
        self,
        d: int,
        heads: int,
        dropout: float,
        *,
        cross: bool,
        cond_dim: int | None,
        rngs: nnx.Rngs,
    ):
        self.norm1 = CondLayerNorm(d, cond_dim, rngs=rngs)
        self.self_attn = Attention(d, heads, rngs=rngs)
        self.norm2 = CondLayerNorm(d, cond_dim, rngs=rngs) if cross else None
        self.cross_attn = Attention(d, heads, rngs=rngs) if cross else None
        self.norm3 = CondLayerNorm(d, cond_dim, rngs=rngs)
        self.mlp = nnx.Sequential(
            _linear(d, 4 * d, rngs=rngs), nnx.gelu, _linear(4 * d, d, rngs=rngs)
        )
        self.drop = nnx.Dropout(dropout, rngs=rngs)

    def __call__(
        self,
        x: jax.Array,
        mask: jax.Array | None = None,
        mem: jax.Array | None = None,
        cross_kv: tuple[jax.Array, jax.Array] | None = None,
        cache: tuple[jax.Array, jax.Array] | None = None,
        t: jax.Array | None = None,
    ) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
        """Returns the new ``x`` and the self-attention keys/values (the updated cache)."""
        h = self.norm1(x, mem)
        k, v = self.self_attn.kv(h)
        if cache is not None:
            k = jax.lax.dynamic_update_slice_in_dim(cache[0], k, t, axis=1)
            v = jax.lax.dynamic_update_slice_in_dim(cache[1], v, t, axis=1)
        x = x + self.drop(self.self_attn.attend(h, k, v, mask))
        if self.cross_attn is not None and cross_kv is not None:
            x = x + self.drop(self.cross_attn.attend(self.norm2(x, mem), *cross_kv))
        return x + self.drop(self.mlp(self.norm3(x, mem))), (k, v)


class RelationalMemory(nnx.Module):
    """R2Gen's relational memory ``M_t = RM(M_{t-1}, y_t)``, ``M`` of shape ``(B, S, d)``.

    ``M̃ = M + MHA(M, [M; y]);  M̃ += MLP(M̃);  i, f = σ(W y + U tanh M);  M_t = i ⊙ tanh M̃ + f ⊙ M``,
    starting from ``M_0 = I_{S×d}`` (identity, zero-padded), as in R2Gen.
    """

    def __init__(self, d: int, slots: int, heads: int, *, rngs: nnx.Rngs):
        self.slots = slots
        self.attn = Attention(d, heads, rngs=rngs)
        self.mlp = nnx.Sequential(
            _linear(d, d, rngs=rngs), nnx.relu, _linear(d, d, rngs=rngs), nnx.relu
        )
        self.w = _linear(d, 2 * d, rngs=rngs)
        self.u = _linear(d, 2 * d, rngs=rngs)

    def initial(self, batch: int, d: int) -> jax.Array:
        """``M_0`` ``(B, S, d)``."""
        return jnp.broadcast_to(jnp.eye(self.slots, d), (batch, self.slots, d))

    def step(self, m: jax.Array, y: jax.Array) -> jax.Array:
        """One update from the token embedding ``y`` ``(B, d)``."""
        nxt = m + self.attn(m, jnp.concatenate([m, y[:, None]], axis=1))
        nxt = nxt + self.mlp(nxt)
        i, f = jnp.split(jax.nn.sigmoid(self.w(y)[:, None] + self.u(jnp.tanh(m))), 2, axis=-1)
        return i * jnp.tanh(nxt) + f * m

    def __call__(self, y: jax.Array) -> jax.Array:
        """Memories after each token, flattened: ``(B, T, d) -> (B, T, S·d)`` (a ``lax.scan``)."""
        b, _, d = y.shape

        def body(m: jax.Array, y_t: jax.Array) -> tuple[jax.Array, jax.Array]:
            m = self.step(m, y_t)
            return m, m.reshape(b, -1)

        _, mems = jax.lax.scan(body, self.initial(b, d), jnp.swapaxes(y, 0, 1))
        return jnp.swapaxes(mems, 0, 1)


class Decoder(nnx.Module):
    """Causal Transformer decoder over visual tokens, optionally with R2Gen's memory and MCLN.

    ``x_0 = drop(E[token] √d + PE(t))``; logits ``= N(x_L) Eᵀ`` (tied embedding).
    """

    def __init__(
        self,
        vocab_size: int,
        d: int,
        heads: int,
        layers: int,
        dropout: float,
        memory_slots: int | None,
        *,
        rngs: nnx.Rngs,
    ):
        self.d = d
        self.embed = nnx.Embed(vocab_size, d, embedding_init=_normal(d**-0.5), rngs=rngs)
        self.memory = RelationalMemory(d, memory_slots, heads, rngs=rngs) if memory_slots else None
        cond = memory_slots * d if memory_slots else None
        self.layers = nnx.List(
            [Block(d, heads, dropout, cross=True, cond_dim=cond, rngs=rngs) for _ in range(layers)]
        )
        self.norm = CondLayerNorm(d, cond, rngs=rngs)
        self.drop = nnx.Dropout(dropout, rngs=rngs)

    def _embed(self, tokens: jax.Array, positions: jax.Array) -> jax.Array:
        x = self.embed(tokens) * math.sqrt(self.d) + sinusoid(positions, self.d)[None]
        return self.drop(x)

    def __call__(self, visual: jax.Array, tokens: jax.Array) -> jax.Array:
        """Teacher forcing: ``visual`` ``(B, N, d)``, ``tokens`` ``(B, T)`` -> ``(B, T, vocab)``."""
        t = tokens.shape[1]
        x = self._embed(tokens, jnp.arange(t))
        mem = self.memory(x) if self.memory is not None else None
        mask = jnp.tril(jnp.ones((t, t), bool))
        for layer in self.layers:
            x, _ = layer(x, mask, mem, layer.cross_attn.kv(visual))
        return self.embed.attend(self.norm(x, mem))

    def init_cache(self, visual: jax.Array, max_len: int) -> Cache:
        """Empty self-attention buffers for ``max_len`` steps, cross keys/values, ``M_0``."""
        b = visual.shape[0]
        heads = self.layers[0].self_attn.heads
        zeros = jnp.zeros((b, max_len, heads, self.d // heads))
        layers = [(zeros, zeros, *layer.cross_attn.kv(visual)) for layer in self.layers]
        mem = self.memory.initial(b, self.d) if self.memory is not None else None
        return {"layers": layers, "memory": mem}

    def step(self, cache: Cache, tokens: jax.Array, t: jax.Array) -> tuple[jax.Array, Cache]:
        """Input token ``(B,)`` at position ``t`` -> next-token logits ``(B, vocab)``, new cache."""
        x = self._embed(tokens[:, None], jnp.reshape(t, (1,)))
        m = mem = None
        if self.memory is not None:
            m = self.memory.step(cache["memory"], x[:, 0])
            mem = m.reshape(m.shape[0], 1, -1)
        mask = (jnp.arange(cache["layers"][0][0].shape[1]) <= t)[None]
        layers = []
        for layer, (k, v, ck, cv) in zip(self.layers, cache["layers"], strict=True):
            x, (k, v) = layer(x, mask, mem, (ck, cv), cache=(k, v), t=t)
            layers.append((k, v, ck, cv))
        return self.embed.attend(self.norm(x, mem))[:, 0], {"layers": layers, "memory": m}


class ConvEncoder(nnx.Module):
    """``stages`` blocks of stride-2 3×3 conv + LayerNorm + GELU: ``(N, H, W, 1) -> (N, G², d)``.

    Widths double up to ``d`` (e.g. 32, 64, 128); ``G = H / 2^stages``; adds learned positions.
    """

    def __init__(self, d: int, image_size: int, stages: int, *, rngs: nnx.Rngs):
        if image_size % 2**stages:
            raise ValueError(f"image_size {image_size} is not divisible by 2**{stages}")
        widths = [max(d // 2 ** (stages - 1 - i), 1) for i in range(stages)]
        self.convs = nnx.List(
            [
                _conv(c_in, c_out, (3, 3), strides=2, rngs=rngs)
                for c_in, c_out in zip([1, *widths[:-1]], widths, strict=True)
            ]
        )
        self.norms = nnx.List([nnx.LayerNorm(w, rngs=rngs) for w in widths])
        self.pos = _small_normal(rngs, ((image_size // 2**stages) ** 2, d))

    def __call__(self, x: jax.Array) -> jax.Array:
        for conv, norm in zip(self.convs, self.norms, strict=True):
            x = nnx.gelu(norm(conv(x)))
        return x.reshape(x.shape[0], -1, x.shape[-1]) + self.pos[...][None]


class ViTEncoder(nnx.Module):
    """Patch embedding (``p×p`` patches, learned positions) + pre-LN Transformer encoder layers."""

    def __init__(
        self,
        d: int,
        heads: int,
        layers: int,
        image_size: int,
        patch: int,
        dropout: float,
        *,
        rngs: nnx.Rngs,
    ):
        if image_size % patch:
            raise ValueError(f"image_size {image_size} is not divisible by patch_size {patch}")
        self.patch = _conv(1, d, (patch, patch), strides=patch, padding="VALID", rngs=rngs)
        self.pos = _small_normal(rngs, ((image_size // patch) ** 2, d))
        self.layers = nnx.List(
            [Block(d, heads, dropout, cross=False, cond_dim=None, rngs=rngs) for _ in range(layers)]
        )
        self.norm = nnx.LayerNorm(d, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = self.patch(x)
        x = x.reshape(x.shape[0], -1, x.shape[-1]) + self.pos[...][None]
        for layer in self.layers:
            x, _ = layer(x)
        return self.norm(x)


class RRGModel(nnx.Module):
    """Report generator: ``encoder`` per view, classification head, text ``decoder``."""

    def __init__(
        self,
        encoder: nnx.Module,
        decoder: Decoder,
        *,
        d_model: int,
        num_views: int,
        guided: bool = False,
        rngs: nnx.Rngs,
    ):
        self.encoder = encoder
        self.view_embed = _small_normal(rngs, (num_views, d_model))
        # The head reads every visual token of every view (findings such as an enlarged heart
        # are spatial: a mean-pooled feature could not learn them on the synthetic data).
        tokens = encoder.pos.shape[0] * d_model
        self.cls_norm = nnx.LayerNorm(d_model, rngs=rngs)
        self.cls_head = nnx.Param(
            _normal((num_views * tokens) ** -0.5)(
                rngs.params(), (num_views, tokens, NUM_OBSERVATIONS * NUM_CLASSES)
            )
        )
        self.cls_bias = nnx.Param(jnp.zeros((NUM_OBSERVATIONS * NUM_CLASSES,)))
        self.decoder = decoder
        self.guided = guided
        if guided:  # one memory token per observation, from its predicted class probabilities
            self.observation_embed = _small_normal(rngs, (NUM_OBSERVATIONS, d_model))
            self.state_embed = _small_normal(rngs, (NUM_OBSERVATIONS, NUM_CLASSES, d_model))

    def encode(self, images: jax.Array) -> tuple[jax.Array, jax.Array]:
        """``(B, V, H, W, 1)`` -> decoder memory ``(B, V·N (+ 14 if guided), d)``,
        ``cls_logits`` ``(B, 14, 4)``."""
        return self.read_features(self.features(images))

    def features(self, images: jax.Array) -> jax.Array:
        """The shared representation: the encoder's tokens of every view, ``(B, V, N, d)``."""
        b, v = images.shape[:2]
        feats = self.encoder(images.reshape(b * v, *images.shape[2:]))
        return feats.reshape(b, v, *feats.shape[1:])

    def read_features(self, feats: jax.Array) -> tuple[jax.Array, jax.Array]:
        """``(B, V, N, d)`` features -> visual tokens and ``cls_logits`` (see :meth:`encode`)."""
        b, v = feats.shape[:2]
        feats = feats + self.view_embed[:v][None, :, None]
        visual = feats.reshape(b, -1, feats.shape[-1])
        flat = self.cls_norm(feats).reshape(b, v, -1)  # (B, V, N·d)
        cls = jnp.einsum("bvf,vfo->bo", flat, self.cls_head[:v]) + self.cls_bias[...][None]
        cls = cls.reshape(b, NUM_OBSERVATIONS, NUM_CLASSES)
        if self.guided:
            states = jnp.einsum("boc,ocd->bod", jax.nn.softmax(cls), self.state_embed[...])
            findings = states + self.observation_embed[...][None]
            visual = jnp.concatenate([visual, findings.astype(visual.dtype)], axis=1)
        return visual, cls

    def __call__(self, images: jax.Array, tokens: jax.Array) -> tuple[jax.Array, jax.Array]:
        """``(lm_logits (B, T, vocab), cls_logits (B, 14, 4))``."""
        visual, cls_logits = self.encode(images)
        return self.decoder(visual, tokens), cls_logits

    def init_cache(self, visual: jax.Array, max_len: int) -> Cache:
        """Decoder state for :meth:`decode_step` over ``max_len`` positions."""
        return self.decoder.init_cache(visual, max_len)

    def decode_step(self, cache: Cache, tokens: jax.Array, t: jax.Array) -> tuple[jax.Array, Cache]:
        """Feed ``tokens`` ``(B,)`` at position ``t``; next-token logits ``(B, vocab)``."""
        return self.decoder.step(cache, tokens, t)


class CNNTransformer(RRGModel):
    """PromptMRG-style: :class:`ConvEncoder` + classification head + Transformer :class:`Decoder`.

    Simplified from PromptMRG: a few conv blocks replace ResNet-101, a small decoder replaces BERT,
    and there are no diagnosis prompts or retrieval.
    """


class ViTMemoryDecoder(RRGModel):
    """R2Gen-style: :class:`ViTEncoder` + classification head + :class:`Decoder` with a relational
    memory and MCLN in every norm.

    Simplified from R2Gen: a small ViT replaces ResNet-101 + the Transformer encoder (R2Gen's
    encoder layers become the ViT's), pre-LN blocks, the memory width equals ``d_model``, and the
    memory attention has no dropout.
    """


def build_model(
    backbone: str,
    *,
    vocab_size: int,
    num_views: int = 2,
    image_size: int = 64,
    d_model: int = 64,
    num_heads: int = 4,
    num_layers: int = 2,
    encoder_layers: int = 2,
    conv_stages: int = 3,
    patch_size: int = 8,
    memory_slots: int = 3,
    dropout: float = 0.1,
    guided: bool = False,
    rngs: nnx.Rngs,
) -> RRGModel:
    """A ``"cnn_transformer"`` (:class:`CNNTransformer`) or ``"vit_memory"``
    (:class:`ViTMemoryDecoder`) model, in training mode.

    ``conv_stages`` is used by the CNN (64×64 -> 8×8 tokens with 3 stages); ``encoder_layers``,
    ``patch_size`` (64×64 -> 8×8 patches with 8) and ``memory_slots`` by the ViT/memory model.
    ``guided`` adds classification-guided decoding (see the module docstring). ``rngs``
    supplies the ``params`` and ``dropout`` streams (``nnx.Rngs(seed)`` gives both).
    """
    if d_model % (2 * num_heads):
        raise ValueError(f"d_model {d_model} must be a multiple of 2 * num_heads {num_heads}")
    if backbone == "cnn_transformer":
        cls: type[RRGModel] = CNNTransformer
        encoder: nnx.Module = ConvEncoder(d_model, image_size, conv_stages, rngs=rngs)
        slots = None
    elif backbone == "vit_memory":
        cls, slots = ViTMemoryDecoder, memory_slots
        encoder = ViTEncoder(
            d_model, num_heads, encoder_layers, image_size, patch_size, dropout, rngs=rngs
        )
    else:
        raise ValueError(f"unknown backbone {backbone!r}; expected one of {BACKBONES}")
    decoder = Decoder(vocab_size, d_model, num_heads, num_layers, dropout, slots, rngs=rngs)
    return cls(encoder, decoder, d_model=d_model, num_views=num_views, guided=guided, rngs=rngs)
