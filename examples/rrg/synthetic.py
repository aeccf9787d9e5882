"""A seeded synthetic chest X-ray dataset in R2Gen's ``annotation.json`` format.

Each study samples findings from a few latent conditions (heart failure: cardiomegaly, edema and
effusions; infection: consolidation, opacity, pneumonia; intensive care: devices, pneumothorax,
fracture) plus independent background rates, so findings are rare (about 60% of studies are
normal) and correlated. The findings are drawn into the images (frontal, and lateral for
``iu_xray``) and written into a report of template sentences: positive, uncertain ("possible ...")
or negated ("no ..."), mixed with frequent normal sentences. The entry's ``"labels"`` (observation
-> 1 / 0 / -1, blank omitted) are what the text says: a sentence negating an observation gives
``0``, "the lungs are clear" gives Lung Opacity ``0`` (as :mod:`examples.rrg.labeler` reads it),
and No Finding is ``1`` exactly when no finding other than Support Devices is present.

The wording lives in module constants (:data:`MENTIONS`, :data:`POSITIVE_SENTENCES`, ...) so a
labeler can be checked against them. Run ``python -m examples.rrg.synthetic --help``.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from examples.rrg.data import LAYOUTS, NUM_VIEWS, SPLITS
from examples.rrg.drawing import render_views

# fmt: off
#: Mention phrases per observation in the generated text (whole words; No Finding is derived).
#: "lungs" is Lung Opacity's subject in "the lungs are clear" (negative), as the labeler reads it.
MENTIONS: Mapping[str, tuple[str, ...]] = {
    "Enlarged Cardiomediastinum": ("mediastinum", "mediastinal", "cardiomediastinal"),
    "Cardiomegaly": ("cardiomegaly", "heart", "cardiac silhouette"),
    "Lung Lesion": ("nodule", "mass"),
    "Lung Opacity": ("opacity", "opacities", "infiltrate", "airspace disease", "lungs"),
    "Edema": ("edema",), "Consolidation": ("consolidation",), "Pneumonia": ("pneumonia",),
    "Atelectasis": ("atelectasis",), "Pneumothorax": ("pneumothorax",),
    "Pleural Effusion": ("effusion", "effusions", "pleural fluid"),
    "Pleural Other": ("pleural thickening",), "Fracture": ("fracture",),
    "Support Devices": (
        "endotracheal tube", "nasogastric tube", "enteric tube", "catheter", "pacemaker"),
}
#: Cue words of negated and of uncertain sentences (no positive sentence contains any).
NEGATION_CUES = ("no", "normal", "unremarkable", "clear")
UNCERTAINTY_CUES = ("possible", "cannot exclude", "cannot be excluded", "questionable", "may")

#: Positive sentences; ``{side}`` right/left/bilateral, ``{zone}`` e.g. "right lower lobe",
#: ``{size}`` the finding's size word, ``{s}``/``{is}`` plural forms for bilateral findings.
POSITIVE_SENTENCES: Mapping[str, tuple[str, ...]] = {
    "Enlarged Cardiomediastinum": (
        "the mediastinum is widened", "there is mediastinal widening",
        "the cardiomediastinal silhouette is enlarged", "widened mediastinum"),
    "Cardiomegaly": (
        "the heart is enlarged", "heart size is enlarged", "there is {size} cardiomegaly",
        "{size} cardiomegaly", "the cardiac silhouette is enlarged", "enlarged heart"),
    "Lung Lesion": (
        "there is a {lesion} in the {zone}", "{zone} {lesion}", "a {lesion} is seen in the {zone}"),
    "Lung Opacity": (
        "there is {zone} airspace opacity", "patchy opacity in the {zone}", "{zone} opacities",
        "{zone} infiltrate"),
    "Edema": (
        "there is {size} pulmonary edema", "{size} interstitial edema",
        "findings are consistent with {size} pulmonary edema"),
    "Consolidation": (
        "there is {zone} consolidation", "focal consolidation in the {zone}",
        "{zone} airspace consolidation"),
    "Pneumonia": ("findings are consistent with {zone} pneumonia", "{zone} pneumonia"),
    "Atelectasis": (
        "{side} basilar atelectasis", "linear atelectasis at the {side} lung base{s}",
        "there is {side} subsegmental atelectasis"),
    "Pneumothorax": (
        "there is a {size} {side} pneumothorax", "{size} {side} apical pneumothorax",
        "{side} pneumothorax is present"),
    "Pleural Effusion": (
        "there {is} {size} {side} pleural effusion{s}", "{size} {side} pleural effusion{s}",
        "there is {side} pleural fluid"),
    "Pleural Other": ("{side} apical pleural thickening", "there is {side} pleural thickening"),
    "Fracture": (
        "there is an acute {side} rib fracture", "displaced fracture of the {side} {ordinal} rib",
        "{side} rib fracture"),
}
#: One sentence per device (the Support Devices finding lists its devices).
DEVICE_SENTENCES: Mapping[str, tuple[str, ...]] = {
    "endotracheal tube": (
        "endotracheal tube terminates above the carina", "endotracheal tube in place",
        "an endotracheal tube is in standard position"),
    "nasogastric tube": (
        "nasogastric tube extends below the diaphragm", "nasogastric tube in place",
        "an enteric tube courses into the stomach"),
    "central venous catheter": (
        "right internal jugular catheter terminates in the superior vena cava",
        "a right-sided central venous catheter is in place"),
    "pacemaker": (
        "left-sided pacemaker with leads in the right atrium and right ventricle",
        "a dual-chamber pacemaker is in place"),
}
#: Bare mentions, for negated, uncertain and impression sentences; keys are the pathologies.
BARE_MENTIONS: Mapping[str, tuple[str, ...]] = {
    "Enlarged Cardiomediastinum": ("mediastinal widening",), "Cardiomegaly": ("cardiomegaly",),
    "Lung Lesion": ("pulmonary nodule", "nodule", "mass"),
    "Lung Opacity": ("airspace opacity", "focal opacity"), "Edema": ("pulmonary edema", "edema"),
    "Consolidation": ("consolidation", "focal consolidation", "airspace consolidation"),
    "Pneumonia": ("pneumonia",), "Atelectasis": ("atelectasis",), "Pneumothorax": ("pneumothorax",),
    "Pleural Effusion": ("pleural effusion", "effusion"), "Pleural Other": ("pleural thickening",),
    "Fracture": ("rib fracture", "fracture"),
}
NEGATED_TEMPLATES = ("no {m}", "there is no {m}", "no evidence of {m}")
UNCERTAIN_TEMPLATES = (
    "possible {m}", "cannot exclude {m}", "{m} cannot be excluded", "questionable {m}",
    "findings may represent {m}")

_C, _EC, _LO = {"Cardiomegaly": 0}, {"Enlarged Cardiomediastinum": 0}, {"Lung Opacity": 0}
_PTX_EFF = {"Pneumothorax": 0, "Pleural Effusion": 0}
#: Normal sentences per report topic, with the labels they imply.
NORMAL_SENTENCES: Mapping[str, tuple[tuple[str, Mapping[str, int]], ...]] = {
    "view": (
        ("pa and lateral views of the chest were obtained", {}),
        ("single frontal view of the chest", {}), ("portable ap view of the chest", {})),
    "heart": (
        ("heart size is normal", _C), ("the heart is normal in size", _C),
        ("normal heart size", _C), ("the cardiac silhouette is normal in size", _C),
        ("the heart size and mediastinal contours are normal", {**_C, **_EC}),
        ("the cardiomediastinal silhouette is within normal limits", _EC),
        ("the cardiomediastinal silhouette and pulmonary vasculature are within normal limits",
         _EC)),
    "mediastinum": (
        ("the mediastinum is unremarkable", _EC), ("mediastinal contours are normal", _EC)),
    "lungs": (
        ("the lungs are clear", _LO), ("lungs are clear bilaterally", _LO),
        ("the lungs are well expanded and clear", _LO), ("clear lungs", _LO),
        ("there is no focal airspace disease", _LO)),
    "pleura": (
        ("there is no pneumothorax or pleural effusion", _PTX_EFF),
        ("no pleural effusion or pneumothorax", _PTX_EFF),
        ("there is no focal consolidation, pleural effusion, or pneumothorax",
         {"Consolidation": 0, **_PTX_EFF})),
    "consolidation": (
        ("no focal airspace consolidation", {"Consolidation": 0}),
        ("no evidence of pneumonia", {"Pneumonia": 0})),
    "bones": (
        ("no acute bony abnormality", {}), ("the osseous structures are intact", {}),
        ("no displaced rib fracture", {"Fracture": 0})),
    "impression": (
        ("no acute cardiopulmonary abnormality", {}), ("no acute cardiopulmonary process", {}),
        ("no active disease", {})),
}
TOPICS = ("view", "devices", "heart", "mediastinum", "lungs", "pleura", "consolidation", "bones")
TOPIC = {"Enlarged Cardiomediastinum": "mediastinum", "Cardiomegaly": "heart", "Fracture": "bones"}
TOPIC |= dict.fromkeys(("Pneumothorax", "Pleural Effusion", "Pleural Other"), "pleura")
PATHOLOGIES = tuple(BARE_MENTIONS)
#: Findings that rule out a topic's normal sentences (besides their label conflicts).
TOPIC_BLOCKERS = {
    "heart": ("Cardiomegaly", "Enlarged Cardiomediastinum", "Edema"),
    "lungs": ("Lung Lesion", "Lung Opacity", "Edema", "Consolidation", "Pneumonia", "Atelectasis",
              "Pneumothorax", "Pleural Effusion"),
    "bones": ("Fracture",),
    "impression": PATHOLOGIES,
}
#: Probability of a topic's normal sentence, per layout.
NORMAL_RATE = {
    "iu_xray": {"view": 0, "heart": 0.85, "mediastinum": 0.35, "lungs": 0.85, "pleura": 0.75,
                "consolidation": 0.25, "bones": 0.4, "impression": 0.6},
    "mimic_cxr": {"view": 0.7, "heart": 0.8, "mediastinum": 0.4, "lungs": 0.7, "pleura": 0.85,
                  "consolidation": 0.5, "bones": 0.3, "impression": 0.5},
}
#: How reports are worded (:func:`write_report`).
WORDINGS = ("varied", "canonical")
#: Probability of negating an unmentioned pathology, and of an impression for an abnormal study.
NEGATION_RATE, IMPRESSION_RATE = {"iu_xray": 0.04, "mimic_cxr": 0.08}, 0.6

#: Rates of the latent conditions: heart failure, infection, intensive care.
LATENT_RATES = (0.10, 0.10, 0.06)
#: Probability of each finding: base + weights . latents.
FINDING_RATES: Mapping[str, tuple[float, float, float, float]] = {
    "Enlarged Cardiomediastinum": (0.02, 0.10, 0, 0), "Cardiomegaly": (0.06, 0.80, 0, 0),
    "Lung Lesion": (0.035, 0, 0, 0), "Lung Opacity": (0.03, 0.10, 0.35, 0),
    "Edema": (0.01, 0.65, 0, 0), "Consolidation": (0.02, 0, 0.55, 0),
    "Pneumonia": (0.005, 0, 0.45, 0), "Atelectasis": (0.06, 0, 0.20, 0.25),
    "Pneumothorax": (0.012, 0, 0, 0.25), "Pleural Effusion": (0.03, 0.55, 0.20, 0.10),
    "Pleural Other": (0.02, 0, 0, 0), "Fracture": (0.02, 0, 0, 0.20),
    "Support Devices": (0.05, 0.25, 0, 0.90),
}
#: Probability that a present finding is reported uncertain (and drawn at half strength).
UNCERTAIN_RATE = {"Pneumonia": 0.6, "Fracture": 0.2, "Support Devices": 0.0}
SIZES = {
    "Cardiomegaly": ("mild", "moderate", "marked"), "Edema": ("mild", "moderate"),
    "Pleural Effusion": ("small", "moderate", "large"), "Pneumothorax": ("small", "moderate"),
    "Lung Lesion": ("nodule", "nodule", "mass"),
}
# fmt: on
_ZONED = ("Lung Lesion", "Lung Opacity", "Consolidation", "Pneumonia")
_SIDED = ("Atelectasis", "Pneumothorax", "Pleural Effusion", "Pleural Other", "Fracture")


@dataclass(frozen=True)
class Finding:
    """A present finding: its sites (sides, zones such as "right lower", or devices) and size."""

    sites: tuple[str, ...] = ()
    size: str = ""
    certain: bool = True

    @property
    def strength(self) -> float:
        """How strongly it is drawn: 1, or 0.5 when uncertain."""
        return 1.0 if self.certain else 0.5


def _pick(rng: np.random.Generator, options: Sequence[str]) -> str:
    return options[int(rng.integers(len(options)))]


def _phrase(rng: np.random.Generator, options: Sequence[str], wording: str) -> str:
    """A phrasing of ``options``: random (``"varied"``) or the first (``"canonical"``)."""
    return options[0] if wording == "canonical" else _pick(rng, options)


def sample_findings(rng: np.random.Generator) -> dict[str, Finding]:
    """The present findings of one study, in OBSERVATIONS order."""
    latent = rng.random(3) < LATENT_RATES
    infection_zone = _zone(rng)
    findings = {}
    for obs, (base, *weights) in FINDING_RATES.items():
        if rng.random() >= min(base + float(np.dot(weights, latent)), 0.95):
            continue
        sites, size = _sites_and_size(obs, rng, latent, infection_zone)
        findings[obs] = Finding(sites, size, bool(rng.random() >= UNCERTAIN_RATE.get(obs, 0.15)))
    return findings


def _sites_and_size(
    obs: str, rng: np.random.Generator, latent: np.ndarray, infection_zone: str
) -> tuple[tuple[str, ...], str]:
    """Where a present ``obs`` is and how big, given the study's latent causes."""
    sites: tuple[str, ...]
    if obs in _ZONED:
        sites = (infection_zone if latent[1] and obs != "Lung Lesion" else _zone(rng),)
    elif obs in _SIDED:
        both = obs in ("Pleural Effusion", "Atelectasis") and rng.random() < 0.3 + 0.4 * latent[0]
        sites = ("right", "left") if both else (_pick(rng, ("right", "left")),)
    elif obs == "Support Devices":
        sites = _devices(rng, latent)
    else:
        sites = ()
    return sites, _pick(rng, SIZES[obs]) if obs in SIZES else ""


