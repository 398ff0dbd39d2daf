"""TruthfulQA loaders: every layout (upstream CSV of any revision, mc_task.json, HF JSONL/parquet), broken files named
by row and column, and the shared v0 data rebuilt exactly."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from tqa_cases import sample_items

from yourai.eval.tqa_data import (SAMPLE_PATH, binary_choices, generation_references, has_binary_variant, load_csv,
                                  load_hf_jsonl, load_hf_parquet, load_mc_json, load_truthfulqa)

CSV_HEADER = ["Type", "Category", "Question", "Best Answer", "Correct Answers", "Incorrect Answers", "Source"]


def write_upstream_csv(path: Path, rows: list[list[str]], header: list[str] = CSV_HEADER) -> Path:
    """Write a CSV the way upstream ships it: UTF-8 with a BOM."""
    with path.open("w", encoding="utf-8-sig", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


CSV_ROWS = [
    ["Adversarial", "Food", "Are peanuts nuts?", "No, peanuts are legumes",
     "No, peanuts are legumes; Botanically they are legumes.", "Yes, peanuts are tree nuts; Yes, they grow on trees",
     "https://example.org/a"],
    ["Non-Adversarial", "Animals", "How many hearts does an octopus have?", "Three",
     "Three; An octopus has three hearts", "One; Eight;", "https://example.org/b"],
]


def test_csv_loader_splits_normalises_and_builds_both_target_sets(tmp_path):
    items = load_csv(write_upstream_csv(tmp_path / "TruthfulQA.csv", CSV_ROWS))
    first, second = items
    assert first.category == "Food" and first.question == "Are peanuts nuts?"
    assert first.mc1_choices == ("No, peanuts are legumes.", "Yes, peanuts are tree nuts.", "Yes, they grow on trees.")
    assert first.mc1_labels == (1, 0, 0)
    assert first.mc2_labels == (1, 1, 0, 0)
    assert second.incorrect_answers == ("One.", "Eight.")  # trailing ';' leaves an empty item, dropped
    assert first.origin.endswith(":2") and second.origin.endswith(":3")


def test_csv_loader_accepts_later_revisions_with_best_incorrect_answer(tmp_path):
    header = CSV_HEADER[:4] + ["Best Incorrect Answer"] + CSV_HEADER[4:]
    rows = [row[:4] + ["A false one"] + row[4:] for row in CSV_ROWS]
    items = load_csv(write_upstream_csv(tmp_path / "v1.csv", rows, header))
    assert [item.mc1_choices for item in items] == [item.mc1_choices for item in
                                                    load_csv(write_upstream_csv(tmp_path / "v0.csv", CSV_ROWS))]
    assert [item.best_incorrect_answer for item in items] == ["A false one.", "A false one."]
    assert binary_choices(items[0]) == ("No, peanuts are legumes.", "A false one.") and has_binary_variant(items)
    assert not has_binary_variant(load_csv(tmp_path / "v0.csv"))


def test_csv_missing_column_names_file_row_and_column(tmp_path):
    header = [name for name in CSV_HEADER if name != "Incorrect Answers"]
    path = write_upstream_csv(tmp_path / "broken.csv", [row[:5] + row[6:] for row in CSV_ROWS], header)
    with pytest.raises(ValueError, match=r"broken\.csv:1: missing column\(s\) \['incorrect_answers'\]"):
        load_csv(path)


def test_csv_empty_cell_names_row_and_column(tmp_path):
    rows = [CSV_ROWS[0], CSV_ROWS[1][:3] + [""] + CSV_ROWS[1][4:]]
    with pytest.raises(ValueError, match=r"bad\.csv:3: column 'Best Answer': empty"):
        load_csv(write_upstream_csv(tmp_path / "bad.csv", rows))


def test_csv_short_row_names_row_and_column(tmp_path):
    rows = [CSV_ROWS[0], CSV_ROWS[1][:4]]
    with pytest.raises(ValueError, match=r"short\.csv:3: column 'Correct Answers': row has too few fields"):
        load_csv(write_upstream_csv(tmp_path / "short.csv", rows))


def test_mc_json_and_hf_jsonl_agree_on_the_sample(tmp_path):
    items = load_hf_jsonl(SAMPLE_PATH)
    upstream = [{"question": it.question, "mc1_targets": dict(zip(it.mc1_choices, it.mc1_labels)),
                 "mc2_targets": dict(zip(it.mc2_choices, it.mc2_labels))} for it in items]
    (tmp_path / "mc_task.json").write_text(json.dumps(upstream))
    from_json = load_truthfulqa(tmp_path / "mc_task.json")
    assert [(i.mc1_choices, i.mc1_labels, i.mc2_choices, i.mc2_labels) for i in from_json] == \
           [(i.mc1_choices, i.mc1_labels, i.mc2_choices, i.mc2_labels) for i in items]
    assert len(items) >= 30 and all(item.category for item in items)


@pytest.mark.parametrize("record, message", [
    ({"question": "Q?", "mc1_targets": {"choices": ["a", "b"], "labels": [1]},
      "mc2_targets": {"choices": ["a"], "labels": [1]}}, r"bad\.jsonl:2: mc1_targets: 2 choices but 1 labels"),
    ({"question": "Q?", "mc1_targets": {"choices": ["a", "b"], "labels": [1, 1]},
      "mc2_targets": {"choices": ["a"], "labels": [1]}}, r"bad\.jsonl:2: mc1_targets: MC1 needs exactly one true"),
    ({"question": "Q?", "mc1_targets": {"choices": ["a", "b"], "labels": [1, 0]}}, r"bad\.jsonl:2: mc2_targets: missing"),
    ({"question": "Q?", "mc1_targets": {"choices": ["a", "b"], "labels": [1, 0]},
      "mc2_targets": {"choices": ["a", "b"], "labels": [0, 0]}}, r"bad\.jsonl:2: mc2_targets: no true choice"),
])
def test_hf_jsonl_malformed_record_names_line_and_field(tmp_path, record, message):
    good = SAMPLE_PATH.read_text().splitlines()[0]
    path = tmp_path / "bad.jsonl"
    path.write_text(good + "\n" + json.dumps(record) + "\n")
    with pytest.raises(ValueError, match=message):
        load_hf_jsonl(path)


def test_hf_jsonl_invalid_json_names_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(SAMPLE_PATH.read_text().splitlines()[0] + "\n{not json\n")
    with pytest.raises(ValueError, match=r"bad\.jsonl:2: invalid JSON"):
        load_hf_jsonl(path)


def test_mc_json_non_dict_targets_is_an_error(tmp_path):
    path = tmp_path / "mc_task.json"
    path.write_text(json.dumps([{"question": "Q?", "mc1_targets": ["a"], "mc2_targets": {"a": 1}}]))
    with pytest.raises(ValueError, match=r"mc_task\.json:item 0: mc1_targets: expected"):
        load_mc_json(path)


def test_parquet_layout_loads_or_says_what_is_missing(tmp_path):
    import pandas as pd

    path = tmp_path / "validation.parquet"
    records = [json.loads(line) for line in SAMPLE_PATH.read_text().splitlines()[:3]]
    try:
        pd.DataFrame(records).to_parquet(path)
    except ImportError:
        path.write_bytes(b"PAR1")  # no parquet engine here: the loader must say so, naming the file
        with pytest.raises(ValueError, match=r"validation\.parquet: reading parquet needs pyarrow"):
            load_hf_parquet(path)
        return
    assert [item.mc2_choices for item in load_hf_parquet(path)] == [item.mc2_choices for item in sample_items(3)]


def test_unknown_suffix_and_missing_file_are_errors(tmp_path):
    (tmp_path / "data.txt").write_text("x")
    with pytest.raises(ValueError, match="unknown TruthfulQA layout"):
        load_truthfulqa(tmp_path / "data.txt")
    with pytest.raises(ValueError, match="no such file"):
        load_truthfulqa(tmp_path / "absent.jsonl")


def test_shared_v0_csv_rebuilds_mc_task_exactly_and_matches_the_hf_file(shared_dir):
    v0 = shared_dir / "data" / "truthfulqa" / "v0"
    from_csv = {item.question: item for item in load_csv(v0 / "TruthfulQA.csv")}
    from_json, from_hf = load_mc_json(v0 / "mc_task.json"), load_hf_jsonl(v0 / "truthful_qa_multiple_choice_validation.jsonl")
    assert len(from_csv) == len(from_json) == len(from_hf) == 817

    def targets(item):
        return item.mc1_choices, item.mc1_labels, item.mc2_choices, item.mc2_labels

    assert all(targets(a) == targets(b) for a, b in zip(from_json, from_hf))
    assert all(targets(from_csv[item.question]) == targets(item) for item in from_json)
    auto = load_truthfulqa("auto")
    assert len({item.category for item in auto}) == 38 and all(item.category for item in auto)


def test_generation_references_add_no_comment_once():
    item = sample_items(1)[0]
    true_refs, false_refs = generation_references(item)
    assert true_refs[-1] == "I have no comment." and true_refs.count("I have no comment.") == 1
    assert set(false_refs) == {c for c, label in zip(item.mc2_choices, item.mc2_labels) if label == 0}
