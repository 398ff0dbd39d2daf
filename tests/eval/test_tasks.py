"""Tasks as data: a YAML spec + a data file; TruthfulQA MC1/MC2 specs reproduce the built-in scorer exactly."""

from __future__ import annotations

import json

import pytest

from yourai.cli.eval import cli_main
from yourai.eval import results as eval_results
from yourai.eval.task_eval import evaluate_task, question_scores
from yourai.eval.tasks import MCItem, load_task_items, load_task_spec
from yourai.eval.tqa_data import SAMPLE_PATH
from yourai.eval.truthfulqa import EvalOptions, mc_context

OPTIONS = EvalOptions(progress=False)


def test_truthfulqa_specs_give_the_built_in_per_question_scores(tiny_model_dir):
    builtin = eval_results.evaluate(str(tiny_model_dir), None, SAMPLE_PATH, limit=6, options=OPTIONS)
    mc1 = evaluate_task(load_task_spec("truthfulqa_mc1"), str(tiny_model_dir), data=SAMPLE_PATH, limit=6,
                        options=OPTIONS)
    mc2 = evaluate_task(load_task_spec("truthfulqa_mc2"), str(tiny_model_dir), data=SAMPLE_PATH, limit=6,
                        options=OPTIONS)
    for index, question in enumerate(builtin["questions"]):
        scores = question["scores"]["base"]
        assert mc1["questions"][index]["scores"]["base"]["acc"] == scores["mc1"]
        assert mc1["questions"][index]["scores"]["base"]["lls"] == pytest.approx(scores["mc1_lls"], abs=1e-4)
        assert mc2["questions"][index]["scores"]["base"]["mc2"] == pytest.approx(scores["mc2"], abs=1e-5)
    assert mc1["models"]["base"]["calibration"]["ece"] == pytest.approx(
        builtin["models"]["base"]["calibration"]["ece"], abs=1e-6)


def test_spec_prompt_is_the_lm_eval_prompt():
    items, _ = load_task_items(load_task_spec("truthfulqa_mc1"), SAMPLE_PATH)
    assert items[0].context == mc_context(items[0].question)
    assert items[0].labels[0] == 1 and items[0].category == "Astronomy"


def test_own_task_from_a_spec_and_a_csv_without_code(tmp_path, tiny_model_dir, tiny_adapter_dir):
    (tmp_path / "pairs.csv").write_text(
        "prompt,good,bad,right\n"
        "Is the well safe?,Tested below the limits.,The elders say so.,Tested below the limits.\n"
        "How old is the tree?,About 140 rings.,The guide said so.,0\n", encoding="utf-8")
    (tmp_path / "mine.yaml").write_text(
        "name: mine\ndata: [pairs.csv]\nfields: {question: prompt, choices: [good, bad], answer: right}\n"
        "template: \"Question: {question}\\nAnswer:\"\nmetrics: [acc, mc2]\n", encoding="utf-8")
    out = tmp_path / "out" / "mine.json"
    code = cli_main(["--task", str(tmp_path / "mine.yaml"), "--model", str(tiny_model_dir),
                     "--adapter", str(tiny_adapter_dir), "--out", str(out), "--no-progress"])
    assert code == 0
    results = json.loads(out.read_text())
    assert results["schema"] == "yourai.task/1" and results["n"] == 2 and set(results["comparison"]) == {"acc", "mc2"}
    assert [q["labels"] for q in results["questions"]] == [[1, 0], [1, 0]]  # answer by text, then by index
    assert results["questions"][0]["scores"]["base"]["lls"] != results["questions"][0]["scores"]["adapter"]["lls"]
    assert out.with_suffix(".per_question.csv").read_text().startswith("id,category,question,acc_base,mc2_base")


def test_evidence_vs_authority_sample_task_loads():
    spec = load_task_spec("evidence_vs_authority")
    items, path = load_task_items(spec)
    assert path.name == "evidence_vs_authority.jsonl" and len(items) >= 16
    assert all(item.labels == (1, 0) for item in items) and spec.metrics == ["acc", "acc_norm", "mc2"]


@pytest.mark.parametrize("spec_text, message", [
    ("name: t\ndata: [d.jsonl]\nmetrics: [f1]\nfields: {labels: labels}\n", "known metrics are"),
    ("name: t\ndata: [d.jsonl]\nfields: {labels: l, answer: a}\n", "exactly one of `labels`"),
    ("name: t\ndata: [d.jsonl]\nfields: {labels: l}\nprimer: 'builtin:nope'\n", "unknown builtin 'nope'"),
    ("name: t\ndata: [d.jsonl]\nfields: {labels: l}\nshots: 3\n", "unknown key 'shots'"),
])
def test_bad_specs_name_the_file_and_the_key(tmp_path, spec_text, message):
    (tmp_path / "t.yaml").write_text(spec_text, encoding="utf-8")
    with pytest.raises(ValueError, match=message) as error:
        load_task_spec(tmp_path / "t.yaml")
    assert str(tmp_path / "t.yaml") in str(error.value)


def test_bad_records_name_file_line_and_field(tmp_path):
    (tmp_path / "t.yaml").write_text("name: t\ndata: [d.jsonl]\nfields: {labels: labels}\n", encoding="utf-8")
    (tmp_path / "d.jsonl").write_text('{"question": "q", "choices": ["a", "b"], "labels": [1, 0]}\n'
                                      '{"question": "q", "choices": ["a", "b"], "labels": [0, 0]}\n')
    with pytest.raises(ValueError, match=r"d.jsonl:2: no true choice"):
        load_task_items(load_task_spec(tmp_path / "t.yaml"))
    (tmp_path / "d.jsonl").write_text('{"question": "q", "choices": ["a", "b"]}\n')
    with pytest.raises(ValueError, match=r"d.jsonl:1: field 'labels': missing"):
        load_task_items(load_task_spec(tmp_path / "t.yaml"))


def test_unknown_task_lists_the_known_ones(capsys, tmp_path):
    assert cli_main(["--task", "nope", "--out", str(tmp_path / "x.json")]) == 2
    assert "known tasks: [" in capsys.readouterr().err


def test_acc_norm_divides_by_choice_length():
    item = MCItem("q", "ctx", ("a much longer true answer", "no"), (1, 0))
    row = question_scores([-10.0, -4.0], item, ["acc", "acc_norm"])
    assert row["acc"] == 0.0 and row["acc_norm"] == 1.0  # -10/25 > -4/2
