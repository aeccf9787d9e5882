"""The rule-based CheXpert-style labeler on hand-labelled sentences and reports."""

from __future__ import annotations

import math

import numpy as np
import pytest

from examples.rrg.labeler import aggregate, label_reports
from examples.rrg.observations import NUM_OBSERVATIONS, OBSERVATIONS

NF, EC, CARD = "No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly"
LESION, OPAC, EDEMA, CONS = "Lung Lesion", "Lung Opacity", "Edema", "Consolidation"
PNEU, ATEL, PTX, PE = "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion"
PO, FX, SD = "Pleural Other", "Fracture", "Support Devices"

# (report, {observation: label}); every observation not named is blank (NaN). Labels are written by
# hand: 1 positive, 0 negative, -1 uncertain. No Finding is 1 when nothing but Support Devices is
# positive or uncertain, else blank.
CASES: list[tuple[str, dict[str, int]]] = [
    # Cardiomegaly: synonyms, normal statements, negation and uncertainty.
    ("the heart is enlarged .", {CARD: 1}),
    ("heart size is enlarged .", {CARD: 1}),
    ("enlarged cardiac silhouette .", {CARD: 1}),
    ("there is an enlarged heart .", {CARD: 1}),
    ("moderate cardiomegaly .", {CARD: 1}),
    ("heart size is normal .", {CARD: 0, NF: 1}),
    ("normal heart size .", {CARD: 0, NF: 1}),
    ("the cardiac silhouette is normal .", {CARD: 0, NF: 1}),
    ("the heart is not enlarged .", {CARD: 0, NF: 1}),
    ("the heart size is at the upper limits of normal .", {CARD: 0, NF: 1}),
    ("borderline cardiomegaly .", {CARD: -1}),
    ("heart size is stable .", {CARD: -1}),  # CheXpert: stable heart size is uncertain
    ("cardiomegaly without pulmonary edema .", {CARD: 1, EDEMA: 0}),
    # Enlarged cardiomediastinum.
    ("the mediastinum is widened .", {EC: 1}),
    ("the cardiomediastinal silhouette is within normal limits .", {EC: 0, NF: 1}),
    ("normal heart size and mediastinal contours .", {CARD: 0, EC: 0, NF: 1}),
    # Pleural effusion.
    ("no pleural effusion .", {PE: 0, NF: 1}),
    ("small bilateral pleural effusions .", {PE: 1}),
    ("blunting of the left costophrenic angle .", {PE: -1}),
    ("possible small left pleural effusion .", {PE: -1}),
    ("left pleural effusion cannot be excluded .", {PE: -1}),
    ("small pericardial effusion .", {NF: 1}),  # not a pleural effusion
    ("no change in the small left pleural effusion .", {PE: 1}),  # pseudo-negation
    # Negation scope over lists, and its end at a new clause.
    ("no pleural effusion or pneumothorax is seen .", {PE: 0, PTX: 0, NF: 1}),
    (
        "there is no focal consolidation pleural effusion or pneumothorax .",
        {CONS: 0, PE: 0, PTX: 0, NF: 1},
    ),
    ("there is no pneumothorax and the heart is mildly enlarged .", {PTX: 0, CARD: 1}),
    ("no focal consolidation to suggest pneumonia .", {CONS: 0, PNEU: 0, NF: 1}),
    ("no new consolidation .", {CONS: -1}),  # CheXpert: "no new" is uncertain
    # Edema.
    ("mild pulmonary edema .", {EDEMA: 1}),
    ("no evidence of pulmonary edema .", {EDEMA: 0, NF: 1}),
    ("mild pulmonary vascular congestion .", {EDEMA: -1}),
    ("findings suggestive of interstitial edema .", {EDEMA: -1}),
    ("there is congestive heart failure .", {EDEMA: 1, CARD: -1}),  # CheXpert's chf rule
    # Consolidation, pneumonia, atelectasis, lung opacity.
    ("right lower lobe consolidation concerning for pneumonia .", {CONS: 1, PNEU: -1}),
    ("atelectasis or pneumonia at the left base .", {ATEL: -1, PNEU: -1}),
    ("mild interstitial edema versus atypical infection .", {EDEMA: -1, PNEU: -1}),
    ("cannot exclude early pneumonia .", {PNEU: -1}),
    ("bibasilar atelectatic changes .", {ATEL: 1}),
    ("left lower lobe collapse .", {ATEL: 1}),
    ("patchy opacities in the lung bases likely reflect atelectasis .", {OPAC: 1, ATEL: -1}),
    ("the lungs are clear .", {OPAC: 0, NF: 1}),
    ("there is no focal airspace disease .", {OPAC: 0, NF: 1}),
    ("the lungs are clear except for minimal bibasilar atelectasis .", {OPAC: 0, ATEL: 1}),
    # Pneumothorax.
    ("small right apical pneumothorax .", {PTX: 1}),
    ("the previously seen pneumothorax has resolved .", {PTX: 0, NF: 1}),
    ("small right pneumothorax is no longer seen .", {PTX: 0, NF: 1}),
    # Lung lesion, other findings.
    ("there is a 1.5 cm nodule in the right upper lobe .", {LESION: 1}),
    ("no suspicious pulmonary nodules or masses .", {LESION: 0, NF: 1}),
    ("calcified nodule in the left upper lobe .", {}),  # a granuloma: no lesion, not "no finding"
    ("mild degenerative changes of the thoracic spine .", {}),
    ("mild pleural thickening at the right apex .", {PO: 1}),
    # Fracture, support devices (which do not end "No Finding").
    ("healed right rib fractures .", {FX: 1}),
    ("no displaced rib fracture is identified .", {FX: 0, NF: 1}),
    ("endotracheal tube tip is 4 cm above the carina .", {SD: 1, NF: 1}),
    ("the nasogastric tube has been removed .", {SD: 0, NF: 1}),
    ("left chest wall pacemaker leads terminate in the right ventricle .", {SD: 1, NF: 1}),
    # Whole reports, aggregation over mentions, raw punctuation and case.
    ("no acute cardiopulmonary process .", {NF: 1}),
    ("", {NF: 1}),
    (
        "the heart is normal in size . the lungs are clear . no pleural effusion ."
        " no pneumothorax .",
        {CARD: 0, OPAC: 0, PE: 0, PTX: 0, NF: 1},
    ),
    ("small left pleural effusion . no right pleural effusion .", {PE: 1}),
    ("no right pleural effusion . possible small left effusion .", {PE: -1}),
    (
        "Heart size is normal. Lungs are clear.\n"
        "No pleural effusion, pneumothorax, or focal consolidation.",
        {CARD: 0, OPAC: 0, PE: 0, PTX: 0, CONS: 0, NF: 1},
    ),
]


