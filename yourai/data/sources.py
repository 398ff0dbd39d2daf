"""Raw sources → candidate records, one at a time, and the data-contract check each must pass.

Readers (JSONL, CSV, folders of .txt/.md, Hugging Face datasets) yield `RawItem`s lazily so
memory never depends on the input size. Anything a reader cannot parse becomes a `Reject`
carrying the file, line and reason; `validate` then checks the fields of everything that did
parse. Nothing is dropped without a `Reject` naming why.
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any, Iterator, Mapping

import yaml

from yourai.formula import AUTHORITY_RANGE
from yourai.paths import PROJECT_ROOT
from yourai.records import EXCERPT_CHARS, RecordError, iter_csv, iter_jsonl_lenient, record_text
from yourai.scoring.metadata import EARLIEST_YEAR

YEAR_BOUNDS = (EARLIEST_YEAR, date.today().year + 1)  # the scorer's bounds, so both agree
TEXT_SUFFIXES = (".txt", ".md")
HF_PREFIX = "hf:"
REQUIRED_STRINGS = ("id", "source_type", "origin", "license")
RESERVED_KEYS = frozenset({"_kind", "_source", "_line", "_format"})  # curate's per-record bookkeeping
_CONTROL_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")  # C0 controls except \t \n \r
_SURROGATE_RE = re.compile(r"[\ud800-\udfff]")
_FRONT_MATTER_RE = re.compile(r"\A---[ \t]*\r?\n(.*?)\r?\n---[ \t]*(?:\r?\n|\Z)", re.S)


class SourceError(ValueError):
    """A source that cannot be read at all (missing path, unknown kind, missing extra)."""


@dataclass(frozen=True)
class Reject:
    """Why one input record (or one chunk of it) is not in the output."""

    stage: str  # read | validate | score | contamination | dedup_exact | dedup_near | balance
    reason: str  # a stable code, counted in report.json
    detail: str  # the human explanation, naming the value
    source: str
    line: int
    field_name: str | None = None  # the record field at fault ("field" in rejects.jsonl)
    id: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"stage": self.stage, "reason": self.reason, "field": self.field_name, "detail": self.detail,
                "source": self.source, "line": self.line, "id": self.id, **self.extra}

    def message(self) -> str:
        where = f"{self.source}:{self.line}" + (f": field '{self.field_name}'" if self.field_name else "")
        return f"{where}: {self.reason}: {self.detail}"


@dataclass(frozen=True)
class SourceSpec:
    """One source: where it is, what kind it is, and defaults for fields it lacks."""

    location: str  # a resolved file/folder path, or the HF dataset name
    kind: str  # jsonl | csv | text | hf
    defaults: Mapping[str, Any] = field(default_factory=dict)
    fill_from: Mapping[str, str] = field(default_factory=dict)  # contract field → source field to copy when absent
    hf_split: str = "train"
    hf_config: str | None = None


@dataclass(frozen=True)
class RawItem:
    """One parsed input record, or the reject that explains why it could not be parsed."""

    source: str
    kind: str
    line: int
    data: dict[str, Any] | None
    reject: Reject | None = None


# ------------------------------------------------------------------ resolving sources


def resolve_path(path: str | Path) -> Path:
    """Relative paths: the current directory first, then the project root (configs name those)."""
    candidate = Path(path).expanduser()
    if candidate.is_absolute() or candidate.exists():
        return candidate
    from_root = PROJECT_ROOT / candidate
    return from_root if from_root.exists() else candidate


def _kind_of(path: Path) -> str:
    if path.is_dir():
        return "text"
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json", ".ndjson"):
        return "jsonl"
    if suffix in (".csv", ".tsv"):
        return "csv"
    if suffix in TEXT_SUFFIXES:
        return "text"
    raise SourceError(f"{path}: unknown source kind (expected .jsonl, .csv, a folder of .txt/.md, or hf:NAME)")


def parse_source(item: str | Mapping[str, Any]) -> SourceSpec:
    """`PATH`, `hf:NAME[:SPLIT]`, or a mapping {path, defaults, fill_from, split, config}."""
    options: Mapping[str, Any] = {}
    if isinstance(item, Mapping):
        options = item
        unknown = set(item) - {"path", "defaults", "fill_from", "split", "config"}
        if "path" not in item or unknown:
            raise SourceError(f"source {dict(item)!r}: needs 'path'; unknown keys {sorted(unknown)}")
        item = str(item["path"])
    extra = {"defaults": dict(options.get("defaults") or {}), "fill_from": dict(options.get("fill_from") or {})}
    if item.startswith(HF_PREFIX):
        name, _, split = item[len(HF_PREFIX):].partition(":")
        return SourceSpec(name, "hf", hf_split=options.get("split") or split or "train",
                          hf_config=options.get("config"), **extra)
    path = resolve_path(item)
    if not path.exists():
        raise SourceError(f"{item}: source not found (looked in {Path.cwd()} and {PROJECT_ROOT})")
    return SourceSpec(str(path), _kind_of(path), **extra)


def iter_source(spec: SourceSpec) -> Iterator[RawItem]:
    """Lazily yield every record of one source, with its missing contract fields filled in."""
    reader = {"jsonl": _read_jsonl, "csv": _read_csv, "text": _read_text, "hf": _read_hf}[spec.kind]
    for item in reader(spec):
        if item.data is not None and (spec.fill_from or spec.defaults):
            data = dict(item.data)
            for target, origin_field in spec.fill_from.items():
                if data.get(target) is None and origin_field in data:
                    data[target] = data[origin_field]
            for key, value in spec.defaults.items():
                data.setdefault(key, value)
            item = RawItem(item.source, item.kind, item.line, data)
        yield item


# ------------------------------------------------------------------ readers


def _read_reject(source: str, kind: str, line: int, reason: str, detail: str,
                 raw: str | bytes = "") -> RawItem:
    excerpt = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    extra = {"raw_excerpt": excerpt[:EXCERPT_CHARS]} if excerpt else {}
    return RawItem(source, kind, line, None, Reject("read", reason, detail, source, line, extra=extra))


def _from_record(source: str, kind: str, line: int, record: dict[str, Any] | RecordError) -> RawItem:
    """A record from the one reader, or its RecordError turned into a read-stage reject."""
    if isinstance(record, RecordError):
        return _read_reject(source, kind, line, record.reason, record.detail, record.excerpt)
    return RawItem(source, kind, line, _coerce_csv(record) if kind == "csv" else record)


def _read_jsonl(spec: SourceSpec) -> Iterator[RawItem]:
    for number, record in iter_jsonl_lenient(spec.location):
        yield _from_record(spec.location, "jsonl", number, record)


def _read_csv(spec: SourceSpec) -> Iterator[RawItem]:
    for number, record in iter_csv(spec.location):
        yield _from_record(spec.location, "csv", number, record)


def _coerce_csv(data: dict[str, str]) -> dict[str, Any]:
    """CSV cells are strings: turn the numeric contract fields into numbers where they parse."""
    converters = {"year": int, "authority_weight": float, "provenance_entropy": float}
    for name, convert in converters.items():
        if name in data:
            try:
                data[name] = convert(data[name].strip())
            except ValueError:
                pass  # left as a string: validate() rejects it as mistyped, naming the value
    return data


def _text_files(root: Path) -> Iterator[Path]:
    if root.is_file():
        yield root
        return
    yield from sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in TEXT_SUFFIXES)


def _read_text(spec: SourceSpec) -> Iterator[RawItem]:
    root = Path(spec.location)
    for path in _text_files(root):
        yield _read_text_file(path, root)


def _text_metadata(path: Path, body: str) -> tuple[dict[str, Any], str]:
    """Metadata from a sidecar `<file>.json` / `<stem>.json`, or YAML front matter; raises ValueError."""
    for sidecar in (path.with_name(path.name + ".json"), path.with_suffix(".json")):
        if sidecar.is_file():
            meta = json.loads(sidecar.read_text(encoding="utf-8"))
            if not isinstance(meta, dict):
                raise ValueError(f"sidecar {sidecar.name} is not a JSON object")
            return meta, body
    match = _FRONT_MATTER_RE.match(body)
    if not match:
        return {}, body
    meta = yaml.safe_load(match.group(1)) or {}
    if not isinstance(meta, dict):
        raise ValueError("front matter is not a mapping")
    return meta, body[match.end():]


def _read_text_file(path: Path, root: Path) -> RawItem:
    source, kind = str(path), "text"
    raw = path.read_bytes()
    try:
        body = raw.decode("utf-8").lstrip("\ufeff")
    except UnicodeDecodeError as err:
        return _read_reject(source, kind, 1, "invalid_utf8", f"byte {err.start}: {err.reason}", raw)
    try:
        meta, text = _text_metadata(path, body)
    except (ValueError, yaml.YAMLError) as err:
        return _read_reject(source, kind, 1, "bad_metadata", f"{type(err).__name__}: {err}"[:300], body)
    default_id = path.relative_to(root).with_suffix("").as_posix() if root.is_dir() else path.stem
    return RawItem(source, kind, 1, {"id": default_id, **meta, "text": text})


def _read_hf(spec: SourceSpec) -> Iterator[RawItem]:
    try:
        import datasets  # optional extra: only HF sources need it
    except ImportError as err:
        raise SourceError(f"hf:{spec.location}: Hugging Face sources need the optional extra: "
                          f"pip install \"yourai[hf]\"") from err
    rows = datasets.load_dataset(spec.location, spec.hf_config, split=spec.hf_split, streaming=True)
    source = f"hf:{spec.location}:{spec.hf_split}"
    for index, row in enumerate(rows, start=1):
        yield RawItem(source, "hf", index, dict(row))


# ------------------------------------------------------------------ the data contract


def normalize_text(text: str) -> str:
    """Case- and whitespace-insensitive form used for exact-duplicate and contamination checks."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _check_string(data: dict, name: str, required: bool) -> tuple[str, str] | None:
    """(reason, detail) when field `name` is missing, empty or not a string."""
    if name not in data or data[name] is None:
        return ("missing_field", f"'{name}' is required") if required else None
    value = data[name]
    if not isinstance(value, str):
        return "mistyped_field", f"'{name}' must be a string, got {_type_name(value)} {value!r:.60}"
    if not value.strip():
        return "empty_field", f"'{name}' is empty"
    return None


def _check_number(data: dict, name: str, lo: float | None, hi: float | None,
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


def _check_text_payload(data: dict) -> tuple[str, str, str] | None:
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
        return None if ok else ("messages", "mistyped_field",
                                "'messages' must be a non-empty list of {role, content} strings")
    return "text", "missing_field", "one of 'text', 'prompt'+'completion' or 'messages' is required"


def _field_problems(data: dict) -> Iterator[tuple[str, str, str]]:
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


def _unencodable_field(data: Mapping[str, Any]) -> str | None:
    """The first key whose name or value (nested too) would not survive writing as UTF-8."""
    for name, value in data.items():
        rendered = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
        if _SURROGATE_RE.search(name) or _SURROGATE_RE.search(rendered):
            return name
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
        return reject("text", *problem)
    if reserved := sorted(RESERVED_KEYS & set(data)):
        return reject(reserved[0], "reserved_field", f"'{reserved[0]}' is reserved for curation bookkeeping")
    if name := _unencodable_field(data):
        return reject(name, "invalid_unicode", f"'{name}' contains a lone UTF-16 surrogate (not encodable as UTF-8)")
    record = {**data, "text": text, "year": data.get("year")}
    record["_format"] = text_format
    return record
