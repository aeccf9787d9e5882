"""R2Gen-format RRG data: report cleaning, vocabulary, images, in-memory splits and batches.

An ``annotation.json`` maps each split (``train``/``val``/``test``) to entries ``{"id", "report",
"image_path": [relative paths], "split"}``; IU X-Ray uses the first two images (frontal, lateral),
MIMIC-CXR the first one. Images are read as grayscale, resized (bilinear) to ``image_size`` and
normalised as ``(pixel / 255 - IMAGE_MEAN) / IMAGE_STD``, where the constants are the means of
ImageNet's per-channel mean and std (R2Gen normalises its RGB inputs with ImageNet statistics).
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import re
import threading
import zipfile
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from PIL import Image

from examples.rrg.observations import (
    BOS_ID,
    CLASS_BLANK,
    CLASS_NEGATIVE,
    CLASS_POSITIVE,
    CLASS_UNCERTAIN,
    EOS_ID,
    NUM_OBSERVATIONS,
    OBSERVATIONS,
    PAD_ID,
    SPECIAL_TOKENS,
    UNK_ID,
)

LAYOUTS = ("iu_xray", "mimic_cxr")
SPLITS = ("train", "val", "test")
NUM_VIEWS = {"iu_xray": 2, "mimic_cxr": 1}
#: R2Gen's vocabulary frequency thresholds and maximum sequence lengths.
MIN_COUNT = {"iu_xray": 3, "mimic_cxr": 10}
MAX_LEN = {"iu_xray": 60, "mimic_cxr": 100}
#: Grayscale normalisation: means of ImageNet's RGB means (0.485, 0.456, 0.406) and stds.
IMAGE_MEAN, IMAGE_STD = 0.449, 0.226

#: A labeler maps N reports to an (N, 14) float array of 1 / 0 / -1 / NaN (blank).
Labeler = Callable[[list[str]], np.ndarray]
T = TypeVar("T")

_ENUMERATION = re.compile(r"(?:^|\s)\d{1,2}\.\s")
_SENTENCE_END = re.compile(r"\.(?:\s+|$)")
_DROPPED = re.compile(r"[^a-z0-9\- ]")


def _check_layout(layout: str) -> None:
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")


def clean_report(text: str, layout: str) -> str:
    """R2Gen's report cleaning: ``"sentence one . sentence two ."``, lowercase.

    Enumerations ("1. ", " 2. ") become sentence breaks, sentences end at a period followed by
    whitespace, and every character but letters, digits, hyphens and spaces is deleted (so
    "patient's" -> "patients", "1.5" -> "15"); empty sentences are dropped. R2Gen's IU X-Ray and
    MIMIC-CXR cleaners differ only in newline and underscore handling, which this subsumes, so
    ``layout`` is only validated.
    """
    _check_layout(layout)
    text = _ENUMERATION.sub(" . ", " ".join(text.lower().split()))
    sentences = (" ".join(_DROPPED.sub("", s).split()) for s in _SENTENCE_END.split(text))
    kept = [s for s in sentences if s]
    return " . ".join(kept) + " ." if kept else ""


class Vocabulary:
    """Token <-> id map; the special tokens come first with their fixed ids."""

    def __init__(self, tokens: Sequence[str]) -> None:
        if tuple(tokens[: len(SPECIAL_TOKENS)]) != SPECIAL_TOKENS or len(set(tokens)) != len(
            tokens
        ):
            raise ValueError("tokens must be unique and start with the special tokens")
        self.tokens = tuple(tokens)
        self.ids = {t: i for i, t in enumerate(self.tokens)}

    @classmethod
    def build(cls, reports: Iterable[str], min_count: int) -> Vocabulary:
        """The tokens of ``reports`` (cleaned) seen at least ``min_count`` times, sorted."""
        counts = Counter(token for report in reports for token in report.split())
        kept = sorted(t for t, c in counts.items() if c >= min_count and t not in SPECIAL_TOKENS)
        return cls(SPECIAL_TOKENS + tuple(kept))

    def __len__(self) -> int:
        return len(self.tokens)

    def encode(self, text: str, max_len: int) -> np.ndarray:
        """``<bos> tokens <eos>`` cut to ``max_len`` (R2Gen drops the ``<eos>`` of a cut report),
        padded with ``<pad>``; int32 ``(max_len,)``; unknown words become ``<unk>``."""
        ids = [BOS_ID, *(self.ids.get(t, UNK_ID) for t in text.split()), EOS_ID][:max_len]
        out = np.full(max_len, PAD_ID, np.int32)
        out[: len(ids)] = ids
        return out

    def decode(self, ids: Iterable[int]) -> str:
        """The words before the first ``<eos>``, special tokens skipped."""
        words = []
        for i in np.asarray(ids).tolist():
            if i == EOS_ID:
                break
            if i >= len(SPECIAL_TOKENS):
                words.append(self.tokens[i])
        return " ".join(words)

    def save(self, path: str | Path) -> None:
        """Write the token list as JSON."""
        Path(path).write_text(json.dumps({"tokens": list(self.tokens)}))

    @classmethod
    def load(cls, path: str | Path) -> Vocabulary:
        """Read a vocabulary written by :meth:`save`."""
        return cls(json.loads(Path(path).read_text())["tokens"])


@dataclass(frozen=True)
class Record:
    """One annotation entry: cleaned report, the image paths used, optional ground-truth labels."""

    id: str
    report: str
    image_paths: tuple[str, ...]
    labels: Mapping[str, int] | None = None


def load_annotation(path: str | Path, layout: str) -> dict[str, list[Record]]:
    """The splits of an ``annotation.json``, reports cleaned, ``NUM_VIEWS[layout]`` images each."""
    _check_layout(layout)
    views = NUM_VIEWS[layout]
    splits: dict[str, list[Record]] = {}
    for split, entries in json.loads(Path(path).read_text()).items():
        splits[split] = []
        for e in entries:
            if len(e["image_path"]) < views:
                raise ValueError(f"{e['id']}: {layout} needs {views} images, got {e['image_path']}")
            report = clean_report(e["report"], layout)
            paths = tuple(e["image_path"][:views])
            splits[split].append(Record(str(e["id"]), report, paths, e.get("labels")))
    return splits


def _read_pixels(record: Record, root: Path, image_size: int) -> np.ndarray:
    views = []
    for path in record.image_paths:
        with Image.open(root / path) as image:
            gray = image.convert("L").resize((image_size, image_size), Image.Resampling.BILINEAR)
            views.append(np.asarray(gray))
    return np.stack(views)


def normalise(pixels: np.ndarray) -> np.ndarray:
    """uint8 ``(..., H, W)`` -> float32 ``(..., H, W, 1)`` as ``(p / 255 - mean) / std``."""
    scaled = pixels.astype(np.float32) / np.float32(255.0)
    return ((scaled - np.float32(IMAGE_MEAN)) / np.float32(IMAGE_STD))[..., None]


def load_images(record: Record, root: str | Path, image_size: int) -> np.ndarray:
    """The record's views as float32 ``(V, image_size, image_size, 1)``, normalised."""
    return normalise(_read_pixels(record, Path(root), image_size))


