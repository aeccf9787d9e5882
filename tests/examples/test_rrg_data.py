"""The synthetic RRG dataset (examples/rrg/synthetic.py) and its loader (examples/rrg/data.py)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from examples.rrg import synthetic
from examples.rrg.data import (
    LAYOUTS,
    NUM_VIEWS,
    Record,
    RRGDataset,
    Vocabulary,
    clean_report,
    label_classes,
    load_annotation,
    load_images,
    prefetch,
)
from examples.rrg.observations import (
    CLASS_BLANK,
    CLASS_NEGATIVE,
    CLASS_POSITIVE,
    CLASS_UNCERTAIN,
    NUM_OBSERVATIONS,
    OBSERVATIONS,
    SPECIAL_TOKENS,
)
from examples.rrg.synthetic import Finding

NUM_STUDIES, SIZE = 24, 32
CLASS_OF = {1: CLASS_POSITIVE, 0: CLASS_NEGATIVE, -1: CLASS_UNCERTAIN}


@pytest.fixture(scope="module")
def annotations(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny generated dataset per layout: layout -> annotation.json."""
    return {
        layout: synthetic.generate(
            tmp_path_factory.mktemp(layout), layout=layout, num_studies=NUM_STUDIES, image_size=SIZE
        )
        for layout in LAYOUTS
    }


def _files(annotation: Path) -> dict[str, bytes]:
    root = annotation.parent
    files = [*root.glob("images/*/*.png"), annotation]
    return {str(p.relative_to(root)): p.read_bytes() for p in files}


def test_generation_is_deterministic_per_seed(annotations: dict[str, Path], tmp_path: Path):
    reference = _files(annotations["iu_xray"])
    kwargs = {"layout": "iu_xray", "num_studies": NUM_STUDIES, "image_size": SIZE}
    assert _files(synthetic.generate(tmp_path / "same", seed=0, **kwargs)) == reference
    other = _files(synthetic.generate(tmp_path / "other", seed=1, **kwargs))
    assert other.keys() == reference.keys()
    assert other["annotation.json"] != reference["annotation.json"]
    assert sum(other[k] != reference[k] for k in reference) == len(reference)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_splits_ids_and_views(annotations: dict[str, Path], layout: str):
    path = annotations[layout]
    raw = json.loads(path.read_text())
    assert {split: len(entries) for split, entries in raw.items()} == {
        "train": 17,
        "val": 2,
        "test": 5,
    }
    ids = [e["id"] for entries in raw.values() for e in entries]
    assert len(set(ids)) == NUM_STUDIES
    for split, entries in raw.items():
        for e in entries:
            assert e["split"] == split and len(e["image_path"]) == NUM_VIEWS[layout]
            for rel in e["image_path"]:
                with Image.open(path.parent / rel) as image:
                    assert image.mode == "L" and image.size == (SIZE, SIZE)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_load_images_shape_and_scale(annotations: dict[str, Path], layout: str):
    path = annotations[layout]
    records = load_annotation(path, layout)["train"]
    images = np.stack([load_images(r, path.parent, 16) for r in records])
    assert images.shape == (17, NUM_VIEWS[layout], 16, 16, 1) and images.dtype == np.float32
    assert -1.5 < images.mean() < 0.5 and 0.4 < images.std() < 2.0


def test_load_images_normalisation_by_hand(tmp_path: Path):
    Image.fromarray(np.array([[0, 255], [255, 51]], np.uint8)).save(tmp_path / "x.png")
    image = load_images(Record("x", "", ("x.png",)), tmp_path, 2)
    # (0 - 0.449) / 0.226, (1 - 0.449) / 0.226, (0.2 - 0.449) / 0.226
    expected = [[[-1.986726], [2.438053]], [[2.438053], [-1.101770]]]
    np.testing.assert_allclose(image[0], expected, rtol=1e-5)


_GRID = np.meshgrid(*[(np.arange(64) + 0.5) / 32 - 1] * 2)


def _box(x0: float, x1: float, y0: float, y1: float) -> np.ndarray:
    x, y = _GRID
    return (x >= x0) & (x <= x1) & (y >= y0) & (y <= y1)


