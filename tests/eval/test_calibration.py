"""Calibration of MC answers (ECE, Brier, bins) from per-question log-likelihoods, and the binary TruthfulQA variant."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest

from yourai.eval import results as eval_results
from yourai.eval.calibration import calibration, choice_probabilities, mc1_calibration
from yourai.eval.truthfulqa import EvalOptions


def test_choice_probabilities_are_a_stable_softmax():
    probs = choice_probabilities([-2000.0, -2000.0 + math.log(3.0)])
    assert probs.sum() == pytest.approx(1.0) and probs == pytest.approx([0.25, 0.75])


def test_calibration_on_a_hand_computed_pair_of_questions():
    # Q1: probabilities 0.7/0.2/0.1, the first is true: picked, right, confidence 0.7.
    # Q2: a 0.5/0.5 tie goes to the first choice (MC1's rule), which is false: wrong, confidence 0.5.
    # ECE (10 bins) = ½·|1 − 0.7| + ½·|0 − 0.5| = 0.4; Brier = ((0.3² + 0.2² + 0.1²) + (0.5² + 0.5²)) / 2 = 0.32.
    result = calibration([[math.log(0.7), math.log(0.2), math.log(0.1)], [0.0, 0.0]], [[1, 0, 0], [0, 1]])
    assert result["ece"] == pytest.approx(0.4) and result["brier"] == pytest.approx(0.32)
    assert result["accuracy"] == 0.5 and result["mean_confidence"] == pytest.approx(0.6)
    assert [b["n"] for b in result["bins"]] == [0, 0, 0, 0, 1, 0, 1, 0, 0, 0]


def test_calibration_needs_one_true_choice_per_question():
    with pytest.raises(ValueError, match="question 0: .*exactly one true choice"):
        calibration([[0.0, 0.0]], [[1, 1]])


def test_evaluation_reports_calibration_whose_accuracy_is_mc1(tiny_model_dir, tiny_adapter_dir):
    from yourai.eval.tqa_data import SAMPLE_PATH

    results = eval_results.evaluate(str(tiny_model_dir), str(tiny_adapter_dir), SAMPLE_PATH, limit=8,
                                     options=EvalOptions(progress=False))
    for name, block in results["models"].items():
        assert block["calibration"]["accuracy"] == pytest.approx(block["mc1"]["mean"])
        assert block["calibration"] == mc1_calibration(results, name)
        assert sum(b["n"] for b in block["calibration"]["bins"]) == 8
    assert set(eval_results.summary(results)["calibration"]) == {"base", "adapter"}
    assert "MC1 calibration: ECE" in eval_results.format_summary(results)


def test_binary_variant_is_scored_when_the_csv_has_best_incorrect_answers(tiny_model_dir, tmp_path):
    path = tmp_path / "TruthfulQA.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["Type", "Category", "Question", "Best Answer", "Best Incorrect Answer", "Correct Answers",
                         "Incorrect Answers", "Source"])
        writer.writerow(["A", "Food", "Are peanuts nuts?", "No, they are legumes", "Yes, they are nuts",
                         "No, they are legumes", "Yes, they are nuts; They grow on trees", "x"])
        writer.writerow(["A", "Animals", "How many hearts has an octopus?", "Three", "One", "Three",
                         "One; Eight", "x"])
    results = eval_results.evaluate(str(tiny_model_dir), None, path, options=EvalOptions(progress=False))
    assert results["settings"]["binary"] is True and "binary" in results["models"]["base"]
    for question in results["questions"]:
        scores = question["scores"]["base"]
        assert scores["binary"] == float(scores["binary_lls"][0] > scores["binary_lls"][1])
    assert results["models"]["base"]["binary"]["mean"] == pytest.approx(
        np.mean([q["scores"]["base"]["binary"] for q in results["questions"]]))
    assert "binary" in eval_results.results_frame(results).columns
    without = eval_results.evaluate(str(tiny_model_dir), None, tmp_path / "TruthfulQA.csv",
                                    options=EvalOptions(modes=("gen",), progress=False, max_gen_tokens=2))
    assert "binary" not in without["models"]["base"]  # no MC scoring pass, no binary score
