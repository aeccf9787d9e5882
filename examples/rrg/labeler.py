"""A rule-based CheXpert-style labeler for radiology reports.

It follows the three phases of the CheXpert labeler (Irvin et al., AAAI 2019), with token rules in
place of NegBio's dependency-graph patterns:

1. *Mention extraction*: phrase lists per observation (:data:`MENTIONS`; ``*`` ends a prefix
   pattern, a lone ``*`` is any one token), minus :data:`UNMENTIONS`. Size and contour statements
   ("the heart is enlarged", "normal heart size", "the mediastinum is widened", "the lungs are
   clear") are read as a subject (:data:`SUBJECTS`) with a state word (:data:`STATES`) up to
   ``8`` tokens after or ``4`` before it: a normal state is a negative mention, a positive one is
   classified like any mention, "stable"/"unchanged" is uncertain (CheXpert's rule for stable
   heart and mediastinal contours), "not" between subject and state flips it.
2. *Classification*, within the sentence, in CheXpert's order: pre-negation uncertainty ("cannot
   exclude", "not excluded", "no new"), negation ("no", "without", "negative for", "free of",
   "rather than", "... has resolved", ...), post-negation uncertainty ("possible", "may",
   "likely", "concerning for", "borderline", "X or Y", "X versus Y", ...); else positive. A cue
   before the mention reaches it across up to ``10`` tokens unless a clause breaker
   (:data:`TERMINATORS`, a verb of :data:`VERBS`, "this"/"it", "and the/there/a/an") lies
   between, so "no A, B or C" negates all three; a cue after it reaches back up to ``5`` tokens,
   not across "and" after a verb. "no change"-style pseudo-negations are ignored.
   Mentions of :data:`UNCERTAIN_MENTIONS` (vascular congestion, blunted costophrenic angles) are
   uncertain unless negated, and a positive or uncertain "chf"/"heart failure" adds an uncertain
   Cardiomegaly mention, both as in CheXpert.
3. *Aggregation*, as the paper states it: any positive mention gives ``1``, else any uncertain
   ``-1``, else ``0``; no mention gives blank (``NaN``). (The reference code returns ``-1`` when
   ``1``, ``0`` and ``-1`` all occur; the paper's rule is used here.) No Finding is ``1`` when no
   observation but Support Devices, nor any of :data:`OTHER_FINDINGS` (CheXpert's "no finding"
   phrase list: emphysema, scoliosis, granuloma, ...), is positive or uncertain, else blank.

"The lungs are clear" gives Lung Opacity ``0`` (CheXpert leaves it blank; both binarise to ``0``).
A cardiomediastinal silhouette/contour labels Enlarged Cardiomediastinum only, as in CheXpert.
"""

from __future__ import annotations

import functools
import math
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from examples.rrg.observations import NUM_OBSERVATIONS, OBSERVATIONS

# fmt: off
#: Mention phrases per observation (No Finding has none: it is derived).
MENTIONS: Mapping[str, tuple[str, ...]] = {
    "Enlarged Cardiomediastinum": (
        "enlarged cardiomediastinum", "cardiomediastinal enlargement", "mediastinal widening",
        "mediastinal enlargement", "widening of the mediastinum",
        "enlargement of the cardiomediastinal silhouette",
    ),
    "Cardiomegaly": (
        "cardiomegaly", "cardiac enlargement", "enlargement of the heart",
        "enlargement of the cardiac silhouette",
    ),
    "Lung Lesion": (
        "nodule*", "nodular densit*", "nodular opaci*", "mass", "masses", "lump", "lesion*",
        "carcinoma*", "neoplasm*", "tumor*",
    ),
    "Lung Opacity": (
        "opaci*", "airspace disease", "air space disease", "infiltrat*", "haziness", "hazy",
        "increased density", "decreased translucency", "interstitial marking*",
        "interstitial pattern", "reticular pattern", "reticular marking*", "reticulation",
        "parenchymal scarring", "peribronchial thickening",
    ),
    "Edema": ("edema", "heart failure", "chf", "fluid overload"),
    "Consolidation": ("consolidat*",),
    "Pneumonia": ("pneumonia*", "bronchopneumonia", "infection*", "infectious"),
    "Atelectasis": ("atelecta*", "collapse*"),
    "Pneumothorax": ("pneumothora*", "ptx"),
    "Pleural Effusion": ("effusion*", "pleural fluid", "hydrothorax"),
    "Pleural Other": (
        "pleural thickening", "fibrosis", "fibrothorax", "pleural scar*",
        "pleural parenchymal scar*", "pleuro parenchymal scar*", "pleuroparenchymal scar*",
    ),
    "Fracture": ("fracture*",),
    "Support Devices": (
        "pacer*", "pacemaker*", "line", "lines", "picc", "tube", "tubes", "catheter*", "valve*",
        "hardware", "arthroplast*", "icd", "defibrillator*", "device*", "drain", "drains",
        "plate", "screw*", "cannula*", "apparatus", "coil*", "equipment", "mediport", "port",
        "wire*", "clip*", "stent*", "electrode*", "ett",
    ),
}

