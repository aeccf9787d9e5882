"""CE and NLG metrics of the RRG example against hand-computed values."""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest

from examples.rrg import metrics
from examples.rrg.observations import NUM_OBSERVATIONS, OBSERVATIONS

N = math.nan
THREE = ("Cardiomegaly", "Edema", "Pleural Effusion")


def _labels(rows: list[tuple[float, float, float]]) -> np.ndarray:
    """(N, 14) labels with the THREE columns set and every other one blank."""
    out = np.full((len(rows), NUM_OBSERVATIONS), np.nan, np.float32)
    out[:, [OBSERVATIONS.index(name) for name in THREE]] = rows
    return out


# Columns (Cardiomegaly, Edema, Pleural Effusion).
GENERATED = _labels([(1, 0, -1), (1, 1, N), (N, -1, 1)])
REFERENCE = _labels([(1, 1, 1), (0, 1, N), (-1, N, 1)])


def test_ce_positive_only_by_hand():
    # Binarised (1 -> 1, else 0): generated r1 (1,0,0), r2 (1,1,0), r3 (0,0,1);
    # reference r1 (1,1,1), r2 (0,1,0), r3 (0,0,1).
    # micro: TP 3 (r1 C, r2 E, r3 PE), FP 1 (r2 C), FN 2 (r1 E, r1 PE): P 3/4, R 3/5, F1 6/9.
    # macro: C tp1 fp1 -> P 1/2 R 1 F 2/3; E tp1 fn1 -> 1, 1/2, 2/3; PE tp1 fn1 -> 1, 1/2, 2/3.
    # example: r1 tp1 fn2 -> 1, 1/3, 2/4; r2 tp1 fp1 -> 1/2, 1, 2/3; r3 tp1 -> 1, 1, 1.
    got = metrics.clinical_efficacy(GENERATED, REFERENCE, observations=THREE)
    want = {
        "precision_micro": 3 / 4, "recall_micro": 3 / 5, "f1_micro": 2 / 3,
        "precision_macro": 5 / 6, "recall_macro": 2 / 3, "f1_macro": 2 / 3,
        "precision_example": 5 / 6, "recall_example": 7 / 9, "f1_example": 13 / 18,
    }  # fmt: skip
    assert got == pytest.approx(want)


def test_ce_uncertain_as_positive_by_hand():
    # Binarised (1, -1 -> 1): generated r1 (1,0,1), r2 (1,1,0), r3 (0,1,1);
    # reference r1 (1,1,1), r2 (0,1,0), r3 (1,0,1).
    # micro: TP 4, FP 2 (r2 C, r3 E), FN 2 (r1 E, r3 C): P 2/3, R 2/3, F1 8/12.
    # macro: C tp1 fp1 fn1 -> 1/2 each; E the same; PE tp2 -> 1 each: all 2/3.
    # example: r1 tp2 fn1 -> 1, 2/3, 4/5; r2 tp1 fp1 -> 1/2, 1, 2/3; r3 tp1 fp1 fn1 -> 1/2 each.
    got = metrics.clinical_efficacy(
        GENERATED, REFERENCE, observations=THREE, uncertain_as_positive=True
    )
    want = {
        "precision_micro": 2 / 3, "recall_micro": 2 / 3, "f1_micro": 2 / 3,
        "precision_macro": 2 / 3, "recall_macro": 2 / 3, "f1_macro": 2 / 3,
        "precision_example": 2 / 3, "recall_example": 13 / 18, "f1_example": 59 / 90,
    }  # fmt: skip
    assert got == pytest.approx(want)


def test_ce_all_fourteen_macro_counts_empty_observations_as_zero():
    # The 11 blank columns add nothing to micro or example counts; in the macro mean they are 0.
    got = metrics.clinical_efficacy(GENERATED, REFERENCE)
    assert got["f1_micro"] == pytest.approx(2 / 3) and got["f1_example"] == pytest.approx(13 / 18)
    assert got["precision_macro"] == pytest.approx(2.5 / 14)
    assert got["recall_macro"] == pytest.approx(2 / 14) and got["f1_macro"] == pytest.approx(2 / 14)