#: Findings, an image box (x0, x1, y0, y1), the least change of its mean (or its 98th percentile).
VISIBLE = {
    "cardiomegaly": ({"Cardiomegaly": Finding(size="marked")}, (0.45, 0.55, 0.1, 0.35), 0.08),
    "effusion": (
        {"Pleural Effusion": Finding(("right",), "moderate")}, (-0.65, -0.4, 0.15, 0.35), 0.12),
    "pneumothorax": (
        {"Pneumothorax": Finding(("right",), "moderate")}, (-0.7, -0.55, -0.5, -0.1), -0.02),
    "consolidation": ({"Consolidation": Finding(("left lower",))}, (0.3, 0.5, 0.15, 0.35), 0.05),
    "edema": ({"Edema": Finding(size="moderate")}, (-0.35, -0.15, -0.15, 0.1), 0.05),
    "mass": ({"Lung Lesion": Finding(("right upper",), "mass")}, (-0.5, -0.3, -0.45, -0.3), 0.05),
    "tube": (
        {"Support Devices": Finding(("endotracheal tube",))}, (-0.15, 0.15, -0.95, -0.55), 0.05),
}  # fmt: skip


@pytest.mark.parametrize("name", VISIBLE)
def test_findings_are_visible(name: str):
    """Frontal views with the finding differ from normal ones in the box, by the margin's sign."""
    findings, box, margin = VISIBLE[name]

    def average(f: dict[str, Finding]) -> float:
        values = []
        for i in range(16):
            rng = np.random.default_rng(i)
            pixels = synthetic.render_views(f, rng, layout="mimic_cxr", image_size=64)[0]
            region = pixels[_box(*box)] / 255
            values.append(np.percentile(region, 98) if name == "tube" else region.mean())
        return float(np.mean(values))

    change = average(findings) - average({})
    assert change > margin if margin > 0 else change < margin


def _has(phrases: tuple[str, ...], sentence: str) -> bool:
    return any(re.search(rf"\b{re.escape(p)}\b", sentence) for p in phrases)


def _check_labels(report: str, labels: dict[str, int], layout: str) -> None:
    """Each labelled observation is mentioned only as its label says; blank ones not at all."""
    assert labels.keys() <= set(OBSERVATIONS) and set(labels.values()) <= {1, 0, -1}
    sentences = clean_report(report, layout).removesuffix(" .").split(" . ")
    for obs in OBSERVATIONS[1:]:
        kinds = set()
        for s in sentences:
            if _has(synthetic.MENTIONS[obs], s):
                negated, uncertain = (
                    _has(synthetic.NEGATION_CUES, s),
                    _has(synthetic.UNCERTAINTY_CUES, s),
                )
                assert not (negated and uncertain), s
                kinds.add(0 if negated else -1 if uncertain else 1)
        assert kinds == ({labels[obs]} if obs in labels else set()), (obs, report, labels)
    finding = any(labels.get(o) in (1, -1) for o in OBSERVATIONS[1:-1])
    assert labels.get("No Finding") == (None if finding else 1)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_labels_match_report_text(annotations: dict[str, Path], layout: str):
    entries = [e for v in json.loads(annotations[layout].read_text()).values() for e in v]
    for e in entries:
        _check_labels(e["report"], e["labels"], layout)
    seen = set()
    for i in range(400):
        rng = np.random.default_rng([99, i])
        report, labels = synthetic.write_report(synthetic.sample_findings(rng), rng, layout)
        _check_labels(report, labels, layout)
        seen |= {o for o, label in labels.items() if label == 1}
    assert seen == set(OBSERVATIONS)  # every observation occurs positive in 400 studies