#: Mentions that are uncertain unless negated (CheXpert's post-negation rules).
UNCERTAIN_MENTIONS: Mapping[str, tuple[str, ...]] = {
    "Edema": (
        "vascular congestion", "pulmonary congestion", "vascular engorgement", "indistinctness",
        "vascular prominence",
    ),
    "Pleural Effusion": (
        "blunting of the costophrenic", "blunting of the * costophrenic", "blunted costophrenic",
        "blunted * costophrenic", "costophrenic angle blunting",
    ),
}

#: Phrases whose words must not count as a mention of the observation.
UNMENTIONS: Mapping[str, tuple[str, ...]] = {
    "Pleural Effusion": ("pericardial effusion*", "joint effusion*"),
    "Lung Lesion": (
        "calcified nodule*", "osseous lesion*", "bony lesion*", "lytic lesion*",
        "sclerotic lesion*", "skin lesion*",
    ),
    "Edema": ("soft tissue edema",),
    "Atelectasis": ("vertebral collapse", "vertebral body collapse"),
    "Support Devices": ("septal lines", "b lines", "kerley lines", "pleural line"),
}

#: Other findings (CheXpert's "no finding" phrases): a positive or uncertain one blanks No Finding.
OTHER_FINDINGS: tuple[str, ...] = (
    "emphysema*", "scoliosis", "granuloma*", "calcifi*", "degenera*", "hyperinfla*",
    "hyperexpan*", "hernia*", "copd", "kyphosis", "kyphotic", "deformit*", "osteopenia",
    "atherosclero*", "metasta*", "hematoma*", "hemorrhage", "bronchitis", "bronchiectasis",
    "cephalization", "volume loss", "elevation", "eventration", "pneumomediastinum",
    "pneumoperitoneum", "plaque*", "thickening", "blunt*", "aspiration", "cuffing", "bulla*",
    "inflam*", "prominen*",
)

#: Subjects of size/contour statements, and their state words (1 positive, 0 normal, -1 stable).
SUBJECTS: Mapping[str, tuple[str, ...]] = {
    "Cardiomegaly": (
        "heart", "heart size", "cardiac size", "cardiac silhouette*", "cardiac shadow",
        "cardiac contour*", "cardiac and mediastinal contour*",
        "cardiac and mediastinal silhouette*",
    ),
    "Enlarged Cardiomediastinum": (
        "mediastinum", "cardiomediastinum", "mediastinal contour*", "mediastinal silhouette*",
        "cardiomediastinal silhouette*", "cardiomediastinal contour*",
        "hilar and mediastinal contour*", "mediastinal and hilar contour*",
        "cardiac and mediastinal contour*", "cardiac and mediastinal silhouette*",
    ),
    "Lung Opacity": ("lung", "lungs", "lung fields"),
}
_NORMAL_STABLE = {"normal": 0, "unremarkable": 0, "stable": -1, "unchanged": -1}
STATES: Mapping[str, Mapping[str, int]] = {
    "Cardiomegaly": {
        "enlarged": 1, "enlargement": 1, "increased": 1, "large": 1, "borderline": -1,
        **_NORMAL_STABLE,
    },
    "Enlarged Cardiomediastinum": {
        "widened": 1, "widening": 1, "wide": 1, "enlarged": 1, **_NORMAL_STABLE,
    },
    "Lung Opacity": {"clear": 0},
}

