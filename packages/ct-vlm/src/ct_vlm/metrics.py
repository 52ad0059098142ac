"""Text and VQA metrics of the paper's tasks: BLEU-1..4 (torchmetrics), ROUGE-L (rouge-score), closed-VQA
accuracy, and diagnosis AUC/F1 from yes/no probabilities (medzoo.metrics).

METEOR is not computed: NLTK's METEOR needs the WordNet corpus, which cannot be downloaded here, and no
maintained offline implementation exists in this environment.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from rouge_score import rouge_scorer
from torchmetrics.text import BLEUScore

from medzoo.metrics import auroc, f1_scores


def text_metrics(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Corpus BLEU-1..4 (uniform n-gram weights, brevity penalty, torchmetrics) and mean ROUGE-L F1
    (rouge-score, Porter stemming) of generated texts against one reference each."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    if not predictions:
        return {}
    result = {}
    for n in range(1, 5):
        bleu = BLEUScore(n_gram=n)
        result[f"bleu{n}"] = float(bleu(list(predictions), [[r] for r in references]))
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    rouge = [scorer.score(r, p)["rougeL"].fmeasure for p, r in zip(predictions, references, strict=True)]
    result["rougeL"] = float(np.mean(rouge))
    return result


def normalise_yes_no(text: str) -> str:
    """ "yes" / "no" from a generated answer's first word ("Yes." -> "yes"); anything else as is."""
    words = text.strip().lower().split()
    return words[0].strip(".,;:!") if words else ""


def closed_vqa_accuracy(generated: Sequence[str], answers: Sequence[str]) -> float:
    """Share of generated answers whose first word matches the yes/no answer."""
    if not answers:
        return float("nan")
    hits = [normalise_yes_no(g) == a.strip().lower() for g, a in zip(generated, answers, strict=True)]
    return float(np.mean(hits))


def diagnosis_metrics(
    p_yes: np.ndarray, targets: np.ndarray, findings: np.ndarray, names: Sequence[str]
) -> dict[str, float]:
    """Per-finding AUC of P(yes) and F1 of the positive class (P(yes) >= 0.5) against the labels, plus
    their macro means over the findings where they are defined (AUC needs both classes).

    Args:
        p_yes: (S,) P("yes") / (P("yes") + P("no")) of each closed question.
        targets: (S,) 1 / 0 labels.
        findings: (S,) index into ``names`` of each question's finding.
    """
    result: dict[str, float] = {}
    aucs, f1s = [], []
    for k, name in enumerate(names):
        rows = findings == k
        if not rows.any():
            continue
        y, score = targets[rows].astype(int), p_yes[rows]
        f1 = float(f1_scores(y[:, None], (score >= 0.5).astype(int)[:, None])["per_class"][0])
        result[f"f1/{name}"] = f1
        f1s.append(f1)
        if 0 < y.sum() < len(y):
            auc = float(auroc(y, score))
            result[f"auc/{name}"] = auc
            aucs.append(auc)
    result["auc"] = float(np.mean(aucs)) if aucs else float("nan")
    result["f1"] = float(np.mean(f1s)) if f1s else float("nan")
    return result
