"""RRG example models and decoders: shapes, causality, dropout modes, decoding, a few train steps.

Tiny configs (d_model 32, one layer, 32×32 images). Compiling dominates the run time, so the jitted
entry points live at module level and the tests share their shapes: per backbone a "main" model
(vocab 20, two views, batch 2) and a "small" one (vocab 6, one view, batch 4, classification-guided)
for decoding.
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from examples.rrg.decoding import beam_decode, greedy_decode
from examples.rrg.models import BACKBONES, build_model
from examples.rrg.observations import BOS_ID, EOS_ID, NUM_CLASSES, NUM_OBSERVATIONS, PAD_ID

T = 8  # teacher-forced length and decoding max_len
L = 5  # length of the brute-force search
B = 4  # batch of the decoding tests
GENERABLE = (EOS_ID, 3, 4, 5)  # the small vocabulary without <pad> and <bos>
TINY = {"image_size": 32, "d_model": 32, "num_heads": 4, "num_layers": 1, "encoder_layers": 1}


@pytest.fixture(scope="module", autouse=True)
def _fast_compiles():
    """XLA's optimisation passes cost far more than these tiny programs run: skip most of them."""
    previous = jax.config.read("jax_disable_most_optimizations")
    jax.config.update("jax_disable_most_optimizations", True)
    yield
    jax.config.update("jax_disable_most_optimizations", previous)


forward = nnx.jit(lambda model, images, tokens: model(images, tokens))
greedy = nnx.jit(greedy_decode, static_argnames="max_len")
beam = nnx.jit(beam_decode, static_argnames=("beam_size", "max_len"))


class EosRamp(nnx.Module):
    """``model`` with ``5 (t - 2)`` added to the ``<eos>`` logit at position ``t``.

    Untrained models rarely emit ``<eos>``; the ramp makes decodes stop at varied lengths, so the
    tests cover the ``<eos>``-then-``<pad>`` path. Exposes the decoding interface of ``RRGModel``.
    """

    def __init__(self, model):
        self.model = model

    def _ramp(self, t: jax.Array, vocab: int) -> jax.Array:
        return jnp.where(jnp.arange(vocab) == EOS_ID, 5.0 * (t - 2.0), 0.0)

    def encode(self, images):
        return self.model.encode(images)

    def init_cache(self, visual, max_len):
        return self.model.init_cache(visual, max_len)

    def decode_step(self, cache, tokens, t):
        logits, cache = self.model.decode_step(cache, tokens, t)
        return logits + self._ramp(t, logits.shape[-1])[None], cache

    def __call__(self, images, tokens):
        lm, cls = self.model(images, tokens)
        ramp = jax.vmap(self._ramp, in_axes=(0, None))(jnp.arange(lm.shape[1]), lm.shape[-1])
        return lm + ramp[None], cls


def _images(b: int, views: int, seed: int) -> jax.Array:
    return jax.random.normal(jax.random.key(seed), (b, views, 32, 32, 1))


def _tokens(b: int, vocab: int, seed: int = 2) -> np.ndarray:
    tokens = np.array(jax.random.randint(jax.random.key(seed), (b, T), 3, vocab), np.int32)
    tokens[:, 0] = BOS_ID
    return tokens


@pytest.fixture(scope="module", params=BACKBONES)
def models(request):
    """Per backbone, in eval mode: ``"main"`` (vocab 20), ``"small"`` (vocab 6, guided, with the
    ramp: decoding is checked with the classification's memory tokens)."""
    main = build_model(request.param, vocab_size=20, rngs=nnx.Rngs(0), **TINY)
    small = build_model(request.param, vocab_size=6, guided=True, rngs=nnx.Rngs(3), **TINY)
    small = EosRamp(small)
    main.eval()
    small.eval()
    return {"main": main, "small": small}


def test_shapes_causality_and_classification_ignores_tokens(models):
    model, images, tokens = models["main"], _images(2, 2, seed=1), _tokens(2, 20)
    lm, cls = forward(model, images, tokens)
    assert lm.shape == (2, T, 20) and lm.dtype == jnp.float32
    assert cls.shape == (2, NUM_OBSERVATIONS, NUM_CLASSES) and cls.dtype == jnp.float32
    assert np.isfinite(np.asarray(lm)).all()
    for t in range(T - 1):
        changed = tokens.copy()
        changed[:, t + 1 :] = (changed[:, t + 1 :] + 5) % 20
        lm_changed, cls_changed = forward(model, images, changed)
        np.testing.assert_allclose(lm_changed[:, : t + 1], lm[:, : t + 1], atol=1e-5)
        assert not np.allclose(lm_changed[:, t + 1], lm[:, t + 1], atol=1e-3)
        np.testing.assert_array_equal(cls_changed, cls)