def _read_all(records: Sequence[Record], root: Path, image_size: int) -> np.ndarray:
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        return np.stack(list(pool.map(lambda r: _read_pixels(r, root, image_size), records)))


def _cached_pixels(
    path: Path, split: str, records: Sequence[Record], image_size: int
) -> np.ndarray:
    """uint8 ``(N, V, H, W)`` pixels, cached next to the annotation for its exact bytes."""
    cache = path.with_name(f"{path.stem}_{split}_{image_size}px.npz")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    try:
        with np.load(cache) as stored:
            if str(stored["digest"]) == digest:
                return stored["pixels"]
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        pass
    pixels = _read_all(records, path.parent, image_size)
    partial = cache.with_name(f"{cache.stem}.{os.getpid()}.{threading.get_ident()}.tmp.npz")
    np.savez(partial, pixels=pixels, digest=np.array(digest))
    os.replace(partial, cache)
    return pixels


def label_classes(labels: np.ndarray) -> np.ndarray:
    """1 / 0 / -1 / NaN labels -> int32 head classes (positive / negative / uncertain / blank)."""
    labels = np.asarray(labels, np.float64)
    if not np.all(np.isnan(labels) | np.isin(labels, (1, 0, -1))):
        raise ValueError("labels must be 1, 0, -1 or NaN")
    out = np.full(labels.shape, CLASS_BLANK, np.int32)
    out[labels == 1], out[labels == 0], out[labels == -1] = (
        CLASS_POSITIVE,
        CLASS_NEGATIVE,
        CLASS_UNCERTAIN,
    )
    return out


