"""Raw sources → candidate records, one at a time.

Readers (JSONL, CSV, folders of .txt/.md, Hugging Face datasets) yield `RawItem`s lazily so
memory never depends on the input size. Anything a reader cannot parse becomes a `Reject`
carrying the file, line and reason; `yourai.data.contract` then fills and checks the fields of
everything that did parse. Nothing is dropped without a `Reject` naming why.
"""

from __future__ import annotations

import datetime
import json
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import yaml

from yourai.paths import PROJECT_ROOT, shared_dir
from yourai.records import EXCERPT_CHARS, RecordError, iter_csv, iter_jsonl_lenient

TEXT_SUFFIXES = (".txt", ".md")
HF_PREFIX = "hf:"
SOURCE_OPTIONS = frozenset({"path", "defaults", "fields", "csv_columns", "split", "config"})
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
    """One source: where it is, what kind it is, and how to fill the contract fields it lacks."""

    location: str  # a resolved file/folder path, or the HF dataset name
    kind: str  # jsonl | csv | text | hf
    defaults: Mapping[str, Any] = field(default_factory=dict)  # contract field → value when absent
    fields: Mapping[str, str] = field(default_factory=dict)  # contract field → this source's name for it
    csv_columns: tuple[str, ...] | None = None  # a header-less CSV's column names
    hf_split: str = "train"
    hf_config: str | None = None


def display_name(source: str) -> str:
    """A record's source as filled-in ids and origins name it: relative to the project when inside it,
    so ids (and the splits hashed from them) do not depend on where the checkout lives."""
    if source.startswith(HF_PREFIX):
        return source
    path = Path(source)
    return path.relative_to(PROJECT_ROOT).as_posix() if path.is_relative_to(PROJECT_ROOT) else str(path)


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


def _mapping_option(options: Mapping[str, Any], name: str, where: str, values: type) -> dict[str, Any]:
    value = options.get(name) or {}
    if not isinstance(value, Mapping) or not all(isinstance(k, str) and isinstance(v, values) for k, v in value.items()):
        kind = "field names" if values is str else "values"
        raise SourceError(f"source {where}: '{name}' must map contract fields to {kind}, got {value!r}")
    return dict(value)


def parse_source(item: str | Mapping[str, Any], defaults: Mapping[str, Any] | None = None,
                 fields: Mapping[str, str] | None = None, csv_columns: list[str] | None = None) -> SourceSpec:
    """`PATH`, `hf:NAME[:SPLIT]`, or a mapping {path, defaults, fields, csv_columns, split, config}.

    `defaults`, `fields` and `csv_columns` are the run-wide settings (curate.*); a source's own win.
    """
    options: Mapping[str, Any] = {}
    if isinstance(item, Mapping):
        options = item
        unknown = set(item) - SOURCE_OPTIONS
        if "path" not in item or unknown:
            raise SourceError(f"source {dict(item)!r}: needs 'path'; unknown keys {sorted(unknown)} "
                              f"(known: {sorted(SOURCE_OPTIONS)})")
        item = str(item["path"])
    if not isinstance(item, str):
        raise SourceError(f"source {item!r}: expected a path, hf:NAME or a mapping with 'path'")
    columns = options.get("csv_columns", csv_columns)
    extra = {"defaults": {**(defaults or {}), **_mapping_option(options, "defaults", item, object)},
             "fields": {**(fields or {}), **_mapping_option(options, "fields", item, str)},
             "csv_columns": tuple(columns) if columns else None}
    if item.startswith(HF_PREFIX):
        name, _, split = item[len(HF_PREFIX):].partition(":")
        return SourceSpec(name, "hf", hf_split=options.get("split") or split or "train",
                          hf_config=options.get("config"), **extra)
    path = resolve_path(item)
    if not path.exists():
        raise SourceError(f"{item}: source not found (looked in {Path.cwd()} and {PROJECT_ROOT})")
    return SourceSpec(str(path), _kind_of(path), **extra)


def iter_source(spec: SourceSpec) -> Iterator[RawItem]:
    """Lazily yield every record of one source as it was read (yourai.data.contract fills and checks it)."""
    reader = {"jsonl": _read_jsonl, "csv": _read_csv, "text": _read_text, "hf": _read_hf}[spec.kind]
    yield from reader(spec)


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
    for number, record in iter_csv(spec.location, spec.csv_columns):
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
    return {str(key): json_value(value, f"front matter '{key}'") for key, value in meta.items()}, body[match.end():]


def json_value(value: Any, where: str) -> Any:
    """A YAML value as JSON can hold it: dates and times become ISO 8601 strings (YAML reads
    `published: 2020-01-31` as a date); binary values are refused with `where`."""
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(k): json_value(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [json_value(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, (bytes, bytearray)):
        raise ValueError(f"{where}: binary values are not supported")
    return value


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


# ------------------------------------------------------------------ text identity


def normalize_text(text: str) -> str:
    """Case- and whitespace-insensitive form used for exact-duplicate and contamination checks."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


# The ../shared corpora carry `source` (a description) and `url_or_origin` (a known name for `origin`,
# yourai.data.contract), not `source_type`: each folder gets the scorer prior that matches its category
# in ../shared/data/corpora/README.md ((a) primary, (b) consensus, (c) citation markup).
SHARED_CORPUS_SOURCE_TYPES = {
    "phil_trans_1665_1869": "letter",  # (a) early papers are mostly communicated letters and observations
    "gutenberg_science_fieldreports": "historical_book",  # (a) monographs and field reports
    "medquad_nih_consensus": "medical_guidelines",  # (b) agency consensus answers
    "wikipedia_wikitext_refs": "wiki",  # (c)
    "plos_jats_citations": "journal_paper",  # (b)+(c) peer-reviewed papers
}


def shared_corpus_sources(corpora_dir: str | Path | None = None, names: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Source specs for the ../shared corpora (all, or the folders `names`): each folder's source type as the default."""
    root = Path(corpora_dir) if corpora_dir is not None else shared_dir() / "data" / "corpora"
    if unknown := sorted(set(names or ()) - set(SHARED_CORPUS_SOURCE_TYPES)):
        raise SourceError(f"curate.shared_corpora: unknown {unknown}; known: {sorted(SHARED_CORPUS_SOURCE_TYPES)}")
    specs = []
    for folder, source_type in SHARED_CORPUS_SOURCE_TYPES.items():
        if names is not None and folder not in names:
            continue
        paths = sorted((root / folder).glob("*.jsonl"))
        if not paths and names is not None:
            raise SourceError(f"curate.shared_corpora: {folder}: no .jsonl under {root / folder}")
        specs += [{"path": str(path), "defaults": {"source_type": source_type}} for path in paths]
    return specs