encode = nnx.jit(lambda model, images: model.encode(images))
lm_loss_grad = nnx.jit(
    lambda model, images, tokens: nnx.grad(lambda m: jnp.mean(m(images, tokens)[0] ** 2))(model)
)


def test_guided_memory_is_the_classification(models):
    """Guided: 14 memory tokens after the visual ones, ``e_o + Σ_c p_oc E_oc`` (numpy), and the
    language-model loss reaches the classification head; unguided it cannot."""
    guided, plain, images = models["small"].model, models["main"], _images(B, 1, seed=7)
    memory, cls = (np.asarray(x, np.float64) for x in encode(guided, images))
    visual = np.asarray(encode(plain, jnp.concatenate([images, images], axis=1))[0])
    assert memory.shape[1] == visual.shape[1] // 2 + NUM_OBSERVATIONS
    p = np.exp(cls - cls.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    states = np.asarray(guided.state_embed[...], np.float64)
    expected = np.einsum("boc,ocd->bod", p, states) + np.asarray(guided.observation_embed[...])
    np.testing.assert_allclose(memory[:, -NUM_OBSERVATIONS:], expected, rtol=1e-5, atol=1e-6)
    head = lm_loss_grad(guided, images, _tokens(B, 6)).cls_head[...]
    assert np.abs(np.asarray(head)).max() > 1e-6
    plain_head = lm_loss_grad(plain, _images(2, 2, seed=1), _tokens(2, 20)).cls_head[...]
    np.testing.assert_array_equal(np.asarray(plain_head), 0.0)


def test_dropout_on_in_train_mode_off_in_eval_mode(models):
    model, images, tokens = models["main"], _images(2, 2, seed=1), _tokens(2, 20)
    try:
        model.train()
        first, second = forward(model, images, tokens)[0], forward(model, images, tokens)[0]
        assert not np.allclose(first, second, atol=1e-3)
    finally:
        model.eval()
    np.testing.assert_array_equal(
        forward(model, images, tokens)[0], forward(model, images, tokens)[0]
    )


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def _log_prob(model, images: jax.Array, seqs: np.ndarray) -> np.ndarray:
    """Reference ``Σ_t log p(y_t | <bos>, y_<t)`` to the first ``<eos>``; ``seqs`` is ``(B, n)``."""
    n = seqs.shape[1]
    inputs = np.full((len(seqs), T), PAD_ID, np.int32)
    inputs[:, 0], inputs[:, 1:n] = BOS_ID, seqs[:, :-1]
    logp = _log_softmax(np.asarray(forward(model, images, inputs)[0])[:, :n])
    logp = np.take_along_axis(logp, seqs[..., None], axis=-1)[..., 0]
    eos = seqs == EOS_ID
    return np.where(np.cumsum(eos, axis=1) - eos == 0, logp, 0.0).sum(axis=1)


def _naive_greedy(model, images: jax.Array) -> np.ndarray:
    """Reference: the full model on the prefix (padded to ``T``; causal), argmax over generable."""
    tokens, done = np.full((len(images), T), PAD_ID, np.int32), np.zeros(len(images), bool)
    tokens[:, 0] = BOS_ID
    out = np.full_like(tokens, PAD_ID)
    for t in range(T):
        lm, cls = forward(model, images, tokens)
        assert lm.shape == (len(images), T, 6) and cls.shape == (len(images), NUM_OBSERVATIONS, 4)
        logits = np.array(lm[:, t])
        logits[:, [PAD_ID, BOS_ID]] = -np.inf
        out[:, t] = np.where(done, PAD_ID, logits.argmax(-1))
        done |= out[:, t] == EOS_ID
        if t + 1 < T:
            tokens[:, t + 1] = out[:, t]
    return out


def test_greedy_matches_naive_loop_and_beam_of_one(models):
    model, images = models["small"], _images(B, 1, seed=4)
    out = np.asarray(greedy(model, images, max_len=T))
    assert out.dtype == np.int32 and out.shape == (B, T)
    assert (out[:, -1] == PAD_ID).any(), "some decode should stop early"
    np.testing.assert_array_equal(out, _naive_greedy(model, images))
    np.testing.assert_array_equal(beam(model, images, beam_size=1, max_len=T), out)


def test_beam_scores_at_least_greedy(models):
    model, images = models["small"], _images(B, 1, seed=5)
    greedy_lp = _log_prob(model, images, np.asarray(greedy(model, images, max_len=T)))
    beam_lp = _log_prob(model, images, np.asarray(beam(model, images, beam_size=3, max_len=T)))
    assert (beam_lp >= greedy_lp - 1e-5).all()


def test_wide_beam_finds_the_brute_force_optimum(models):
    model, images = models["small"], _images(B, 1, seed=6)
    # Every sequence over the generable tokens, <pad> after the first <eos>, deduplicated.
    seqs = np.array(list(itertools.product(GENERABLE, repeat=L)), np.int32)
    after_eos = np.cumsum(seqs == EOS_ID, axis=1) - (seqs == EOS_ID) > 0
    seqs = np.unique(np.where(after_eos, PAD_ID, seqs), axis=0)
    seqs = np.concatenate([seqs, seqs[: -len(seqs) % B]])  # whole batches of B
    log_p = np.stack(
        [
            np.concatenate(
                [_log_prob(model, jnp.repeat(x[None], B, 0), c) for c in seqs.reshape(-1, B, L)]
            )
            for x in images
        ]
    )
    lengths = np.sum(seqs != PAD_ID, axis=1)
    # A beam as wide as all the L-token sequences is exhaustive, also with a length penalty.
    for alpha in (0.0, 1.0):
        best = beam(model, images, beam_size=len(GENERABLE) ** L, max_len=L, length_penalty=alpha)
        objective = log_p / ((5.0 + lengths) / 6.0) ** alpha
        np.testing.assert_array_equal(best, seqs[np.argmax(objective, axis=1)])
    assert (lengths[np.argmax(log_p, axis=1)] < L).any(), "some optimum should stop early"


@nnx.jit
def _train_step(model, optimizer, images, tokens, labels):
    targets = jnp.concatenate([tokens[:, 1:], jnp.full_like(tokens[:, :1], PAD_ID)], axis=1)
    mask = targets != PAD_ID

    def loss_fn(model):
        lm, cls = model(images, tokens)
        lm_nll = optax.softmax_cross_entropy_with_integer_labels(lm, targets)
        lm_loss = jnp.sum(jnp.where(mask, lm_nll, 0.0)) / jnp.sum(mask)
        return lm_loss + optax.softmax_cross_entropy_with_integer_labels(cls, labels).mean()

    loss, grads = nnx.value_and_grad(loss_fn)(model)
    optimizer.update(model, grads)
    return loss


def _losses(model, images, tokens, labels) -> tuple[float, float]:
    """Eval-mode masked next-token and classification cross-entropies (numpy)."""
    lm, cls = (np.asarray(x) for x in forward(model, images, tokens))
    targets = np.concatenate([tokens[:, 1:], np.full_like(tokens[:, :1], PAD_ID)], axis=1)
    lm_nll = -np.take_along_axis(_log_softmax(lm), targets[..., None], axis=-1)[..., 0]
    cls_nll = -np.take_along_axis(_log_softmax(cls), labels[..., None], axis=-1)
    return lm_nll[targets != PAD_ID].mean(), cls_nll.mean()


@pytest.mark.slow  # compiling the backward pass takes 10-20 s per backbone on a 2-core CPU
@pytest.mark.parametrize("backbone", BACKBONES)
def test_adam_steps_reduce_both_losses(backbone):
    model = build_model(backbone, vocab_size=20, rngs=nnx.Rngs(8), **TINY)
    optimizer = nnx.Optimizer(model, optax.adam(1e-3), wrt=nnx.Param)
    tokens = _tokens(2, 20)
    tokens[:, -2:] = EOS_ID, PAD_ID
    labels = np.asarray(jax.random.randint(jax.random.key(9), (2, NUM_OBSERVATIONS), 0, 4))
    batch = (_images(2, 2, seed=1), tokens, labels)
    model.eval()
    before = _losses(model, *batch)
    model.train()
    for _ in range(15):
        _train_step(model, optimizer, *batch)
    model.eval()
    after = _losses(model, *batch)
    assert after[0] < before[0] - 0.1 and after[1] < before[1] - 0.1


def test_build_model_rejects_unknown_backbone():
    with pytest.raises(ValueError, match="unknown backbone"):
        build_model("rnn", vocab_size=20, rngs=nnx.Rngs(0))