def _vector(expected: dict[str, int]) -> np.ndarray:
    out = np.full(NUM_OBSERVATIONS, np.nan, np.float32)
    for name, label in expected.items():
        out[OBSERVATIONS.index(name)] = label
    return out


@pytest.mark.parametrize(("report", "expected"), CASES, ids=[c[0][:60] for c in CASES])
def test_hand_labelled(report, expected):
    got = label_reports([report])[0]
    want = _vector(expected)
    named = {name: float(v) for name, v in zip(OBSERVATIONS, got, strict=True) if not np.isnan(v)}
    assert np.array_equal(got, want, equal_nan=True), named


def test_batch_shape_dtype_and_codes():
    labels = label_reports([report for report, _ in CASES])
    assert labels.shape == (len(CASES), NUM_OBSERVATIONS) and labels.dtype == np.float32
    assert set(np.unique(labels[~np.isnan(labels)])) <= {-1.0, 0.0, 1.0}
    assert set(np.unique(labels[:, 0][~np.isnan(labels[:, 0])])) == {1.0}  # No Finding: 1 or blank
    assert label_reports([]).shape == (0, NUM_OBSERVATIONS)


@pytest.mark.parametrize(
    ("mentions", "expected"),
    [([], math.nan), ([0], 0), ([-1], -1), ([1], 1), ([0, -1], -1), ([0, 1], 1), ([-1, 1], 1)],
)
def test_aggregate(mentions, expected):
    assert aggregate(mentions) == expected or (
        math.isnan(expected) and math.isnan(aggregate(mentions))
    )
