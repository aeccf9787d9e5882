"""The CheXpert observations, label codes and special tokens shared by the whole RRG example.

Label codes follow the CheXpert labeler: ``1`` positive, ``0`` negative, ``-1`` uncertain, and
*blank* (not mentioned), stored as ``NaN`` in float arrays. The classification head predicts one of
four classes per observation (``examples.rrg.data.label_classes`` maps labels to classes).
"""

from __future__ import annotations

#: The 14 CheXpert observations, in the CheXpert labeler's order.
OBSERVATIONS: tuple[str, ...] = (
    "No Finding",
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Lesion",
    "Lung Opacity",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
)
NUM_OBSERVATIONS = len(OBSERVATIONS)

#: The five observations of the CheXpert competition subset used by the "CE-5" variant.
FIVE_OBSERVATIONS: tuple[str, ...] = (
    "Cardiomegaly",
    "Edema",
    "Consolidation",
    "Atelectasis",
    "Pleural Effusion",
)

#: Classification-head classes per observation: 0 blank, 1 positive, 2 negative, 3 uncertain.
NUM_CLASSES = 4
CLASS_BLANK, CLASS_POSITIVE, CLASS_NEGATIVE, CLASS_UNCERTAIN = 0, 1, 2, 3

#: Special tokens and their fixed ids in every vocabulary.
PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
PAD_ID, BOS_ID, EOS_ID, UNK_ID = 0, 1, 2, 3
SPECIAL_TOKENS: tuple[str, ...] = (PAD, BOS, EOS, UNK)