def findings_from_labels(labels: Mapping[str, int], rng: np.random.Generator) -> dict[str, Finding]:
    """Findings that state ``labels`` (1 positive, -1 uncertain; others absent), sites and sizes
    drawn as :func:`sample_findings` draws them: to write a report from labels alone."""
    latent, zone = np.zeros(3, bool), _zone(rng)
    findings = {}
    for obs in FINDING_RATES:
        if labels.get(obs) in (1, -1):
            findings[obs] = Finding(*_sites_and_size(obs, rng, latent, zone), labels[obs] == 1)
    return findings


def _zone(rng: np.random.Generator) -> str:
    side = _pick(rng, ("right", "left"))
    return f"{side} {_pick(rng, ('upper', 'middle', 'lower')[:: 1 if side == 'right' else 2])}"


def _devices(rng: np.random.Generator, latent: np.ndarray) -> tuple[str, ...]:
    kinds = tuple(DEVICE_SENTENCES)
    if latent[2]:
        chosen = tuple(k for k in kinds[:3] if rng.random() < 0.6)
        return chosen or kinds[:1]
    return ("pacemaker",) if latent[0] and rng.random() < 0.7 else (_pick(rng, kinds),)


def write_report(
    findings: Mapping[str, Finding],
    rng: np.random.Generator,
    layout: str,
    wording: str = "varied",
) -> tuple[str, dict[str, int]]:
    """The raw report (capitalised sentences) and the labels its text implies.

    ``wording="varied"`` draws every sentence from its templates and shuffles the sentences of a
    topic; ``"canonical"`` always takes a template's first phrasing and keeps the findings'
    order, so a finding is always said the same way. The findings and their certainty are the
    same for both; the normal sentences may differ, and with them the negatives they imply.
    """
    if wording not in WORDINGS:
        raise ValueError(f"wording must be one of {WORDINGS}, got {wording!r}")
    parts: list[tuple[str, str]] = []
    labels: dict[str, int] = {}
    for obs, f in findings.items():
        if obs == "Support Devices":
            parts += [("devices", _phrase(rng, DEVICE_SENTENCES[d], wording)) for d in f.sites]
        else:
            parts.append((TOPIC.get(obs, "lungs"), _mention(obs, f, rng, True, wording)))
        labels[obs] = 1 if f.certain else -1
    for topic, rate in NORMAL_RATE[layout].items():
        if rng.random() >= rate or any(o in findings for o in TOPIC_BLOCKERS.get(topic, ())):
            continue
        options = [
            (s, implied) for s, implied in NORMAL_SENTENCES[topic] if not implied.keys() & labels
        ]
        if options:
            sentence, implied = options[0 if wording == "canonical" else rng.integers(len(options))]
            parts.append((topic, sentence))
            labels |= implied
    for obs in PATHOLOGIES:
        if obs not in labels and rng.random() < NEGATION_RATE[layout]:
            template = _phrase(rng, NEGATED_TEMPLATES, wording)
            mention = template.format(m=_phrase(rng, BARE_MENTIONS[obs], wording))
            parts.append((TOPIC.get(obs, "lungs"), mention))
            labels[obs] = 0
    rank = {t: i for i, t in enumerate(TOPICS)}
    shuffle = rng.random(len(parts)) if wording == "varied" else np.arange(len(parts))
    order = sorted(
        range(len(parts)), key=lambda i: (rank.get(parts[i][0], len(TOPICS)), shuffle[i])
    )
    parts = [parts[i] for i in order]
    sentences = [s[0].upper() + s[1:] + "." for t, s in parts if t != "impression"]
    impression = [s for t, s in parts if t == "impression"]
    present = [o for o in findings if o != "Support Devices"]
    if present and rng.random() < IMPRESSION_RATE:
        impression = [_mention(o, findings[o], rng, False, wording) for o in present[:2]]
    if not present:
        labels["No Finding"] = 1
        impression = impression or ([] if sentences else ["no acute cardiopulmonary abnormality"])
    numbered = layout == "mimic_cxr" and len(impression) > 1
    for k, s in enumerate(impression, start=1):
        sentences.append(f"{k}. " * numbered + s[0].upper() + s[1:] + ".")
    return " ".join(sentences), labels


