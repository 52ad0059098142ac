"""Text and diagnosis metrics against nltk and scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest

from ct_vlm.metrics import closed_vqa_accuracy, diagnosis_metrics, normalise_yes_no, text_metrics

PREDICTIONS = [
    "a small lesion is seen on the left side .",
    "no focal lesion is seen . the liver is normal .",
    "a large lesion is seen on the right side of the chest .",
]
REFERENCES = [
    "a small lesion is seen on the right side .",
    "no focal lesion is seen . the liver and kidneys are normal .",
    "a large lesion is seen on the right side .",
]


def test_bleu_matches_nltk_corpus_bleu():
    from nltk.translate.bleu_score import corpus_bleu

    scores = text_metrics(PREDICTIONS, REFERENCES)
    hyps = [p.split() for p in PREDICTIONS]
    refs = [[r.split()] for r in REFERENCES]
    for n in range(1, 5):
        expected = corpus_bleu(refs, hyps, weights=tuple([1.0 / n] * n))
        assert scores[f"bleu{n}"] == pytest.approx(expected, abs=1e-6)


def test_rouge_l_known_answers():
    assert text_metrics(["the lesion is large"], ["the lesion is large"])["rougeL"] == pytest.approx(1.0)
    # LCS "the lesion" = 2 of 4 and 2 of 3 tokens: F1 = 2 * (2/4 * 2/3) / (2/4 + 2/3) = 4/7.
    assert text_metrics(["the lesion is large"], ["the lesion grows"])["rougeL"] == pytest.approx(4 / 7)
    with pytest.raises(ValueError, match="2 predictions for 1"):
        text_metrics(["a", "b"], ["a"])


def test_closed_vqa_accuracy_reads_the_first_word():
    assert normalise_yes_no("Yes. There is a lesion") == "yes"
    assert closed_vqa_accuracy(["yes", "No.", "maybe", "no"], ["yes", "no", "no", "yes"]) == 0.5


def test_diagnosis_auc_and_f1_match_scikit_learn():
    from sklearn.metrics import f1_score, roc_auc_score

    rng = np.random.default_rng(0)
    targets = rng.integers(0, 2, 40)
    p_yes = np.clip(0.3 * targets + rng.uniform(0, 0.7, 40), 0, 1)
    finding = np.repeat([0, 1], 20)
    scores = diagnosis_metrics(p_yes, targets, finding, ["A", "B"])
    for k, name in enumerate(["A", "B"]):
        rows = finding == k
        assert scores[f"auc/{name}"] == pytest.approx(roc_auc_score(targets[rows], p_yes[rows]))
        assert scores[f"f1/{name}"] == pytest.approx(f1_score(targets[rows], p_yes[rows] >= 0.5))
    assert scores["auc"] == pytest.approx((scores["auc/A"] + scores["auc/B"]) / 2)
