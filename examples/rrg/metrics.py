"""Clinical efficacy (CE) and natural-language-generation (NLG) metrics for generated reports.

*CE*, as R2Gen / PromptMRG report it: both reports are labelled (:func:`label_reports`), labels are
binarised (CE-14: positive only; CE-5 on :data:`FIVE_OBSERVATIONS`: positive or uncertain), and
precision, recall and F1 are averaged three ways, like scikit-learn's ``average=``:

* ``micro``: counts pooled over reports and observations;
* ``macro``: per-observation P / R / F1 (over reports), then their mean;
* ``example``: per-report P / R / F1 (over observations), then their mean ("samples").

``P = TP / (TP + FP)``, ``R = TP / (TP + FN)``, ``F1 = 2 TP / (2 TP + FP + FN)``, and every ``0/0``
is ``0`` (scikit-learn's ``zero_division`` default): an observation, or a report, with no positive
in prediction nor reference scores ``P = R = F1 = 0`` and still counts in the mean.

*NLG*, as pycocoevalcap (coco-caption) computes it, on lowercase whitespace tokens (pass text
already cleaned like R2Gen's, where "." is a token): corpus BLEU-1..4 (Papineni et al. 2002),
ROUGE-L (Lin 2004) and CIDEr-D (Vedantam et al. 2015). METEOR needs java and the METEOR 1.5 jar,
which are not bundled: it is reported as ``None`` (:func:`meteor_unavailable_reason`).
"""

from __future__ import annotations

import math
import shutil
from collections import Counter
from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike

from examples.rrg.labeler import label_reports
from examples.rrg.observations import FIVE_OBSERVATIONS, OBSERVATIONS

#: One reference report, or several for the same generated one.
Reference = str | Sequence[str]


def binarize(labels: np.ndarray, *, uncertain_as_positive: bool = False) -> np.ndarray:
    """``labels == 1`` (or ``labels == -1`` too when ``uncertain_as_positive``); blank is 0."""
    labels = np.asarray(labels)
    return (labels == 1) | ((labels == -1) & uncertain_as_positive)


def _divide(numerator: ArrayLike, denominator: ArrayLike) -> np.ndarray:
    """``numerator / denominator`` with ``0/0 = 0``."""
    num, den = np.asarray(numerator, float), np.asarray(denominator, float)
    return np.divide(num, den, out=np.zeros_like(num), where=den > 0)


def precision_recall_f1(predicted: np.ndarray, target: np.ndarray) -> dict[str, float]:
    """Micro, macro (over columns) and example (over rows) P / R / F1 of ``(N, K)`` booleans."""
    predicted, target = np.asarray(predicted, bool), np.asarray(target, bool)
    if predicted.shape != target.shape or predicted.ndim != 2 or predicted.size == 0:
        raise ValueError(
            f"need two equal non-empty (N, K) arrays, got {predicted.shape}, {target.shape}"
        )
    tp, fp, fn = predicted & target, predicted & ~target, ~predicted & target
    scores = {}
    for name, axis in (("micro", None), ("macro", 0), ("example", 1)):
        t, p, n = tp.sum(axis), fp.sum(axis), fn.sum(axis)
        scores[f"precision_{name}"] = float(np.mean(_divide(t, t + p)))
        scores[f"recall_{name}"] = float(np.mean(_divide(t, t + n)))
        scores[f"f1_{name}"] = float(np.mean(_divide(2 * t, 2 * t + p + n)))
    return scores


def clinical_efficacy(
    generated_labels: np.ndarray,
    reference_labels: np.ndarray,
    *,
    observations: Sequence[str] = OBSERVATIONS,
    uncertain_as_positive: bool = False,
) -> dict[str, float]:
    """CE P / R / F1 on ``observations`` of ``(N, 14)`` label arrays in OBSERVATIONS order."""
    columns = [OBSERVATIONS.index(name) for name in observations]
    generated = binarize(
        np.asarray(generated_labels)[:, columns], uncertain_as_positive=uncertain_as_positive
    )
    reference = binarize(
        np.asarray(reference_labels)[:, columns], uncertain_as_positive=uncertain_as_positive
    )
    return precision_recall_f1(generated, reference)


