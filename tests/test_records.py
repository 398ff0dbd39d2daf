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


# ---------------------------------------------------------------- CSV files as users have them


def test_a_long_csv_cell_is_read_whole(tmp_path):
    """Python's csv stops at 131,072 characters by default; a long text cell is a record, not an abort."""
    path = tmp_path / "long.csv"
    path.write_text("id,text\na," + "word " * 60_000 + "\nb,short\n", encoding="utf-8")
    rows = list(iter_csv(path))
    assert [(n, len(r["text"])) for n, r in rows] == [(2, 300_000), (3, 5)]


def test_a_cell_over_the_limit_is_one_error_and_the_next_row_is_still_read(tmp_path, monkeypatch):
    import yourai.records as records

    monkeypatch.setattr(records, "MAX_CSV_CELL_CHARS", 1_000)
    path = tmp_path / "huge.csv"
    path.write_text("id,text\na," + "x" * 5_000 + "\nb,short\n", encoding="utf-8")
    (first_line, first), (second_line, second) = iter_csv(path)
    assert (first_line, first.reason) == (2, "csv_cell_too_large")
    assert first.message() == f"{path}:2: CSV cell too large: a cell is longer than 1,000 characters"
    assert (second_line, second) == (3, {"id": "b", "text": "short"})


def test_a_csv_without_a_header_loses_no_row(tmp_path):
    path = tmp_path / "nohead.csv"
    path.write_text("1923,A patent for a barometer\n1924,Another data row\n", encoding="utf-8")
    rows = list(iter_csv(path))
    assert [(n, r.reason) for n, r in rows] == [(1, "csv_no_header"), (2, "csv_no_header")]
    assert "reads as data, not column names ('1923')" in rows[0][1].detail and "csv_columns" in rows[0][1].detail


def test_named_columns_read_a_header_less_csv_from_line_1(tmp_path):
    path = tmp_path / "nohead.csv"
    path.write_text("1923,A patent for a barometer\n", encoding="utf-8")
    assert list(iter_csv(path, ["year", "text"])) == [(1, {"year": "1923", "text": "A patent for a barometer"})]


@pytest.mark.parametrize("header, problem", [
    (["id", "text", ""], None), (["Title", "Body text"], None), (["id", "id"], "repeats a column name"),
    (["a1", "x" * 80], "reads as data"), (["", ""], "is empty"),
])
def test_header_problem(header, problem):
    from yourai.records import header_problem

    found = header_problem(header)
    assert found is None if problem is None else problem in found