#: Cues: "forward" ones precede the mention they scope over, "backward" ones follow it.
PRE_UNCERTAIN_FORWARD = (
    "cannot exclude", "can not exclude", "cant exclude", "cannot rule out", "can not rule out",
    "cant rule out", "no new",
)
PRE_UNCERTAIN_BACKWARD = (
    "cannot be excluded", "cannot be * excluded", "cant be excluded", "not excluded",
    "not * excluded", "cannot be ruled out", "cannot be * ruled out", "not ruled out",
    "not * ruled out",
)
NEGATION_FORWARD = (
    "no", "not", "without", "negative for", "free of", "clear of", "absence of", "absent",
    "resolution of", "resolved", "removal of", "removed", "rather than", "none", "nor",
)
NEGATION_BACKWARD = (
    "resolved", "cleared", "absent", "removed", "excluded", "ruled out", "no longer",
    "not seen", "not identified", "not visualized", "not demonstrated", "not present",
    "not evident", "not appreciated", "not detected",
)
PSEUDO_NEGATIONS = (
    "no change", "no significant change", "no interval change", "no significant interval change",
    "no substantial change", "no appreciable change", "no increase", "no significant increase",
    "no decrease", "not only", "without change", "without interval change",
    "without significant change",
)
POST_UNCERTAIN_FORWARD = (
    "possible", "possibly", "probable", "probably", "presumably", "presumed", "questionable",
    "questionably", "question of", "suspect", "suspected", "suspicious", "suspicion", "suggest",
    "suggests", "suggested", "suggesting", "suggestive", "suggestion", "likely", "may", "might",
    "could", "would", "concern", "concerning", "worrisome", "borderline", "differential",
    "equivocal", "indeterminate", "perhaps", "maybe",
)
POST_UNCERTAIN_BACKWARD = (
    "is possible", "are possible", "is likely", "are likely", "less likely", "suspected",
    "questionable", "is questioned", "may be present", "might be present", "could be present",
    "may be seen", "not well seen", "not well visualized", "not well evaluated", "not clearly seen",
    "poorly evaluated", "poorly visualized", "obscured",
)
#: "X or Y", "X versus Y": both uncertain unless negated ("no X or Y").
OR_WORDS = frozenset({"or", "versus", "vs"})
TERMINATORS = frozenset(
    {"but", "however", "although", "though", "while", "whereas", "yet", "except", "which"}
)
VERBS = frozenset(
    {
        "is", "are", "was", "were", "has", "have", "had", "remains", "remain", "appears", "appear",
        "persists", "persist", "seen", "noted", "identified", "demonstrated", "present", "shows",
        "show", "demonstrates",
    }
)
_AND_BREAK = frozenset({"the", "there", "a", "an"})
_PRONOUNS = frozenset({"this", "these", "it", "they"})  # a new subject ends a cue's reach
_NOT_WORDS = frozenset({"not", "no", "non"})
_HEDGES = frozenset(
    {"may", "might", "could", "possibly", "likely", "probably", "questionably", "borderline"}
)
_FORWARD_WINDOW, _BACKWARD_WINDOW = 10, 5
_AFTER_WINDOW, _BEFORE_WINDOW = 8, 4
_PRIORITY = {0: 0, 1: 1, -1: 2}  # of state words: normal, then positive, then stable
_CHF = frozenset({"chf", "heart failure"})
_OTHER = "Other"
_SPLIT = re.compile(r"\.(?!\d)|(?<!\d)\.|[;:!?\n]")
# fmt: on

Span = tuple[int, int, str]