def clinical_efficacy_from_texts(
    generated: Sequence[str], references: Sequence[str]
) -> dict[str, float]:
    """CE-14 (``ce14_*``, positive only) and CE-5 (``ce5_*``, uncertain as positive) of reports."""
    generated_labels, reference_labels = label_reports(generated), label_reports(references)
    ce14 = clinical_efficacy(generated_labels, reference_labels)
    ce5 = clinical_efficacy(
        generated_labels,
        reference_labels,
        observations=FIVE_OBSERVATIONS,
        uncertain_as_positive=True,
    )
    return {**{f"ce14_{k}": v for k, v in ce14.items()}, **{f"ce5_{k}": v for k, v in ce5.items()}}


def _pairs(generated: Sequence[str], references: Sequence[Reference]):
    """``(hypothesis words, [reference words, ...])`` per example."""
    if len(generated) != len(references) or not generated:
        raise ValueError(
            f"need as many references as reports (> 0): {len(generated)}, {len(references)}"
        )
    for hyp, refs in zip(generated, references, strict=True):
        refs = [refs] if isinstance(refs, str) else list(refs)
        yield hyp.lower().split(), [ref.lower().split() for ref in refs]


def _ngrams(words: Sequence[str], max_n: int) -> Counter[tuple[str, ...]]:
    """Counts of every n-gram, ``1 <= n <= max_n``."""
    return Counter(
        tuple(words[i : i + n]) for n in range(1, max_n + 1) for i in range(len(words) - n + 1)
    )


def bleu(generated: Sequence[str], references: Sequence[Reference], max_n: int = 4) -> list[float]:
    """Corpus BLEU-1..``max_n``: ``BP * (prod_{k<=n} p_k)^(1/n)``, pycocoevalcap's ``closest``.

    ``p_k = (clipped k-gram matches + 1e-15) / (hypothesis k-grams + 1e-9)``, both summed over the
    corpus; ``BP = exp(1 - r / c)`` when ``c < r``, ``c`` the total hypothesis length and ``r`` the
    sum over examples of the reference length closest to the hypothesis (the shorter on ties).
    """
    correct, guess = np.zeros(max_n), np.zeros(max_n)
    hyp_len = ref_len = 0
    for words, refs in _pairs(generated, references):
        counts, max_ref = _ngrams(words, max_n), Counter[tuple[str, ...]]()
        for ref in refs:
            max_ref |= _ngrams(ref, max_n)
        for gram, count in counts.items():
            correct[len(gram) - 1] += min(count, max_ref[gram])
        guess += [max(0, len(words) - k) for k in range(max_n)]
        hyp_len += len(words)
        ref_len += min((abs(len(ref) - len(words)), len(ref)) for ref in refs)[1]
    precisions = (correct + 1e-15) / (guess + 1e-9)
    ratio = (hyp_len + 1e-15) / (ref_len + 1e-9)
    penalty = math.exp(1 - 1 / ratio) if ratio < 1 else 1.0
    return [float(np.prod(precisions[:n]) ** (1 / n) * penalty) for n in range(1, max_n + 1)]


