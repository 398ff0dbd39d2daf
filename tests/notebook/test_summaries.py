"""Each stage's summary.json is built by one function that also decides its headline, which `yourai run` reports."""

from __future__ import annotations

import json

from yourai.notebook import summaries
from yourai.pipeline import headline


def _written(tmp_path) -> dict:
    return json.loads((tmp_path / "summary.json").read_text())


def test_curation_headline_names_the_funnel_ends_and_splits(tmp_path):
    report = {"reconciliation": {"input_records": 10, "output_records": 7, "ok": True},
              "contamination": {"checked": True, "dropped": 1}, "splits": {"train": 5, "valid": 1, "test": 1},
              "tiers": {"after_balance": {"primary": 3}}, "rejects_by_reason": {"near_duplicate": 2},
              "scores": {"supplied": 0, "computed": 9}}
    summaries.curation(report, tmp_path)
    written = _written(tmp_path)
    assert written["headline"] == {"records_in": 10, "records_out": 7, "reconciled": True, "contamination_dropped": 1,
                                   "train_records": 5, "valid_records": 1}
    assert headline(written)[0] == ("records_in", 10) and written["splits"]["test"] == 1


def test_scoring_headline_carries_each_auc_with_its_interval(tmp_path):
    aucs = {"with metadata": {"authority_auc": (0.99, 0.98, 1.0), "entropy_auc": (0.97, 0.95, 0.99)},
            "text only": None}
    summaries.scoring(12, 1, {"patent": {"authority_weight": 0.1}}, aucs, tmp_path)
    assert _written(tmp_path)["headline"] == {"n_docs": 12, "n_rejected": 1,
                                              "with metadata: authority AUC": [0.99, 0.98, 1.0],
                                              "with metadata: entropy AUC": [0.97, 0.95, 0.99]}


def test_training_memory_and_truthfulqa_headlines(tmp_path):
    summaries.training({"faithful_bit_identical_to_plain": True, "gap_plain_mean": -0.2, "gap_plain_ci95": 0.1,
                        "val_loss": 4.5}, tmp_path / "04")
    assert _written(tmp_path / "04")["headline"] == {"faithful bit-identical to plain": True,
                                                     "gap_plain (mean ± t95)": [-0.2, 0.1], "val_loss": 4.5}
    summaries.memory({"leak": {"slope_mb_per_step": 0.01, "low": 0.0, "high": 0.02, "leaking": False},
                      "monitor_overhead": {"overhead_fraction": 0.005}}, tmp_path / "05")
    assert _written(tmp_path / "05")["headline"]["leak slope MB/step"] == [0.01, 0.0, 0.02]
    tqa = {"n": 5, "base": {"mc2": {"mean": 0.4, "ci": [0.3, 0.5]}}, "adapter": {"mc2": {"mean": 0.5, "ci": [0.4, 0.6]}},
           "delta": {"mc2": {"delta": 0.1, "ci": [0.0, 0.2], "p_value": 0.04}}}
    summaries.truthfulqa(tqa, tmp_path / "06")
    assert _written(tmp_path / "06")["headline"] == {"questions": 5, "base mc2": [0.4, 0.3, 0.5],
                                                     "adapter mc2": [0.5, 0.4, 0.6], "delta mc2": [0.1, 0.0, 0.2],
                                                     "delta mc2 p": 0.04}


def test_truthfulqa_headline_carries_each_models_ece(tmp_path):
    summary = {"n": 5, "base": {"mc1": {"mean": 0.2, "ci": [0.1, 0.3]}}, "delta": None,
               "calibration": {"base": {"ece": 0.4, "brier": 0.9, "n": 5}}}
    summaries.truthfulqa(summary, tmp_path)
    assert _written(tmp_path)["headline"] == {"questions": 5, "base mc1": [0.2, 0.1, 0.3], "base MC1 ECE": 0.4}


def test_sweep_analysis_headline_is_each_arm_delta_with_its_interval(tmp_path):
    summary = {"cells": 4, "baseline": "objective=plain", "comparisons": [
        {"arm": "objective=weighted", "metric": "mc2", "delta": -0.08, "ci": [-0.17, 0.01]}]}
    summaries.sweep_analysis(summary, tmp_path)
    assert _written(tmp_path)["headline"] == {"cells": 4, "baseline": "objective=plain",
                                              "objective=weighted mc2": [-0.08, -0.17, 0.01]}


def test_a_single_seed_interval_is_written_as_null_not_nan(tmp_path):
    summaries.training({"gap_faithful_mean": -0.3, "gap_faithful_ci95": float("nan"),
                        "gap_plain_mean": -0.3, "gap_plain_ci95": 0.05}, tmp_path)

    def refuse(constant: str):
        raise AssertionError(f"summary.json holds {constant}, which strict JSON parsers reject")

    written = json.loads((tmp_path / "summary.json").read_text(), parse_constant=refuse)
    assert written["gap_faithful_ci95"] is None and written["gap_plain_ci95"] == 0.05
