"""Readers: lazy, line-accurate, explicit about every failure (the contract check is test_contract.py)."""

from __future__ import annotations

import builtins
import json
from pathlib import Path

import pytest

from yourai import records

from yourai.paths import PROJECT_ROOT
from yourai.data.sources import SourceError, iter_source, parse_source, resolve_path

GOOD = {"id": "g", "text": "five words are enough here", "source_type": "letter", "origin": "o", "license": "l"}


def test_jsonl_reader_is_lazy_and_strips_bom_and_crlf(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(GOOD).encode() + b"\r\n" + b"{broken\n")
    items = iter_source(parse_source(str(path)))
    first = next(items)
    assert first.data == GOOD and first.line == 1
    second = next(items)
    assert second.reject.reason == "malformed_json" and second.line == 2


def test_too_long_line_is_rejected_and_the_next_line_still_read(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(records, "MAX_LINE_BYTES", 64)
    path = tmp_path / "a.jsonl"
    path.write_text("x" * 200 + "\n" + json.dumps({"id": "s"}) + "\n", encoding="utf-8")
    items = list(iter_source(parse_source(str(path))))
    assert [i.reject.reason if i.reject else "ok" for i in items] == ["line_too_long", "ok"]
    assert items[1].line == 2


def test_csv_rows_are_numbered_by_their_first_physical_line(tmp_path: Path) -> None:
    path = tmp_path / "a.csv"
    path.write_text('id,text\na,"one\ntwo"\nb,three\n', encoding="utf-8")
    items = list(iter_source(parse_source(str(path))))
    assert [(i.line, i.data["id"]) for i in items] == [(2, "a"), (4, "b")]


def test_front_matter_and_sidecar_metadata(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.md").write_text("---\nsource_type: letter\nyear: 1850\n---\nBody here.", encoding="utf-8")
    (tmp_path / "b.txt").write_text("Plain body.", encoding="utf-8")
    (tmp_path / "b.json").write_text('{"source_type": "news", "id": "custom"}', encoding="utf-8")
    items = {i.data["id"]: i.data for i in iter_source(parse_source(str(tmp_path)))}
    assert items["sub/a"] == {"id": "sub/a", "source_type": "letter", "year": 1850, "text": "Body here."}
    assert items["custom"]["source_type"] == "news" and items["custom"]["text"] == "Plain body."


def test_source_options_override_the_run_wide_defaults_and_fields(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    path.write_text(json.dumps({"id": "x", "text": "t"}) + "\n", encoding="utf-8")
    spec = parse_source({"path": str(path), "defaults": {"source_type": "wiki"}, "fields": {"text": "body"}},
                        defaults={"source_type": "news", "license": "CC0-1.0"}, fields={"origin": "url"})
    assert spec.defaults == {"source_type": "wiki", "license": "CC0-1.0"}
    assert spec.fields == {"origin": "url", "text": "body"}
    assert next(iter_source(spec)).data == {"id": "x", "text": "t"}  # the reader reads; the contract fills
    with pytest.raises(SourceError, match="'fields' must map contract fields to field names"):
        parse_source({"path": str(path), "fields": {"text": 3}})


def test_unknown_kind_missing_path_and_bad_mapping_are_source_errors(tmp_path: Path) -> None:
    (tmp_path / "a.parquet").write_bytes(b"")
    with pytest.raises(SourceError, match="unknown source kind"):
        parse_source(str(tmp_path / "a.parquet"))
    with pytest.raises(SourceError, match="not found"):
        parse_source(str(tmp_path / "nope.jsonl"))
    with pytest.raises(SourceError, match="needs 'path'"):
        parse_source({"file": "x"})


def test_relative_paths_fall_back_to_the_project_root(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert resolve_path("configs/default.yaml") == PROJECT_ROOT / "configs/default.yaml"
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "default.yaml").write_text("x")
    assert resolve_path("configs/default.yaml") == Path("configs/default.yaml")


def test_hf_source_without_datasets_names_the_extra(monkeypatch) -> None:
    real_import = builtins.__import__

    def no_datasets(name, *args, **kwargs):
        if name == "datasets":
            raise ImportError("No module named 'datasets'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_datasets)
    spec = parse_source("hf:truthful_qa:validation")
    assert (spec.kind, spec.location, spec.hf_split) == ("hf", "truthful_qa", "validation")
    with pytest.raises(SourceError, match=r'pip install "yourai\[hf\]"'):
        next(iter_source(spec))