def _lcs(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence."""
    row = [0] * (len(b) + 1)
    for x in a:
        diagonal = 0
        for j, y in enumerate(b, start=1):
            diagonal, row[j] = row[j], diagonal + 1 if x == y else max(row[j], row[j - 1])
    return row[-1]


def rouge_l(generated: Sequence[str], references: Sequence[Reference], beta: float = 1.2) -> float:
    """Mean ROUGE-L, ``F = (1 + b^2) P R / (R + b^2 P)``.

    ``P = max_ref LCS / |hyp|`` and ``R = max_ref LCS / |ref|`` (``F = 0`` if either is 0).
    """
    scores = []
    for words, refs in _pairs(generated, references):
        lcs = [_lcs(ref, words) for ref in refs]
        p = max(_divide(lcs, len(words)))
        r = max(_divide(lcs, [len(ref) for ref in refs]))
        scores.append((1 + beta**2) * p * r / (r + beta**2 * p) if p > 0 and r > 0 else 0.0)
    return float(np.mean(scores))


def cider_d(
    generated: Sequence[str], references: Sequence[Reference], max_n: int = 4, sigma: float = 6.0
) -> float:
    """Mean CIDEr-D as pycocoevalcap's ``Cider``.

    Each n-gram weighs ``tf * (log N - log max(1, df))``, ``df`` the number of examples whose
    references hold it, ``N`` the number of examples. Per reference and ``n``:
    ``sum_g min(h_g, r_g) r_g / (|h| |r|) * exp(-(l_h - l_r)^2 / (2 sigma^2))`` (``0`` if a norm
    is 0), ``l`` the number of bigrams (pycocoevalcap's length, i.e. words - 1). An example scores
    ``10 *`` the mean over ``n`` of the mean over its references.
    """
    pairs = [
        (_ngrams(words, max_n), [_ngrams(ref, max_n) for ref in refs])
        for words, refs in _pairs(generated, references)
    ]
    df: Counter[tuple[str, ...]] = Counter()
    for _, refs in pairs:
        df.update(set().union(*refs))
    log_n = math.log(len(pairs))

    def vectors(counts: Counter[tuple[str, ...]]):
        vec: list[dict[tuple[str, ...], float]] = [{} for _ in range(max_n)]
        for gram, tf in counts.items():
            vec[len(gram) - 1][gram] = tf * (log_n - math.log(max(1.0, df[gram])))
        norms = [math.sqrt(sum(w * w for w in v.values())) for v in vec]
        return vec, norms, sum(tf for gram, tf in counts.items() if len(gram) == 2)

    scores = []
    for counts, refs in pairs:
        hyp, hyp_norm, hyp_len = vectors(counts)
        total = 0.0
        for ref_counts in refs:
            ref, ref_norm, ref_len = vectors(ref_counts)
            penalty = math.exp(-((hyp_len - ref_len) ** 2) / (2 * sigma**2))
            for h, r, hn, rn in zip(hyp, ref, hyp_norm, ref_norm, strict=True):
                dot = sum(min(w, r.get(g, 0.0)) * r.get(g, 0.0) for g, w in h.items())
                total += (dot / (hn * rn) if hn and rn else dot) * penalty
        scores.append(10.0 * total / max_n / len(refs))
    return float(np.mean(scores))


def meteor_unavailable_reason() -> str:
    """Why METEOR is ``None``: no java, or no bundled METEOR 1.5 jar (nothing is downloaded)."""
    if shutil.which("java") is None:
        return "METEOR needs java (pycocoevalcap's METEOR 1.5 jar) and java is not on PATH"
    return "METEOR is not implemented: the METEOR 1.5 jar is not bundled and nothing is downloaded"


def nlg_metrics(
    generated: Sequence[str], references: Sequence[Reference]
) -> dict[str, float | None]:
    """``BLEU_1``..``BLEU_4``, ``METEOR`` (``None``), ``ROUGE_L`` and ``CIDEr`` (CIDEr-D)."""
    scores: dict[str, float | None] = {
        f"BLEU_{n}": score for n, score in enumerate(bleu(generated, references), start=1)
    }
    scores["METEOR"] = None
    scores["ROUGE_L"] = rouge_l(generated, references)
    scores["CIDEr"] = cider_d(generated, references)
    return scores


def evaluate_reports(
    generated: Sequence[str], references: Sequence[str]
) -> dict[str, float | None]:
    """:func:`nlg_metrics` and :func:`clinical_efficacy_from_texts` in one dictionary."""
    return {
        **nlg_metrics(generated, references),
        **clinical_efficacy_from_texts(generated, references),
    }