class _Phrases:
    """A phrase list compiled to token patterns and indexed by first token."""

    def __init__(self, phrases: Iterable[str]):
        self.exact: dict[str, list[tuple[str, ...]]] = defaultdict(list)
        self.wild: list[tuple[str, ...]] = []
        for phrase in phrases:
            pattern = tuple(phrase.split())
            if pattern[0].endswith("*"):
                self.wild.append(pattern)
            else:
                self.exact[pattern[0]].append(pattern)

    def find(self, tokens: Sequence[str]) -> list[Span]:
        """Every ``(start, end, phrase)`` occurrence in ``tokens``."""
        hits = []
        for i, token in enumerate(tokens):
            for pattern in (*self.exact.get(token, ()), *self.wild):
                if i + len(pattern) <= len(tokens) and all(
                    t.startswith(p[:-1]) if p.endswith("*") else t == p
                    for p, t in zip(pattern, tokens[i:], strict=False)
                ):
                    hits.append((i, i + len(pattern), " ".join(pattern)))
        return hits


def _compile(table: Mapping[str, Iterable[str]]) -> dict[str, _Phrases]:
    return {key: _Phrases(phrases) for key, phrases in table.items()}


_MENTIONS = _compile({**MENTIONS, _OTHER: OTHER_FINDINGS})
_UNCERTAIN_MENTIONS = _compile(UNCERTAIN_MENTIONS)
_UNMENTIONS = _compile(UNMENTIONS)
_SUBJECTS = _compile(SUBJECTS)
_CUES = _compile(
    {
        "pre_forward": PRE_UNCERTAIN_FORWARD, "pre_backward": PRE_UNCERTAIN_BACKWARD,
        "neg_forward": NEGATION_FORWARD, "neg_backward": NEGATION_BACKWARD,
        "pseudo": PSEUDO_NEGATIONS,
        "post_forward": POST_UNCERTAIN_FORWARD, "post_backward": POST_UNCERTAIN_BACKWARD,
    }
)  # fmt: skip


def _tokens(sentence: str) -> tuple[str, ...]:
    """Lowercase alphanumeric tokens; apostrophes dropped, other punctuation splits."""
    return tuple(re.findall(r"[a-z0-9]+", sentence.lower().replace("'", "")))


def _longest(spans: Iterable[Span]) -> list[Span]:
    """Keep the longest of overlapping spans (ties: the earliest)."""
    kept: list[Span] = []
    for span in sorted(spans, key=lambda s: (s[0] - s[1], s[0])):
        if all(span[1] <= k[0] or k[1] <= span[0] for k in kept):
            kept.append(span)
    return kept


def _overlaps(span: Span, others: Iterable[Span]) -> bool:
    return any(span[0] < o[1] and o[0] < span[1] for o in others)


def _forward_blocked(between: Sequence[str]) -> bool:
    """Does a clause boundary separate a preceding cue from the mention?"""
    return len(between) > _FORWARD_WINDOW or any(
        t in TERMINATORS
        or t in VERBS
        or t in _PRONOUNS
        or (t == "and" and i + 1 < len(between) and between[i + 1] in _AND_BREAK)
        for i, t in enumerate(between)
    )


def _backward_blocked(between: Sequence[str]) -> bool:
    """Does a clause boundary separate the mention from a following cue?"""
    if len(between) > _BACKWARD_WINDOW or any(t in TERMINATORS for t in between):
        return True
    return any(
        t in ("and", "or") and any(v in VERBS for v in between[:i]) for i, t in enumerate(between)
    )


def _cued(tokens: Sequence[str], cues: dict[str, list[Span]], phase: str, start: int, end: int):
    """Is the mention ``tokens[start:end]`` in the scope of a ``phase`` cue?"""
    forward = any(
        e <= start and not _forward_blocked(tokens[e:start]) for _, e, _ in cues[f"{phase}_forward"]
    )
    return forward or any(
        s >= end and not _backward_blocked(tokens[end:s]) for s, _, _ in cues[f"{phase}_backward"]
    )


def _classify(tokens: Sequence[str], cues: dict[str, list[Span]], start: int, end: int) -> int:
    """CheXpert's order: pre-negation uncertainty, negation, post-negation uncertainty."""
    if _cued(tokens, cues, "pre", start, end):
        return -1
    if _cued(tokens, cues, "neg", start, end):
        return 0
    near = (*tokens[max(0, start - 2) : start], *tokens[end : end + 2])
    if _cued(tokens, cues, "post", start, end) or OR_WORDS.intersection(near):
        return -1
    return 1


