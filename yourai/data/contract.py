"""The data contract: what a record needs to enter curation, how missing fields are filled, and why one fails.

A curated record carries `id`, one of mlx-lm's three text layouts (`text`, `prompt`+`completion`,
`messages`) and the provenance fields `source_type`, `origin` and `license`. Users' own files rarely
have the provenance fields, so curation fills them instead of rejecting the record:

1. a field mapping (`curate.fields`, a source's `fields`, `--field origin=url`) copies the user's
   column into the contract's name; `url_or_origin` / `url` / `source_url` are known names for `origin`;
2. defaults (`curate.defaults`, a source's `defaults`, `--default license=CC0-1.0`) fill what is left;
3. the rest: `id` and `origin` become `file:line`, `source_type` and `license` become `unknown`
   (the scorer treats an unknown source type as "no prior").

Every fill is counted per field and per way in report.json. What cannot be repaired is a `Reject`
naming the field and the true reason.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from datetime import date
from typing import Any, Iterator

from yourai.data.sources import RawItem, Reject, SourceSpec, display_name
from yourai.formula import AUTHORITY_RANGE
from yourai.records import record_text
from yourai.scoring.metadata import EARLIEST_YEAR
from yourai.scoring.patterns import UNKNOWN_SOURCE_TYPE

YEAR_BOUNDS = (EARLIEST_YEAR, date.today().year + 1)  # the scorer's bounds, so both agree
REQUIRED_STRINGS = ("id", "source_type", "origin", "license")
UNKNOWN_LICENSE = "unknown"
FIELD_ALIASES = {"origin": ("url_or_origin", "url", "source_url")}  # ../shared corpora use url_or_origin
RESERVED_KEYS = frozenset({"_kind", "_source", "_line", "_format"})  # curate's per-record bookkeeping
FILLED_BY_LOCATION, FILLED_UNKNOWN, FILLED_DEFAULT = "file:line", "unknown", "default"
_CONTROL_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")  # C0 controls except \t \n \r
_SURROGATE_RE = re.compile(r"[\ud800-\udfff]")


# ------------------------------------------------------------------ filling


def fill_contract(data: Mapping[str, Any], location: str, fields: Mapping[str, str],
                  defaults: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """(record with missing contract fields filled, {field: how it was filled}); `location` is `file:line`."""
    out, how = dict(data), {}
    for target, name in fields.items():
        if out.get(target) is None and out.get(name) is not None:
            out[target], how[target] = out[name], f"from '{name}'"
    for target, aliases in FIELD_ALIASES.items():
        alias = next((a for a in aliases if out.get(target) is None and out.get(a) is not None), None)
        if alias is not None:
            out[target], how[target] = out[alias], f"from '{alias}'"
    for target, value in defaults.items():
        if out.get(target) is None:
            out[target], how[target] = value, FILLED_DEFAULT
    fallback = {"id": location, "origin": location, "source_type": UNKNOWN_SOURCE_TYPE, "license": UNKNOWN_LICENSE}
    for target, value in fallback.items():
        if out.get(target) is None:
            out[target] = value
            how[target] = FILLED_BY_LOCATION if value == location else FILLED_UNKNOWN
    return out, how


def fill_item(item: RawItem, spec: SourceSpec) -> tuple[RawItem, dict[str, str]]:
    """A parsed item with its contract fields filled by the source's mapping and defaults (see above)."""
    if item.data is None:
        return item, {}
    data, how = fill_contract(item.data, f"{display_name(item.source)}:{item.line}", spec.fields, spec.defaults)
    return RawItem(item.source, item.kind, item.line, data), how


# ------------------------------------------------------------------ checks


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _check_string(data: Mapping[str, Any], name: str, required: bool) -> tuple[str, str] | None:
    """(reason, detail) when field `name` is missing, empty or not a string."""
    if name not in data or data[name] is None:
        return ("missing_field", f"'{name}' is required") if required else None
    value = data[name]
    if not isinstance(value, str):
        return "mistyped_field", f"'{name}' must be a string, got {_type_name(value)} {value!r:.60}"
    if not value.strip():
        return "empty_field", f"'{name}' is empty"
    return None


def _check_number(data: Mapping[str, Any], name: str, lo: float | None, hi: float | None,
                  integer: bool = False) -> tuple[str, str] | None:
    value = data.get(name)
    if value is None:
        return None
    wanted = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, wanted):
        kind = "an integer" if integer else "a number"
        return "mistyped_field", f"'{name}' must be {kind}, got {_type_name(value)} {value!r:.60}"
    if not math.isfinite(value):
        return "not_finite", f"'{name}' must be finite, got {value!r}"
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        return "out_of_range", f"'{name}' must be in [{lo}, {hi}], got {value!r}"
    return None


def _missing_text_detail(data: Mapping[str, Any]) -> str:
    keys = sorted(k for k in data if k not in REQUIRED_STRINGS)
    return ("one of 'text', 'prompt'+'completion' or 'messages' is required; the record has "
            f"{keys[:8]}: map one of them with curate.fields (e.g. `--field text={keys[0]}`)" if keys else
            "one of 'text', 'prompt'+'completion' or 'messages' is required; the record has no other field")


