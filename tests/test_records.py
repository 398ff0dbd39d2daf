"""The one record reader: strict and lenient JSONL, CSV/TSV with true line numbers, and mlx-lm's three formats as text."""

from __future__ import annotations

import pytest

from yourai.records import (RecordError, iter_csv, iter_jsonl, iter_jsonl_lenient, iter_records, read_records,
                            record_text)


class CustomError(ValueError):
    pass


def test_yields_line_numbers_and_skips_blank_lines(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_text('{"id": 1}\n\n  \n{"id": 2}\n')
    assert list(iter_jsonl(path)) == [(1, {"id": 1}), (4, {"id": 2})]


def test_bad_json_names_file_and_line(tmp_path):
    path = tmp_path / "b.jsonl"
    path.write_text('{"id": 1}\n{"id": \n')
    with pytest.raises(CustomError, match=r"b\.jsonl:2: invalid JSON"):
        list(iter_jsonl(path, CustomError))


def test_non_object_line_is_refused(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text('[1, 2]\n')
    with pytest.raises(ValueError, match=r"c\.jsonl:1: .*expected a JSON object, got list"):
        list(iter_jsonl(path))


def test_record_text_covers_the_three_mlx_formats() -> None:
    assert record_text({"text": "t"}) == ("t", "text")
    assert record_text({"prompt": "p", "completion": "c"}) == ("p\nc", "completions")
    assert record_text({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}) \
        == ("a\nb", "chat")


def test_lenient_reading_yields_every_line_as_record_or_reason(tmp_path):
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(b'{"id": 1}\n\n{"id": \n[1]\n{"a": 1, "a": 2}\n\xff\xfe\n')
    reasons = [r.reason if isinstance(r, RecordError) else r for _, r in iter_jsonl_lenient(path)]
    assert reasons == [{"id": 1}, "blank_line", "malformed_json", "not_an_object", "duplicate_key", "invalid_utf8"]
    assert [n for n, _ in iter_jsonl_lenient(path, skip_blank=True)] == [1, 3, 4, 5, 6]


def test_csv_rows_keep_their_line_and_say_what_is_wrong(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text('id,text\na,"two\nlines"\n\nb,x,extra\nc,\n', encoding="utf-8")
    rows = list(iter_csv(path))
    assert rows[0] == (2, {"id": "a", "text": "two\nlines"})
    assert [(n, r.reason) for n, r in rows[1:3]] == [(4, "blank_line"), (5, "csv_field_count")]
    assert rows[3] == (6, {"id": "c"})  # empty cells are left out, not ""


def test_iter_records_picks_the_reader_by_suffix_and_read_records_is_strict(tmp_path):
    tsv = tmp_path / "t.tsv"
    tsv.write_text("id\ttext\n1\thello\n", encoding="utf-8")
    assert [r for _, r in iter_records(tsv)] == [{"id": "1", "text": "hello"}]
    bad = tmp_path / "b.jsonl"
    bad.write_text('{"id": 1}\nnope\n')
    with pytest.raises(ValueError, match=r"b\.jsonl:2: invalid JSON"):
        read_records(bad)