@pytest.mark.parametrize(
    ("raw", "layout", "cleaned"),
    [
        (
            "The heart is normal in size. The mediastinum is unremarkable. The lungs are clear.",
            "iu_xray",
            "the heart is normal in size . the mediastinum is unremarkable . the lungs are clear .",
        ),
        (
            "1. No acute cardiopulmonary process.  2. Stable cardiomegaly.",
            "mimic_cxr",
            "no acute cardiopulmonary process . stable cardiomegaly .",
        ),
        (
            "FINDINGS:\n PA and lateral views were obtained. No focal consolidation, effusion, "
            "or pneumothorax.. ___ The patient's heart size is normal.",
            "mimic_cxr",
            "findings pa and lateral views were obtained . no focal consolidation effusion or "
            "pneumothorax . the patients heart size is normal .",
        ),
        (
            "Heart size normal.. Lungs clear; no effusion! Nodule measures 1.5 cm (stable)",
            "iu_xray",
            "heart size normal . lungs clear no effusion nodule measures 15 cm stable .",
        ),
        (
            "Left-sided PICC/catheter in place. XXXX opacity at the bases 2. No pneumothorax",
            "iu_xray",
            "left-sided picccatheter in place . xxxx opacity at the bases . no pneumothorax .",
        ),
        ("  ", "iu_xray", ""),
    ],
)
def test_clean_report(raw: str, layout: str, cleaned: str):
    assert clean_report(raw, layout) == cleaned


def test_clean_report_rejects_unknown_layout():
    with pytest.raises(ValueError, match="layout"):
        clean_report("Normal.", "chexpert")


def test_vocabulary_by_hand(tmp_path: Path):
    reports = ["the heart is normal .", "the lungs are clear .", "the heart is enlarged ."]
    vocab = Vocabulary.build(reports, min_count=2)
    assert vocab.tokens == (*SPECIAL_TOKENS, ".", "heart", "is", "the")
    np.testing.assert_array_equal(
        vocab.encode("the heart is enlarged .", 8), [1, 7, 5, 6, 3, 4, 2, 0]
    )
    np.testing.assert_array_equal(vocab.encode("the heart is enlarged .", 4), [1, 7, 5, 6])
    assert vocab.decode([1, 7, 5, 6, 3, 4, 2, 7, 0]) == "the heart is ."
    vocab.save(tmp_path / "vocab.json")
    assert Vocabulary.load(tmp_path / "vocab.json").tokens == vocab.tokens
    with pytest.raises(ValueError, match="special"):
        Vocabulary(("heart", *SPECIAL_TOKENS))


@pytest.mark.parametrize("layout", LAYOUTS)
def test_encode_decode_round_trip(annotations: dict[str, Path], layout: str):
    records = [r for rs in load_annotation(annotations[layout], layout).values() for r in rs]
    vocab = Vocabulary.build([r.report for r in records], min_count=1)
    for r in records:
        assert r.report.endswith(" .") and vocab.decode(vocab.encode(r.report, 200)) == r.report


def test_label_classes_by_hand():
    got = label_classes(np.array([[1.0, 0.0, -1.0, np.nan]]))
    np.testing.assert_array_equal(
        got, [[CLASS_POSITIVE, CLASS_NEGATIVE, CLASS_UNCERTAIN, CLASS_BLANK]]
    )
    with pytest.raises(ValueError):
        label_classes(np.array([2.0]))


def test_dataset_labels_and_cache(annotations: dict[str, Path]):
    path = annotations["iu_xray"]
    records = load_annotation(path, "iu_xray")["train"]
    vocab = Vocabulary.build([r.report for r in records], min_count=1)
    data = RRGDataset.from_annotation(path, "train", layout="iu_xray", vocab=vocab, image_size=16)
    assert data.images.shape == (17, 2, 16, 16, 1) and data.images.dtype == np.float32
    assert data.tokens.shape == (17, 60) and data.tokens.dtype == np.int32
    assert data.labels.shape == (17, NUM_OBSERVATIONS) and data.labels.dtype == np.int32
    for row, r in zip(data.labels, records, strict=True):
        assert r.labels is not None
        expected = [CLASS_OF[r.labels[o]] if o in r.labels else CLASS_BLANK for o in OBSERVATIONS]
        np.testing.assert_array_equal(row, expected)
    assert path.with_name("annotation_train_16px.npz").exists()
    again = RRGDataset.from_annotation(path, "train", layout="iu_xray", vocab=vocab, image_size=16)
    np.testing.assert_array_equal(again.images, data.images)

    seen: list[list[str]] = []

    def labeler(reports: list[str]) -> np.ndarray:
        seen.append(reports)
        return np.tile([np.nan, 1, 0, -1] * 3 + [1, 0], (len(reports), 1))

    test = RRGDataset.from_annotation(
        path, "test", layout="iu_xray", vocab=vocab, image_size=16, labeler=labeler, cache=False
    )
    assert seen == [list(test.reports)] and test.images.shape[0] == 5
    assert test.labels[:, :4].tolist() == [[CLASS_BLANK, CLASS_POSITIVE, CLASS_NEGATIVE, 3]] * 5