def _check_text_payload(data: Mapping[str, Any]) -> tuple[str, str, str] | None:
    """(field, reason, detail) when no usable text / prompt+completion / messages is present."""
    if "text" in data:
        problem = _check_string(data, "text", True)
        if problem and problem[0] == "empty_field":
            problem = ("empty_text", "text is empty or whitespace only")
        return ("text", *problem) if problem else None
    if "prompt" in data or "completion" in data:
        for name in ("prompt", "completion"):
            if problem := _check_string(data, name, True):
                return (name, *problem)
        return None
    if "messages" in data:
        messages = data["messages"]
        ok = isinstance(messages, list) and messages and all(
            isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
            for m in messages)
        if not ok:
            return "messages", "mistyped_field", "'messages' must be a non-empty list of {role, content} strings"
        if not any(m["content"].strip() for m in messages):
            return "messages", "empty_field", "every message in 'messages' has empty content"
        return None
    return "text", "missing_field", _missing_text_detail(data)


def _field_problems(data: Mapping[str, Any]) -> Iterator[tuple[str, str, str]]:
    """Every (field, reason, detail) wrong with a parsed record, most basic first."""
    if problem := _check_text_payload(data):
        yield problem
    for name in REQUIRED_STRINGS:
        if problem := _check_string(data, name, True):
            yield (name, *problem)
    if problem := _check_number(data, "year", *YEAR_BOUNDS, integer=True):
        yield ("year", *problem)
    if problem := _check_number(data, "authority_weight", *AUTHORITY_RANGE):
        yield ("authority_weight", *problem)
    if problem := _check_number(data, "provenance_entropy", 0.0, None):
        yield ("provenance_entropy", *problem)
    supplied = [k for k in ("authority_weight", "provenance_entropy") if data.get(k) is not None]
    if len(supplied) == 1:
        missing = "provenance_entropy" if supplied == ["authority_weight"] else "authority_weight"
        yield missing, "partial_scores", f"'{supplied[0]}' is supplied without '{missing}': give both or neither"


def _content_problem(text: str, min_words: int) -> tuple[str, str] | None:
    if _SURROGATE_RE.search(text):
        return "invalid_unicode", "text contains a lone UTF-16 surrogate (not encodable as UTF-8)"
    if match := _CONTROL_RE.search(text):
        return "control_characters", f"text contains control character {match.group()!r} at {match.start()}"
    if not text.strip():
        return "empty_text", "text is empty or whitespace only"
    words = len(text.split())
    if words < min_words:
        return "too_short", f"text has {words} word(s), fewer than min_words={min_words}"
    return None


def _text_field(data: Mapping[str, Any], text_format: str, reason: str) -> str:
    """The record field a content problem belongs to (chat and completion records have no `text`)."""
    if text_format == "chat":
        return "messages"
    if text_format == "completions":
        bad = {"invalid_unicode": _SURROGATE_RE, "control_characters": _CONTROL_RE}.get(reason)
        return "prompt" if bad is not None and bad.search(str(data.get("prompt", ""))) else "completion"
    return "text"


def _unencodable_field(data: Mapping[str, Any]) -> str | None:
    """The first key whose name or value (nested too) would not survive writing as UTF-8."""
    for name, value in data.items():
        rendered = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
        if _SURROGATE_RE.search(name) or _SURROGATE_RE.search(rendered):
            return name
    return None


def _non_finite(value: Any, where: str) -> tuple[str, float] | None:
    """(dotted place, value) of the first NaN or ±Infinity anywhere in a value: JSON cannot hold them."""
    if isinstance(value, float) and not math.isfinite(value):
        return where, value
    items = value.items() if isinstance(value, Mapping) else enumerate(value) if isinstance(value, list) else ()
    for key, inner in items:
        if found := _non_finite(inner, f"{where}.{key}" if isinstance(key, str) else f"{where}[{key}]"):
            return found
    return None


def validate(item: RawItem, min_words: int) -> dict[str, Any] | Reject:
    """The record in contract form (extras kept, `text` always set), or the first reason it fails."""
    data = item.data or {}

    def reject(field_name: str, reason: str, detail: str) -> Reject:
        record_id = data.get("id") if isinstance(data.get("id"), str) else None
        return Reject("validate", reason, detail, item.source, item.line, field_name, record_id)

    for field_name, reason, detail in _field_problems(data):
        return reject(field_name, reason, detail)
    text, text_format = record_text(data)
    if problem := _content_problem(text, min_words):
        return reject(_text_field(data, text_format, problem[0]), *problem)
    if reserved := sorted(RESERVED_KEYS & set(data)):
        return reject(reserved[0], "reserved_field", f"'{reserved[0]}' is reserved for curation bookkeeping")
    if name := _unencodable_field(data):
        return reject(name, "invalid_unicode", f"'{name}' contains a lone UTF-16 surrogate (not encodable as UTF-8)")
    for name, value in data.items():
        if found := _non_finite(value, name):
            return reject(name, "not_finite", f"'{found[0]}' is {found[1]!r}: JSON has no NaN or Infinity, and strict "
                                              "parsers reject a file that holds one")
    record = {**data, "text": text, "year": data.get("year")}
    record["_format"] = text_format
    return record
