"""Generate reports for a split and score them (CE from the labeler, BLEU/ROUGE-L/CIDEr-D)."""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from examples.rrg.data import RRGDataset, Vocabulary
from examples.rrg.decoding import beam_decode, greedy_decode
from examples.rrg.metrics import evaluate_reports


@functools.partial(nnx.jit, static_argnames=("beam_size", "max_len"))
def _decode(model: Any, images: jax.Array, beam_size: int, max_len: int) -> jax.Array:
    if beam_size == 1:
        return greedy_decode(model, images, max_len)
    return beam_decode(model, images, beam_size=beam_size, max_len=max_len)


def generate(
    model: Any,
    dataset: RRGDataset,
    vocab: Vocabulary,
    *,
    batch_size: int,
    beam_size: int = 3,
    max_len: int | None = None,
    limit: int | None = None,
) -> list[str]:
    """Reports for the first ``limit`` (default all) studies; the last batch is padded so every
    call has one shape (one compilation)."""
    n = len(dataset) if limit is None else min(limit, len(dataset))
    length = dataset.tokens.shape[1] - 1 if max_len is None else max_len
    texts: list[str] = []
    for start in range(0, n, batch_size):
        index = np.arange(start, min(start + batch_size, n))
        padded = np.pad(index, (0, batch_size - len(index)), mode="edge")
        ids = _decode(model, jnp.asarray(dataset.images[padded]), beam_size, length)
        texts.extend(vocab.decode(row) for row in np.asarray(ids)[: len(index)])
    return texts


def evaluate(
    model: Any,
    dataset: RRGDataset,
    vocab: Vocabulary,
    *,
    batch_size: int,
    beam_size: int = 3,
    limit: int | None = None,
) -> tuple[dict[str, float | None], list[str]]:
    """Metrics of the generated reports against the references, and the generated reports."""
    generated = generate(
        model, dataset, vocab, batch_size=batch_size, beam_size=beam_size, limit=limit
    )
    references = list(dataset.reports[: len(generated)])
    return evaluate_reports(generated, references), generated