def _scan(tokens: Sequence[str], positions: Iterable[int], states: Mapping[str, int]):
    """State words met from the subject outwards, up to a terminator (or "and" after a state)."""
    hits: list[tuple[int, int]] = []
    for i in positions:
        if tokens[i] in TERMINATORS or (tokens[i] == "and" and hits):
            break
        if tokens[i] in states:
            hits.append((i, states[tokens[i]]))
    return hits


def _state(tokens: Sequence[str], start: int, end: int, states: Mapping[str, int]):
    """``(label, lo, hi)`` of a subject's state statement, or ``None`` without a state word.

    Normal beats positive beats stable; "not" between subject and state flips 1 <-> 0 and hedges
    ("may", "borderline", ...) make a positive state uncertain.
    """
    after = _scan(tokens, range(end, min(len(tokens), end + _AFTER_WINDOW)), states)
    before = _scan(tokens, range(start - 1, max(-1, start - 1 - _BEFORE_WINDOW), -1), states)
    hits = after or before
    if not hits:
        return None
    pos, label = min(hits, key=lambda h: _PRIORITY[h[1]])
    between = tokens[end:pos] if pos >= end else tokens[pos + 1 : start]
    if _NOT_WORDS.intersection(between):
        label = {1: 0, 0: 1, -1: -1}[label]
    elif label == 1 and _HEDGES.intersection(between):
        label = -1
    return label, min(start, pos), max(end, pos + 1)


@functools.lru_cache(maxsize=1 << 16)
def _label_tokens(tokens: tuple[str, ...]) -> tuple[tuple[str, int], ...]:
    """Every classified ``(observation, label)`` mention of one sentence."""
    cues = {name: phrases.find(tokens) for name, phrases in _CUES.items()}
    pseudo = {s for s, _, _ in cues.pop("pseudo")}
    cues["neg_forward"] = [c for c in cues["neg_forward"] if c[0] not in pseudo]
    found: list[tuple[str, int]] = []
    direct: list[Span] = []
    for obs, phrases in _MENTIONS.items():
        unmentions = _UNMENTIONS[obs].find(tokens) if obs in _UNMENTIONS else []
        uncertain = _UNCERTAIN_MENTIONS[obs].find(tokens) if obs in _UNCERTAIN_MENTIONS else []
        for span in _longest(phrases.find(tokens) + uncertain):
            if _overlaps(span, unmentions):
                continue
            direct.append(span)
            label = _classify(tokens, cues, span[0], span[1])
            if span in uncertain and label == 1:
                label = -1
            found.append((obs, label))
            if obs == "Edema" and span[2] in _CHF and label != 0:
                found.append(("Cardiomegaly", -1))
    for obs, phrases in _SUBJECTS.items():
        for span in _longest(phrases.find(tokens)):
            state = None if _overlaps(span, direct) else _state(tokens, *span[:2], STATES[obs])
            if state is not None:
                label, lo, hi = state
                found.append((obs, _classify(tokens, cues, lo, hi) if label == 1 else label))
    return tuple(found)


def aggregate(mention_labels: Sequence[int]) -> float:
    """Any 1 -> 1, else any -1 -> -1, else any 0 -> 0; no mention -> NaN (blank)."""
    for label in (1, -1, 0):
        if label in mention_labels:
            return float(label)
    return math.nan


def label_reports(reports: Sequence[str]) -> np.ndarray:
    """CheXpert labels, an ``(N, 14)`` float32 array of 1 / 0 / -1 / NaN in OBSERVATIONS order."""
    out = np.full((len(reports), NUM_OBSERVATIONS), np.nan, np.float32)
    for row, report in zip(out, reports, strict=True):
        mentions: dict[str, list[int]] = defaultdict(list)
        for sentence in _SPLIT.split(report):
            for obs, label in _label_tokens(_tokens(sentence)):
                mentions[obs].append(label)
        for k, obs in enumerate(OBSERVATIONS[1:], start=1):
            row[k] = aggregate(mentions.get(obs, ()))
        finding = any(v != 0 for o, vs in mentions.items() if o != "Support Devices" for v in vs)
        row[0] = math.nan if finding else 1.0
    return out
