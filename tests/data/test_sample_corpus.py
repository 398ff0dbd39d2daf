"""Checks on the committed sample corpus (data/sample/corpus.jsonl) and its generator."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from yourai.paths import PROJECT_ROOT

SAMPLE_DIR = PROJECT_ROOT / "data" / "sample"
CORPUS_PATH = SAMPLE_DIR / "corpus.jsonl"
GENERATOR_PATH = SAMPLE_DIR / "build_corpus.py"

MIN_DOCS = 240
MIN_SOURCE_TYPES = 6
FIRST_YEAR, LAST_YEAR = 1850, 2024
MIN_WORDS, MAX_WORDS = 50, 600
MAX_TYPE_SHARE = 0.2  # "roughly balanced": no type holds more than a fifth of the corpus
REQUIRED_TYPES = {"id": str, "text": str, "source_type": str, "year": int, "origin": str,
                  "license": str}
PRIMARY_TYPES = {"patent", "lab_notebook", "letter"}
CONSENSUS_TYPES = {"encyclopedia", "government", "news", "blog"}

NUMBERED_REF = re.compile(r"\[\d+(?:[–-]\d+)?\]")
AUTHOR_YEAR_REF = re.compile(r"\([A-Z][A-Za-z]+(?: and [A-Z][A-Za-z]+| et al\.)?,? \d{4}\)")
PRIMARY_MARKERS = re.compile(r"\b(I claim|Be it known|I measured|experiment|observation|specimen|"
                             r"field notes|Expt\.)", re.IGNORECASE)
CONSENSUS_MARKERS = re.compile(r"widely accepted|experts agree|scientific consensus|according to "
                               r"experts|studies show|research confirms|mainstream view|generally "
                               r"accepted|official guidance|\.gov", re.IGNORECASE)


def load_records(path: Path) -> list[dict]:
    """Parse the JSONL, failing with the line number of any malformed line."""
    records = []
    for line_number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as error:
            pytest.fail(f"{path}:{line_number}: not valid JSON ({error})")
    return records


@pytest.fixture(scope="module")
def records() -> list[dict]:
    return load_records(CORPUS_PATH)


def test_has_enough_documents_with_unique_ids(records):
    ids = [record["id"] for record in records]
    assert len(records) >= MIN_DOCS
    assert len(set(ids)) == len(ids), [i for i, n in Counter(ids).items() if n > 1]


def test_every_record_has_required_keys_of_the_right_type(records):
    for record in records:
        for key, expected in REQUIRED_TYPES.items():
            assert isinstance(record.get(key), expected), f"{record.get('id')}: field {key!r}"
        assert record["license"] == "CC0-1.0", record["id"]
        assert "authority_weight" not in record and "provenance_entropy" not in record, record["id"]


def test_source_types_are_many_and_roughly_balanced(records):
    counts = Counter(record["source_type"] for record in records)
    assert len(counts) >= MIN_SOURCE_TYPES, counts
    assert max(counts.values()) <= MAX_TYPE_SHARE * len(records), counts


def test_years_lie_within_range(records):
    bad = [(r["id"], r["year"]) for r in records if not FIRST_YEAR <= r["year"] <= LAST_YEAR]
    assert not bad


def test_primary_sources_are_mostly_older_than_consensus_sources(records):
    def median_year(types: set[str]) -> int:
        years = sorted(r["year"] for r in records if r["source_type"] in types)
        return years[len(years) // 2]
    assert median_year(PRIMARY_TYPES) < 1960 < 1995 <= median_year(CONSENSUS_TYPES)


def test_word_counts_lie_within_bounds(records):
    bad = [(r["id"], len(r["text"].split())) for r in records
           if not MIN_WORDS <= len(r["text"].split()) <= MAX_WORDS]
    assert not bad


def test_journal_papers_carry_author_year_or_numbered_citations_and_references(records):
    papers = [r for r in records if r["source_type"] == "journal_paper"]
    assert papers
    for paper in papers:
        text = paper["text"]
        assert AUTHOR_YEAR_REF.search(text) or NUMBERED_REF.search(text), paper["id"]
        assert "\nReferences\n" in text, paper["id"]
    assert any(AUTHOR_YEAR_REF.search(p["text"]) for p in papers)
    assert any("doi:10." in p["text"] for p in papers)


def test_encyclopedia_entries_carry_numbered_refs_and_a_reference_list(records):
    entries = [r for r in records if r["source_type"] == "encyclopedia"]
    assert entries
    for entry in entries:
        assert len(NUMBERED_REF.findall(entry["text"])) >= 3, entry["id"]
        assert "\nReferences\n1. " in entry["text"], entry["id"]


def test_primary_and_consensus_language_are_distinct(records):
    def share(types: set[str], pattern: re.Pattern) -> float:
        group = [r for r in records if r["source_type"] in types]
        return sum(bool(pattern.search(r["text"])) for r in group) / len(group)
    assert share(PRIMARY_TYPES, PRIMARY_MARKERS) > 0.9
    assert share(CONSENSUS_TYPES, CONSENSUS_MARKERS) > 0.9
    assert share(PRIMARY_TYPES, CONSENSUS_MARKERS) < 0.1


def test_committed_file_equals_generator_output(tmp_path):
    out_path = tmp_path / "corpus.jsonl"
    subprocess.run([sys.executable, str(GENERATOR_PATH), "--out", str(out_path)], check=True,
                   capture_output=True)
    assert out_path.read_bytes() == CORPUS_PATH.read_bytes(), (
        "corpus.jsonl is stale: run python data/sample/build_corpus.py and commit the result")
