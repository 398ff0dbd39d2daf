"""The shared JSONL reader names file and line, and raises the caller's error type."""

from __future__ import annotations

import pytest

from yourai.jsonl import iter_jsonl


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
    with pytest.raises(ValueError, match=r"c\.jsonl:1: expected a JSON object, got list"):
        list(iter_jsonl(path))