def test_mimic_dataset_has_one_view(annotations: dict[str, Path]):
    path = annotations["mimic_cxr"]
    vocab = Vocabulary.build([r.report for r in load_annotation(path, "mimic_cxr")["train"]], 3)
    data = RRGDataset.from_annotation(path, "val", layout="mimic_cxr", vocab=vocab, image_size=8)
    assert data.images.shape == (2, 1, 8, 8, 1) and data.tokens.shape == (2, 100)


def test_batches_cover_each_example_once(annotations: dict[str, Path]):
    path = annotations["iu_xray"]
    vocab = Vocabulary.build([r.report for r in load_annotation(path, "iu_xray")["train"]], 1)
    data = RRGDataset.from_annotation(path, "train", layout="iu_xray", vocab=vocab, image_size=8)
    for shuffle in (False, True):
        batches = list(data.batches(5, shuffle=shuffle, seed=3))
        assert [len(b["index"]) for b in batches] == [5, 5, 5, 2]
        index = np.concatenate([b["index"] for b in batches])
        assert sorted(index.tolist()) == list(range(17))
        for b in batches:
            np.testing.assert_array_equal(b["images"], data.images[b["index"]])
            np.testing.assert_array_equal(b["tokens"], data.tokens[b["index"]])
            np.testing.assert_array_equal(b["labels"], data.labels[b["index"]])
    full = [b["index"] for b in data.batches(5, shuffle=True, seed=3, drop_last=True)]
    assert [len(i) for i in full] == [5, 5, 5] and len(set(np.concatenate(full).tolist())) == 15
    orders = [
        np.concatenate([b["index"] for b in data.batches(17, shuffle=True, seed=s)]) for s in (0, 1)
    ]
    assert orders[0].tolist() != orders[1].tolist()


def test_prefetch_keeps_order_and_raises():
    assert list(prefetch(iter(range(50)), size=2)) == list(range(50))
    for item in prefetch(iter(range(1000)), size=2):
        if item == 3:
            break  # closing early must not hang

    def failing():
        yield 1
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        list(prefetch(failing()))


def test_canonical_wording_changes_only_the_text(tmp_path: Path):
    """Same seed: identical images and positive/uncertain labels; each positive observation is
    said with one sentence across studies (varied wording uses several)."""
    kwargs = {"layout": "iu_xray", "num_studies": 200, "image_size": 16, "seed": 5}
    varied = synthetic.generate(tmp_path / "varied", **kwargs)
    canonical = synthetic.generate(tmp_path / "canonical", wording="canonical", **kwargs)
    files_v, files_c = _files(varied), _files(canonical)
    assert {k: v for k, v in files_v.items() if k.endswith(".png")} == {
        k: v for k, v in files_c.items() if k.endswith(".png")
    }

    def entries(path: Path) -> list[dict]:
        return [e for v in json.loads(path.read_text()).values() for e in v]

    def findings(e: dict) -> dict:
        return {o: v for o, v in e["labels"].items() if v in (1, -1) and o != "No Finding"}

    ev, ec = entries(varied), entries(canonical)
    assert [findings(e) for e in ev] == [findings(e) for e in ec]
    for e in ec:
        _check_labels(e["report"], e["labels"], "iu_xray")
    phrasings: dict[str, dict[str, set[str]]] = {"varied": {}, "canonical": {}}
    for name, es in (("varied", ev), ("canonical", ec)):
        for e in es:
            positive = [o for o, v in findings(e).items() if v == 1 and o != "Support Devices"]
            if len(positive) == 1 and e["labels"].get("Support Devices") is None:
                first = e["report"].split(". ")[0]
                phrasings[name].setdefault(positive[0], set()).add(first)
    # Cardiomegaly (heart topic, said first) is said one way canonically, several ways otherwise.
    assert len(phrasings["canonical"]["Cardiomegaly"]) == 1
    assert len(phrasings["varied"]["Cardiomegaly"]) > 1
    with pytest.raises(ValueError, match="wording"):
        synthetic.generate(tmp_path / "bad", wording="free", **kwargs)