def record_labels(records: Sequence[Record]) -> np.ndarray:
    """The records' stored ``labels`` as an ``(N, 14)`` float array (NaN blank)."""
    out = np.full((len(records), NUM_OBSERVATIONS), np.nan)
    for row, record in zip(out, records, strict=True):
        if record.labels is None:
            raise ValueError(f"{record.id} has no 'labels'; pass a labeler")
        for obs, label in record.labels.items():
            row[OBSERVATIONS.index(obs)] = label
    return out


@dataclass(frozen=True, eq=False)
class RRGDataset:
    """One split in memory: images ``(N, V, H, W, 1)`` float32, tokens ``(N, T)`` int32 and
    head classes ``(N, 14)`` int32 of the reference reports."""

    ids: tuple[str, ...]
    reports: tuple[str, ...]
    images: np.ndarray
    tokens: np.ndarray
    labels: np.ndarray

    @classmethod
    def from_annotation(
        cls,
        path: str | Path,
        split: str,
        *,
        layout: str,
        vocab: Vocabulary,
        image_size: int = 64,
        max_len: int | None = None,
        labeler: Labeler | None = None,
        cache: bool = True,
    ) -> RRGDataset:
        """Load ``split``; labels from ``labeler`` on the cleaned reports, else the entries'
        ``labels``. With ``cache``, pixels are kept in ``<annotation>_<split>_<size>px.npz``."""
        path = Path(path)
        records = load_annotation(path, layout)[split]
        if not records:
            raise ValueError(f"split {split!r} of {path} is empty")
        if cache:
            pixels = _cached_pixels(path, split, records, image_size)
        else:
            pixels = _read_all(records, path.parent, image_size)
        reports = [r.report for r in records]
        raw = np.asarray(labeler(reports)) if labeler else record_labels(records)
        if raw.shape != (len(records), NUM_OBSERVATIONS):
            raise ValueError(f"labels must have shape {(len(records), NUM_OBSERVATIONS)}")
        length = max_len or MAX_LEN[layout]
        tokens = np.stack([vocab.encode(r, length) for r in reports])
        ids = tuple(r.id for r in records)
        return cls(ids, tuple(reports), normalise(pixels), tokens, label_classes(raw))

    def __len__(self) -> int:
        return len(self.ids)

    def batches(
        self,
        batch_size: int,
        *,
        shuffle: bool = False,
        seed: int = 0,
        drop_last: bool = False,
        rows: slice | None = None,
    ) -> Iterator[dict[str, np.ndarray]]:
        """One epoch of ``{"images", "tokens", "labels", "index"}`` batches (``index``: rows).

        ``rows`` keeps only that slice of every batch (the order of the whole batches is
        unchanged): a process of a multi-host job loads only its part of each global batch.
        """
        n = len(self)
        order = np.random.default_rng(seed).permutation(n) if shuffle else np.arange(n)
        stop = n - n % batch_size if drop_last else n
        for start in range(0, stop, batch_size):
            index = order[start : start + batch_size]
            if rows is not None:
                index = index[rows]
            yield {
                "images": self.images[index],
                "tokens": self.tokens[index],
                "labels": self.labels[index],
                "index": index,
            }


def prefetch(iterable: Iterable[T], size: int = 2) -> Iterator[T]:
    """Iterate ``iterable`` in a background thread, up to ``size`` items ahead."""
    items: queue.Queue[tuple[bool, Any]] = queue.Queue(maxsize=size)
    stop = threading.Event()

    def put(item: tuple[bool, Any]) -> bool:
        while not stop.is_set():
            try:
                items.put(item, timeout=0.05)
                return True
            except queue.Full:
                pass
        return False

    def work() -> None:
        try:
            for item in iterable:
                if not put((True, item)):
                    return
        except Exception as error:  # re-raised in the consumer
            put((False, error))
            return
        put((False, None))

    worker = threading.Thread(target=work, daemon=True)
    worker.start()
    try:
        while True:
            ok, item = items.get()
            if ok:
                yield item
            elif item is None:
                return
            else:
                raise item
    finally:
        stop.set()
        worker.join()