def test_ce_zero_division_edge_cases():
    # Report 1 and observation 2 have no positive anywhere: P = R = F1 = 0, still averaged.
    pred = np.array([[False, False], [True, False]])
    got = metrics.precision_recall_f1(pred, pred)
    assert got["f1_micro"] == 1.0 and got["f1_example"] == 0.5 and got["f1_macro"] == 0.5
    # Nothing predicted: precision 0/0 = 0, recall 0.
    got = metrics.precision_recall_f1(np.zeros((2, 2), bool), np.eye(2, dtype=bool))
    assert all(value == 0.0 for value in got.values())
    with pytest.raises(ValueError):
        metrics.precision_recall_f1(np.zeros((2, 2), bool), np.zeros((2, 3), bool))


def test_binarize():
    labels = np.array([1, 0, -1, np.nan])
    assert metrics.binarize(labels).tolist() == [True, False, False, False]
    assert metrics.binarize(labels, uncertain_as_positive=True).tolist() == [
        True,
        False,
        True,
        False,
    ]


def test_ce_from_texts():
    # Labels: generated r1 Cardiomegaly 1, Effusion 0; r2 Effusion -1.
    # reference r1 Cardiomegaly 1, Effusion 1; r2 Effusion 0, No Finding 1.
    # CE-14: TP 1, FN 2 (r1 PE, r2 NF): micro P 1, R 1/3, F1 1/2; example r1 (1, 1/2, 2/3), r2 0.
    # CE-5 (uncertain positive): TP 1, FP 1 (r2 PE), FN 1 (r1 PE): P = R = F1 = 1/2.
    got = metrics.clinical_efficacy_from_texts(
        ["the heart is enlarged . no pleural effusion .", "possible small pleural effusion ."],
        ["cardiomegaly . small left pleural effusion .", "no pleural effusion ."],
    )
    assert got["ce14_precision_micro"] == 1.0 and got["ce14_recall_micro"] == pytest.approx(1 / 3)
    assert got["ce14_f1_micro"] == pytest.approx(1 / 2)
    assert got["ce14_f1_example"] == pytest.approx(1 / 3)
    assert got["ce5_precision_micro"] == got["ce5_recall_micro"] == got["ce5_f1_micro"] == 0.5


def test_bleu_by_hand():
    # p1 = 5/6 (the x2, cat, on, mat), p2 = 3/5 (the cat, on the, the mat), p3 = 1/4 (on the mat),
    # p4 = 0 -> 1e-15 / 3; equal lengths, BP = 1. BLEU-n = (p1 ... pn)^(1/n).
    got = metrics.bleu(["the cat sat on the mat"], ["the cat is on the mat"])
    want = [5 / 6, math.sqrt(1 / 2), 0.125 ** (1 / 3), (0.125 * 1e-15 / 3) ** (1 / 4)]
    assert got == pytest.approx(want, rel=1e-6)


def test_bleu_brevity_penalty_and_closest_reference():
    # c = 2 < r = 6: BP = exp(1 - 6/2) = e^-2, all precisions 1.
    assert metrics.bleu(["the cat"], ["the cat sat on the mat"], max_n=2) == pytest.approx(
        [math.exp(-2)] * 2, rel=1e-6
    )
    # c = 3, references of lengths 2 and 4 tie: the shorter is taken, so no penalty.
    assert metrics.bleu(["a b c"], [["a b", "a b c d"]], max_n=1) == pytest.approx([1.0], rel=1e-6)
    # Clipping by the maximum count over references: "the" x3 clipped to 2, p1 = 2/3.
    assert metrics.bleu(["the the the"], [["the cat", "the the dog"]], max_n=1) == pytest.approx(
        [2 / 3], rel=1e-6
    )


def test_bleu_is_corpus_level():
    # Counts pooled: p1 = 3/4, p2 = 1/2 (a b matched, c d not); lengths equal.
    got = metrics.bleu(["a b", "c d"], ["a b", "c e"], max_n=2)
    assert got == pytest.approx([3 / 4, math.sqrt(3 / 8)], rel=1e-6)


def test_rouge_l_by_hand():
    # LCS "the heart is normal" = 4: P = 1, R = 4/5, F = 2.44 * 0.8 / (0.8 + 1.44) = 1.952 / 2.24.
    # "a b c d" vs "d c b a": LCS 1, P = R = 1/4, F = 1/4. No overlap: 0.
    got = metrics.rouge_l(
        ["the heart is normal", "a b c d", "x"], ["the heart size is normal", "d c b a", "y"]
    )
    assert got == pytest.approx((1.952 / 2.24 + 0.25 + 0.0) / 3)