def _mention(obs: str, f: Finding, rng: np.random.Generator, positive: bool, wording: str) -> str:
    """A sentence stating ``f``: a positive sentence, or the bare mention (hedged if uncertain)."""
    if f.certain and positive:
        side = "bilateral" if len(f.sites) == 2 else (f.sites[0].split()[0] if f.sites else "")
        nodule = ("nodule", "pulmonary nodule")
        lesion = _phrase(rng, nodule, wording) if f.size == "nodule" else "mass"
        template = _phrase(rng, POSITIVE_SENTENCES[obs], wording)
        ordinal = _phrase(rng, ("fifth", "sixth", "seventh"), wording)
        return template.format(
            side=side, zone=f"{f.sites[0]} lobe" if f.sites else "", size=f.size, lesion=lesion,
            s="s" * (side == "bilateral"), ordinal=ordinal,
            **{"is": "are" if side == "bilateral" else "is"},
        )  # fmt: skip
    bare = _phrase(rng, BARE_MENTIONS[obs], wording)
    return bare if f.certain else _phrase(rng, UNCERTAIN_TEMPLATES, wording).format(m=bare)


def generate(
    out_dir: str | Path,
    *,
    layout: str = "iu_xray",
    num_studies: int = 1000,
    image_size: int = 128,
    seed: int = 0,
    splits: Sequence[float] = (0.7, 0.1, 0.2),
    wording: str = "varied",
) -> Path:
    """Write ``num_studies`` studies (PNGs, ``annotation.json``) to ``out_dir``; the JSON path.

    ``wording`` (see :func:`write_report`) changes only the reports' text: the same ``seed``
    gives the same findings, positive and uncertain labels, and images for every wording.
    """
    if layout not in LAYOUTS or num_studies < 1 or image_size < 16 or len(splits) != 3:
        raise ValueError(f"bad arguments: {layout=}, {num_studies=}, {image_size=}, {splits=}")
    if wording not in WORDINGS:
        raise ValueError(f"wording must be one of {WORDINGS}, got {wording!r}")
    out = Path(out_dir)
    n_train, n_val = (round(num_studies * p / sum(splits)) for p in splits[:2])
    split_of = np.repeat(SPLITS, [n_train, n_val, num_studies - n_train - n_val])
    split_of = split_of[np.random.default_rng([seed, 0]).permutation(num_studies)].tolist()
    annotation: dict[str, list[dict]] = {s: [] for s in SPLITS}
    for i, split in enumerate(split_of):
        rng = np.random.default_rng([seed, i + 1])
        findings = sample_findings(rng)
        text_rng, image_rng = rng.spawn(2)  # the wording never changes the images
        report, labels = write_report(findings, text_rng, layout, wording)
        study = f"CXR{i:05d}" if layout == "iu_xray" else f"s{50_000_000 + i}"
        (out / "images" / study).mkdir(parents=True, exist_ok=True)
        paths = [f"images/{study}/{k}.png" for k in range(NUM_VIEWS[layout])]
        views = render_views(findings, image_rng, layout=layout, image_size=image_size)
        for rel, view in zip(paths, views, strict=True):
            Image.fromarray(view).save(out / rel, compress_level=1)
        annotation[split].append(
            {"id": study, "report": report, "image_path": paths, "split": split, "labels": labels}
        )
    path = out / "annotation.json"
    path.write_text(json.dumps(annotation))
    return path


def main(argv: Sequence[str] | None = None) -> None:
    """Command line: ``python -m examples.rrg.synthetic --out DIR [--layout ...]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path, help="folder to write the dataset to")
    parser.add_argument(
        "--layout",
        choices=LAYOUTS,
        default="iu_xray",
        help="iu_xray: two views per study; mimic_cxr: one (default %(default)s)",
    )
    parser.add_argument(
        "--num-studies", type=int, default=1000, help="studies to generate (default %(default)s)"
    )
    parser.add_argument(
        "--image-size",
        type=int,
        default=128,
        help="side of the images in pixels (default %(default)s)",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default %(default)s)")
    parser.add_argument(
        "--wording",
        choices=WORDINGS,
        default="varied",
        help="varied: random phrasings and sentence order; canonical: one phrasing per statement",
    )
    a = parser.parse_args(argv)
    path = generate(a.out, layout=a.layout, num_studies=a.num_studies, image_size=a.image_size,
                    seed=a.seed, wording=a.wording)  # fmt: skip
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
