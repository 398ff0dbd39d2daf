"""How well a model's confidence in its multiple-choice answers matches how often it is right.

The model's answer to a question is the choice with the highest summed log-likelihood (the MC1 rule,
first maximum wins); its probabilities are the softmax of the choices' log-likelihoods (the
normalisation MC2 uses), and its confidence is the probability of the answer it picked. A calibrated
model is right 70 % of the time when it is 70 % sure. ECE and the Brier score are defined in
yourai.stats; this module turns per-question log-likelihoods into their inputs.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from yourai.stats import brier_score, expected_calibration_error

DEFAULT_BINS = 10  # the usual reliability-diagram resolution; 100 questions give ≈ 10 per bin


def choice_probabilities(lls: Sequence[float]) -> np.ndarray:
    """softmax(ll) over one question's choices, computed stably (shifted by the maximum)."""
    values = np.asarray(lls, dtype=np.float64)
    shifted = np.exp(values - values.max())
    return shifted / shifted.sum()


def calibration(lls_per_question: Sequence[Sequence[float]], labels_per_question: Sequence[Sequence[int]],
                n_bins: int = DEFAULT_BINS) -> dict[str, Any]:
    """ECE (with its bins), Brier score, accuracy and mean confidence of single-answer MC questions."""
    if len(lls_per_question) != len(labels_per_question) or not lls_per_question:
        raise ValueError(f"calibration: {len(lls_per_question)} questions scored but {len(labels_per_question)} labelled")
    probabilities, truths, confidences, correct = [], [], [], []
    for index, (lls, labels) in enumerate(zip(lls_per_question, labels_per_question)):
        labels = list(labels)
        if len(lls) != len(labels) or labels.count(1) != 1:
            raise ValueError(f"calibration: question {index}: needs one log-likelihood per choice and exactly one "
                             f"true choice, got {len(lls)} lls and labels {labels}")
        probs = choice_probabilities(lls)
        picked = int(np.argmax(np.asarray(lls, dtype=np.float64)))
        probabilities.append(probs)
        truths.append(labels.index(1))
        confidences.append(float(probs[picked]))
        correct.append(float(labels[picked] == 1))
    ece, bins = expected_calibration_error(confidences, correct, n_bins)
    return {"ece": ece, "brier": brier_score(probabilities, truths), "accuracy": float(np.mean(correct)),
            "mean_confidence": float(np.mean(confidences)), "n": len(confidences), "n_bins": n_bins, "bins": bins}


def mc1_calibration(results: dict[str, Any], model: str, n_bins: int = DEFAULT_BINS) -> dict[str, Any]:
    """Calibration of one model's MC1 answers, from a TruthfulQA results document (no re-scoring)."""
    questions = results["questions"]
    return calibration([q["scores"][model]["mc1_lls"] for q in questions], [q["mc1_labels"] for q in questions],
                       n_bins)
