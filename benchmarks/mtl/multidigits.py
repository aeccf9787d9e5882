r"""MultiDigits: Sener and Koltun's MultiMNIST built from scikit-learn's 8×8 digits, no download.

Two digits are overlaid on a ``canvas × canvas`` image by the pixelwise maximum, the left one
shifted up-left (top-left corner at $(r, c)$, $r, c \in \{0, 1\}$) and the right one
down-right (corner at $(n - 8 - r', n - 8 - c')$, $r', c' \in \{0, 1\}$); the tasks classify the
left and the right digit. The 1797 source digits are split into train/val/test first and every
pair is composed inside one split, so no source image is shared between splits. Everything is a
function of the seed.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np

SPLITS = ("train", "val", "test")
DIGIT = 8  # side of a source digit


@dataclasses.dataclass(frozen=True)
class DigitsSize:
    """Pairs per split, the canvas side and the fraction of source digits per split."""

    train: int = 4000
    val: int = 1000
    test: int = 2000
    canvas: int = 12
    fractions: tuple[float, float, float] = (0.6, 0.2, 0.2)


@functools.lru_cache(maxsize=1)
def source_digits() -> tuple[np.ndarray, np.ndarray]:
    """The 1797 bundled 8×8 digits scaled to [0, 1] (N, 8, 8) and their labels (N,)."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.asarray(bunch.images, np.float32) / 16.0
    return images, np.asarray(bunch.target, np.int32)


def split_sources(seed: int, num: int, fractions: tuple[float, ...]) -> dict[str, np.ndarray]:
    """Disjoint index sets of the ``num`` source digits, a seeded permutation cut by fractions."""
    perm = np.random.default_rng([seed, 0]).permutation(num)
    cuts = np.round(np.cumsum(fractions[:-1]) / sum(fractions) * num).astype(int)
    return dict(zip(SPLITS, np.split(perm, cuts), strict=True))


def compose(left: np.ndarray, right: np.ndarray, offsets: np.ndarray, canvas: int) -> np.ndarray:
    """Overlay ``left`` (N, 8, 8) at ``offsets[:, :2]`` and ``right`` at
    ``canvas - 8 - offsets[:, 2:]`` by the pixelwise maximum; (N, canvas, canvas)."""
    out = np.zeros((len(left), canvas, canvas), np.float32)
    for i, (r, c, r2, c2) in enumerate(offsets):
        out[i, r : r + DIGIT, c : c + DIGIT] = left[i]
        r2, c2 = canvas - DIGIT - r2, canvas - DIGIT - c2
        out[i, r2 : r2 + DIGIT, c2 : c2 + DIGIT] = np.maximum(
            out[i, r2 : r2 + DIGIT, c2 : c2 + DIGIT], right[i]
        )
    return out


def build(seed: int, size: DigitsSize = DigitsSize()) -> dict[str, dict[str, np.ndarray]]:
    """The three splits: ``images`` (N, canvas, canvas) float32, ``labels`` (N, 2) int32 (left,
    right) and ``sources`` (N, 2), the indices of the two source digits in ``load_digits``."""
    if size.canvas < DIGIT + 1:
        raise ValueError(f"`canvas` must be at least {DIGIT + 1}; got {size.canvas}.")
    images, labels = source_digits()
    pools = split_sources(seed, len(images), size.fractions)
    out = {}
    for i, split in enumerate(SPLITS):
        rng = np.random.default_rng([seed, i + 1])
        n = getattr(size, split)
        pairs = rng.choice(pools[split], size=(n, 2), replace=True)
        offsets = rng.integers(0, 2, size=(n, 4))
        out[split] = {
            "images": compose(images[pairs[:, 0]], images[pairs[:, 1]], offsets, size.canvas),
            "labels": labels[pairs].astype(np.int32),
            "sources": pairs.astype(np.int32),
        }
    return out
