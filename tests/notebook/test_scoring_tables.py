"""Notebook 02's tables: corpora loaded as groups, a DataFrame of scores with rejects kept, evidence in a line."""

from __future__ import annotations

import json
from pathlib import Path

from texts import RICH_TEXT

from yourai.notebook.scoring_tables import evidence_summary, load_corpora, score_table
from yourai.scoring import score


def test_load_corpora_tags_records(tmp_path: Path) -> None:
    (tmp_path / "c1").mkdir()
    (tmp_path / "c1" / "x.jsonl").write_text(json.dumps({"id": 1, "text": "t"}) + "\n")
    assert load_corpora(tmp_path) == {"c1": [{"id": 1, "text": "t", "corpus": "c1"}]}


def test_score_table_labels_groups_and_keeps_rejects() -> None:
    records = [{"id": "p", "text": RICH_TEXT, "source_type": "patent", "year": 1900},
               {"id": "g", "text": RICH_TEXT, "corpus": "medquad_nih_consensus", "year": 2017},
               {"id": "x", "text": ""}]
    table = score_table(records)
    assert list(table["label"][:2]) == ["primary", "consensus"] and table["rejected"][2]
    assert list(table["era"][:2]) == ["1870–1969", "1995+"]
    text_only = score_table(records, use_metadata=False)
    assert text_only["authority_weight"][0] != table["authority_weight"][0]


def test_evidence_summary_ranks_by_authority_moved() -> None:
    summary = evidence_summary(score(RICH_TEXT), limit=2)
    assert summary.startswith("institution:journal_nature×1 (+0.350)") and summary.count(";") == 1


def test_load_sources_reads_what_stage_01_curates(tmp_path: Path) -> None:
    from yourai.notebook.scoring_tables import load_sources

    (tmp_path / "a.jsonl").write_text(json.dumps({"text": "one"}) + "\n{broken\n" + json.dumps({"text": "two"}) + "\n")
    (tmp_path / "b.csv").write_text("id,text\nx,three\n")
    (tmp_path / "texts").mkdir()
    (tmp_path / "texts" / "c.md").write_text("four")
    groups = load_sources([str(tmp_path / "a.jsonl"), {"path": str(tmp_path / "b.csv")}, str(tmp_path / "texts")])
    assert {name: [r["text"] for r in records] for name, records in groups.items()} == {
        "a": ["one", "two"], "b": ["three"], "texts": ["four"]}
    # filled as curation fills them: ids kept or file:line, an unknown source type said so
    assert [r["id"] for r in groups["a"]] == [f"{tmp_path / 'a.jsonl'}:1", f"{tmp_path / 'a.jsonl'}:3"]
    assert groups["b"][0]["id"] == "x" and groups["texts"][0]["id"] == "c"
    assert {r["source_type"] for records in groups.values() for r in records} == {"unknown"}
