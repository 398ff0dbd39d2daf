"""A whole evaluation: the `yourai eval` results schema with a paired comparison, filters, the views of a results file."""

from __future__ import annotations

import csv
import json

import pytest

from yourai.cli.eval import cli_main
from yourai.eval import results as eval_results
from yourai.eval.tqa_data import SAMPLE_PATH, load_hf_jsonl, load_truthfulqa


def test_cli_writes_the_documented_schema_with_a_paired_comparison(tiny_model_dir, tiny_adapter_dir, tmp_path):
    out = tmp_path / "eval.json"
    code = cli_main(["--model", str(tiny_model_dir), "--adapter", str(tiny_adapter_dir), "--data", str(SAMPLE_PATH),
                         "--limit", "5", "--modes", "mc1,mc2,gen", "--max-gen-tokens", "8", "--out", str(out),
                         "--no-progress"])
    assert code == 0
    results = json.loads(out.read_text())
    assert 0.0 <= results["mc1"] <= 1.0 and 0.0 <= results["mc2"] <= 1.0 and results["n"] == 5
    assert results["evaluated"] == "adapter" and set(results["models"]) == {"base", "adapter"}
    assert results["settings"]["add_bos"] is False and results["settings"]["data"]["benchmark"] is False
    assert set(results["comparison"]) == {"mc1", "mc2", "bleu_max", "bleu_diff", "bleu_acc"}
    question = results["questions"][0]
    for name in ("base", "adapter"):
        scores = question["scores"][name]
        assert len(scores["mc1_lls"]) == len(question["mc1_choices"])
        assert len(scores["mc2_lls"]) == len(question["mc2_choices"])
        assert isinstance(scores["completion"], str)
    assert question["scores"]["base"]["mc2_lls"] != question["scores"]["adapter"]["mc2_lls"]
    with out.with_suffix(".per_question.csv").open() as handle:
        table = list(csv.DictReader(handle))
    assert len(table) == 5 and {"mc1_base", "mc1_adapter", "mc1_delta", "completion_adapter"} <= set(table[0])
    frame = eval_results.results_frame(results)
    assert list(frame.index) == ["base", "adapter", "delta"]
    assert frame.loc["delta", "mc2"] == pytest.approx(results["models"]["adapter"]["mc2"]["mean"]
                                                      - results["models"]["base"]["mc2"]["mean"])
    assert eval_results.category_frame(results)["n"].sum() == 5
    assert eval_results.summary(results)["delta"]["mc1"]["delta"] == results["comparison"]["mc1"]["delta"]


def test_cli_reports_bad_input_with_exit_code_2(tiny_model_dir, tmp_path, capsys):
    code = cli_main(["--model", str(tiny_model_dir), "--data", str(tmp_path / "absent.jsonl"),
                         "--out", str(tmp_path / "x.json"), "--no-progress"])
    assert code == 2 and "absent.jsonl: no such file" in capsys.readouterr().err
    code = cli_main(["--model", str(tiny_model_dir), "--data", str(SAMPLE_PATH), "--modes", "mc3",
                         "--out", str(tmp_path / "x.json"), "--no-progress"])
    assert code == 2 and "modes must be" in capsys.readouterr().err


def test_category_filter_and_limit(tiny_model_dir):
    items = load_hf_jsonl(SAMPLE_PATH)
    chosen = eval_results.select_items(items, limit=2, categories=["Astronomy"])
    assert len(chosen) == 2 and all(item.category == "Astronomy" for item in chosen)
    with pytest.raises(ValueError, match="unknown categories"):
        eval_results.select_items(items, categories=["Nope"])


def test_hub_loader_fails_with_a_clear_error_when_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ValueError, match=r"hub:truthfulqa/truthful_qa: could not download"):
        load_truthfulqa("hub:truthfulqa/truthful_qa")


def test_delta_errorbars_are_distances_from_the_delta_to_its_ci():
    from yourai.eval.results import delta_errorbars

    comparison = {"mc1": {"delta": 0.1, "ci": [0.0, 0.3]}, "mc2": {"delta": -0.2, "ci": [-0.5, 0.1]}}
    names, deltas, errors = delta_errorbars(comparison)
    assert names == ["mc1", "mc2"] and deltas == [0.1, -0.2]
    assert errors == [pytest.approx([0.1, 0.3]), pytest.approx([0.2, 0.3])]
