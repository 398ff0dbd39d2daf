"""The data contract: missing provenance filled (and how), everything else rejected with the true field and reason."""

from __future__ import annotations

import pytest

from yourai.data.contract import FILLED_BY_LOCATION, FILLED_DEFAULT, FILLED_UNKNOWN, fill_contract, validate
from yourai.data.sources import RawItem

GOOD = {"id": "g", "text": "five words are enough here", "source_type": "letter", "origin": "o", "license": "l"}


def _item(**changes) -> RawItem:
    return RawItem("f.jsonl", "jsonl", 7, {**GOOD, **changes})


def test_validate_keeps_extras_and_marks_format() -> None:
    record = validate(_item(author="A"), min_words=5)
    assert record["author"] == "A" and record["_format"] == "text" and record["year"] is None


@pytest.mark.parametrize("changes, field, reason", [
    ({"year": 999}, "year", "out_of_range"),
    ({"authority_weight": 0.995, "provenance_entropy": 1.0}, "authority_weight", "out_of_range"),
    ({"provenance_entropy": 1.0}, "authority_weight", "partial_scores"),
    ({"text": "tab\tand newline\nare fine but \x07 is not"}, "text", "control_characters"),
    ({"score": float("nan")}, "score", "not_finite"),
    ({"meta": {"ratios": [1.0, float("inf")]}}, "meta", "not_finite"),
])
def test_validate_names_field_and_reason(changes: dict, field: str, reason: str) -> None:
    reject = validate(_item(**changes), min_words=5)
    assert (reject.field_name, reject.reason) == (field, reason)
    assert reject.message().startswith("f.jsonl:7: field")


def test_non_finite_extra_names_the_nested_place() -> None:
    reject = validate(_item(meta={"ratios": [1.0, float("inf")]}), min_words=5)
    assert "'meta.ratios[1]' is inf" in reject.detail and "JSON has no NaN or Infinity" in reject.detail


def test_wrong_schema_is_reported_as_missing_text_naming_the_fields_it_has() -> None:
    data = {k: v for k, v in GOOD.items() if k != "text"} | {"body": "a long enough body of text", "title": "T"}
    reject = validate(RawItem("f.jsonl", "jsonl", 3, data), min_words=5)
    assert (reject.reason, reject.field_name) == ("missing_field", "text")
    assert "['body', 'title']" in reject.detail and "--field text=body" in reject.detail


def test_chat_record_with_only_empty_messages_names_messages_not_text() -> None:
    data = {k: v for k, v in GOOD.items() if k != "text"} | {"messages": [{"role": "user", "content": "  "}]}
    reject = validate(RawItem("f.jsonl", "jsonl", 3, data), min_words=5)
    assert (reject.reason, reject.field_name) == ("empty_field", "messages")


def test_completion_record_too_short_names_the_completion_field() -> None:
    data = {k: v for k, v in GOOD.items() if k != "text"} | {"prompt": "Why?", "completion": "Because."}
    reject = validate(RawItem("f.jsonl", "jsonl", 3, data), min_words=5)
    assert (reject.reason, reject.field_name) == ("too_short", "completion")


def test_fill_uses_mapping_then_known_names_then_defaults_then_location() -> None:
    data, how = fill_contract({"body": "words", "url_or_origin": "https://x"}, "corpus.jsonl:4",
                              fields={"text": "body"}, defaults={"license": "CC0-1.0"})
    assert data == {"body": "words", "url_or_origin": "https://x", "text": "words", "origin": "https://x",
                    "license": "CC0-1.0", "id": "corpus.jsonl:4", "source_type": "unknown"}
    assert how == {"text": "from 'body'", "origin": "from 'url_or_origin'", "license": FILLED_DEFAULT,
                   "id": FILLED_BY_LOCATION, "source_type": FILLED_UNKNOWN}


def test_fill_never_replaces_a_value_the_record_has() -> None:
    data, how = fill_contract(GOOD, "f:1", fields={"origin": "url"}, defaults={"license": "other"})
    assert data == GOOD and how == {}