def test_cider_by_hand():
    # N = 2 examples, every reference n-gram has df 1: idf = log 2 for all n-grams.
    # 1: "a b" vs "a b": cosine 1 for n = 1, 2; 0 for n = 3, 4 (empty); score 10 * 2 / 4 = 5.
    # 2: "c" vs "d": no shared n-gram, 0. Mean 2.5.
    assert metrics.cider_d(["a b", "c"], ["a b", "d"]) == pytest.approx(2.5)
    # Clipping and length penalty: "a a" vs "a": n = 1: min(2 l, l) l / (2 l * l) = 1/2
    # (unclipped it would be 1); lengths in bigrams 1 vs 0: penalty exp(-1 / 72).
    # Score 10 * (1/2) / 4 * exp(-1/72); the other example 0.
    assert metrics.cider_d(["a a", "b"], ["a", "c"]) == pytest.approx(0.625 * math.exp(-1 / 72))


def _cider_rederived(hyps, refs_list, n=4, sigma=6.0):
    """CIDEr-D from its definition with dense vectors over the union of n-grams."""

    def grams(words, k):
        return [tuple(words[i : i + k]) for i in range(len(words) - k + 1)]

    refs_words = [[r.split() for r in refs] for refs in refs_list]
    scores = []
    for hyp, refs in zip(hyps, refs_words, strict=True):
        h = hyp.split()
        total = 0.0
        for r in refs:
            penalty = math.exp(-((max(len(h) - 1, 0) - max(len(r) - 1, 0)) ** 2) / (2 * sigma**2))
            for k in range(1, n + 1):
                vocab = sorted(set(grams(h, k)) | set(grams(r, k)))
                df = [sum(any(g in grams(x, k) for x in rs) for rs in refs_words) for g in vocab]
                idf = np.log(len(hyps)) - np.log(np.maximum(1.0, df))
                hv = np.array([grams(h, k).count(g) for g in vocab], float) * idf
                rv = np.array([grams(r, k).count(g) for g in vocab], float) * idf
                den = np.linalg.norm(hv) * np.linalg.norm(rv)
                num = float(np.minimum(hv, rv) @ rv)
                total += (num / den if den else num) * penalty
        scores.append(10 * total / n / len(refs))
    return float(np.mean(scores))


def _lcs_rederived(a, b):
    @functools.cache
    def lcs(i, j):
        if i == len(a) or j == len(b):
            return 0
        return lcs(i + 1, j + 1) + 1 if a[i] == b[j] else max(lcs(i + 1, j), lcs(i, j + 1))

    return lcs(0, 0)


def _random_corpus(rng, size):
    def sentence():
        return " ".join(rng.choice(["a", "b", "c", "d"], size=rng.integers(1, 9)))

    hyps = [sentence() for _ in range(size)]
    refs = [[sentence() for _ in range(rng.integers(1, 3))] for _ in range(size)]
    return hyps, refs


@pytest.mark.parametrize("seed", range(3))
def test_cider_and_rouge_match_rederivation(seed):
    hyps, refs = _random_corpus(np.random.default_rng(seed), 6)
    assert metrics.cider_d(hyps, refs) == pytest.approx(_cider_rederived(hyps, refs), rel=1e-9)
    for hyp, rs in zip(hyps, refs, strict=True):
        for r in rs:
            assert metrics._lcs(r.split(), hyp.split()) == _lcs_rederived(r.split(), hyp.split())


def test_nlg_metrics_keys_and_meteor(monkeypatch):
    got = metrics.nlg_metrics(["The heart is normal ."], ["the heart is normal ."])
    assert list(got) == ["BLEU_1", "BLEU_2", "BLEU_3", "BLEU_4", "METEOR", "ROUGE_L", "CIDEr"]
    assert got["METEOR"] is None and got["BLEU_4"] == pytest.approx(1.0) and got["ROUGE_L"] == 1.0
    assert got["CIDEr"] == 0.0  # one example: every idf is log(1) - log(1) = 0
    monkeypatch.setattr(metrics.shutil, "which", lambda name: None)
    assert "java" in metrics.meteor_unavailable_reason()
    with pytest.raises(ValueError):
        metrics.nlg_metrics(["a"], [])


def test_evaluate_reports_merges_both():
    got = metrics.evaluate_reports(["no pleural effusion ."], ["no pleural effusion ."])
    assert got["ce14_f1_micro"] == 1.0 and got["BLEU_1"] == pytest.approx(1.0)
