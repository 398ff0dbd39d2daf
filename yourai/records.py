"""The one reader of record files (JSONL and CSV): every stage that reads records reads them here.

Two ways to read, one parser underneath:
- strict (:func:`iter_jsonl`): the first bad line raises, naming `path:line` — for files the
  project wrote itself (curated splits, TruthfulQA JSONL, the sample corpus);
- lenient (:func:`iter_jsonl_lenient`, :func:`iter_csv`, :func:`iter_records`): every line yields
  either a record or a :class:`RecordError` with a stable reason code — for users' own files,
  where curation and `yourai score` turn each bad line into a rejects entry and go on.
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

MAX_LINE_BYTES = 16 * 1024 * 1024  # one JSONL record may not exceed this: keeps memory bounded
MAX_CSV_CELL_CHARS = MAX_LINE_BYTES  # nor one CSV cell (Python's csv stops at 128 KiB by default)
MAX_HEADER_NAME_CHARS = 64  # a longer "column name" is a data row: the header is missing
EXCERPT_CHARS = 120  # how much of a bad line an error carries
CSV_SUFFIXES = (".csv", ".tsv")
_SURROGATE_RE = re.compile(r"[\ud800-\udfff]")  # bytes that were not UTF-8 (surrogateescape)
REASON_TEXT = {  # reason code → what a person reads in a message
    "invalid_utf8": "not valid UTF-8", "blank_line": "blank line", "malformed_json": "invalid JSON",
    "duplicate_key": "invalid JSON", "not_an_object": "not a JSON object", "line_too_long": "line too long",
    "csv_field_count": "wrong number of CSV fields", "csv_cell_too_large": "CSV cell too large",
    "csv_malformed": "malformed CSV", "csv_no_header": "no CSV header row",
}
_COLUMN_NAME_RE = re.compile(rf"[A-Za-z_][^\r\n]{{0,{MAX_HEADER_NAME_CHARS - 1}}}")


@dataclass(frozen=True)
class RecordError:
    """Why one line is not a record: a stable `reason` code, a human `detail`, an excerpt."""

    path: str
    line: int
    reason: str  # a key of REASON_TEXT
    detail: str
    excerpt: str = ""

    def message(self) -> str:
        return f"{self.path}:{self.line}: {REASON_TEXT.get(self.reason, self.reason)}: {self.detail}"


def _excerpt(raw: str | bytes) -> str:
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    return text[:EXCERPT_CHARS]


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [key for key, _ in pairs]
    if len(keys) != len(set(keys)):
        repeated = sorted({k for k in keys if keys.count(k) > 1})
        raise ValueError(f"duplicate key(s) {repeated}")
    return dict(pairs)


def parse_json_record(raw: bytes, path: str, line: int) -> dict[str, Any] | RecordError:
    """One JSONL line (bytes, newline stripped) → an object, or the reason it is not one."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        return RecordError(path, line, "invalid_utf8", f"byte {err.start}: {err.reason}", _excerpt(raw))
    if line == 1:
        text = text.lstrip("\ufeff")
    if not text.strip():
        return RecordError(path, line, "blank_line", "an empty line is not a record")
    try:
        data = json.loads(text, object_pairs_hook=_no_duplicate_keys)
    except json.JSONDecodeError as err:
        return RecordError(path, line, "malformed_json", f"{err.msg} at column {err.colno}", _excerpt(text))
    except ValueError as err:
        return RecordError(path, line, "duplicate_key", str(err), _excerpt(text))
    if not isinstance(data, dict):
        return RecordError(path, line, "not_an_object", f"expected a JSON object, got {type(data).__name__}",
                           _excerpt(text))
    return data


def _lines(path: Path) -> Iterator[tuple[int, bytes, bool]]:
    """(line number, bytes without the newline, too_long) — a too-long line is skipped in pieces."""
    with open(path, "rb") as handle:
        number = 0
        while raw := handle.readline(MAX_LINE_BYTES + 1):
            number += 1
            too_long = len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n")
            if too_long:
                while (rest := handle.readline(MAX_LINE_BYTES)) and not rest.endswith(b"\n"):
                    pass
            yield number, raw[:EXCERPT_CHARS] if too_long else raw.rstrip(b"\r\n"), too_long


def iter_jsonl_lenient(path: str | Path, skip_blank: bool = False) -> Iterator[tuple[int, dict[str, Any] | RecordError]]:
    """(line number, record or RecordError) for every line; blank lines too unless `skip_blank`."""
    for number, raw, too_long in _lines(Path(path)):
        if too_long:
            yield number, RecordError(str(path), number, "line_too_long", f"longer than {MAX_LINE_BYTES} bytes",
                                      _excerpt(raw))
            continue
        if skip_blank and not raw.strip():
            continue
        yield number, parse_json_record(raw, str(path), number)


def iter_jsonl(path: str | Path, error: type[Exception] = ValueError) -> Iterator[tuple[int, dict[str, Any]]]:
    """Stream a JSONL file the project trusts: blank lines skipped, the first bad line raises `error`."""
    for number, record in iter_jsonl_lenient(path, skip_blank=True):
        if isinstance(record, RecordError):
            raise error(record.message())
        yield number, record


def iter_csv(path: str | Path, columns: Sequence[str] | None = None) -> Iterator[tuple[int, dict[str, Any] | RecordError]]:
    """(line number of the row's first line, {column: cell} or RecordError); empty cells are left out.

    Tab-separated when the name ends in .tsv. Rows that span several lines (quoted newlines) are
    numbered by the line they start on, so a rejects entry points at the right place. The first row
    names the columns unless `columns` does (a file without a header). A first row that cannot be
    column names (see `header_problem`) makes every row a `csv_no_header` error rather than losing
    line 1; a row the csv module cannot parse (a cell over MAX_CSV_CELL_CHARS, a stray quote) is an
    error for that row only.
    """
    path_str = str(path)
    delimiter = "\t" if path_str.lower().endswith(".tsv") else ","
    csv.field_size_limit(MAX_CSV_CELL_CHARS)
    with open(path, encoding="utf-8-sig", errors="surrogateescape", newline="") as handle:
        reader = csv.reader(handle, delimiter=delimiter)
        rows = _csv_rows(path_str, reader)
        if columns is not None:
            header, problem = list(columns), None
        else:
            first = next(rows, None)
            if first is None:
                return
            line, header = first
            problem = header if isinstance(header, RecordError) else header_problem(header)
            if problem is not None:
                yield line, problem if isinstance(problem, RecordError) else RecordError(
                    path_str, line, "csv_no_header", f"{problem}; add a header row naming the columns, or name "
                    "them with curate.csv_columns (yourai curate --csv-columns id,text,...)", _excerpt(str(header)))
        for line, row in rows:
            if problem is not None and not isinstance(row, RecordError):
                row = RecordError(path_str, line, "csv_no_header", "not read: the file's first row is not a header "
                                  "(see its line 1 entry)", _excerpt(delimiter.join(row)))
            yield line, row if isinstance(row, RecordError) else _csv_row(path_str, line, header, row, delimiter)


def _csv_rows(path: str, reader: Any) -> Iterator[tuple[int, list[str] | RecordError]]:
    """(first line, cells) per row; a row the csv module rejects becomes a RecordError and reading goes on."""
    start = 1
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as err:
            too_large = "field larger than field limit" in str(err)
            yield start, RecordError(path, start, "csv_cell_too_large" if too_large else "csv_malformed",
                                     f"a cell is longer than {MAX_CSV_CELL_CHARS:,} characters" if too_large else str(err))
        else:
            yield start, row
        start = reader.line_num + 1


def header_problem(header: Sequence[str]) -> str | None:
    """Why a first row cannot be column names (None when it can): repeated names, or a cell that reads
    as data (starts with a digit, is long, or holds a line break). Empty names (a trailing comma) are fine."""
    names = [cell.strip() for cell in header if cell.strip()]
    if not names:
        return "the first row is empty"
    if len(set(names)) != len(names):
        return f"the first row {names[:4]} repeats a column name"
    data_like = [name for name in names if not _COLUMN_NAME_RE.fullmatch(name)]
    if data_like:
        return f"the first row reads as data, not column names ({data_like[0][:40]!r})"
    return None


def _csv_row(path: str, line: int, header: list[str], row: list[str], delimiter: str) -> dict[str, Any] | RecordError:
    joined = delimiter.join(row)
    if _SURROGATE_RE.search(joined):
        return RecordError(path, line, "invalid_utf8", "the row is not valid UTF-8",
                           _excerpt(joined.encode("utf-8", "surrogateescape")))
    if not any(cell.strip() for cell in row):
        return RecordError(path, line, "blank_line", "an empty row is not a record")
    if len(row) != len(header):
        return RecordError(path, line, "csv_field_count", f"expected {len(header)} fields (the header's), got {len(row)}",
                           _excerpt(joined))
    return {name: value for name, value in zip(header, row) if value != ""}


def iter_records(path: str | Path, skip_blank: bool = True) -> Iterator[tuple[int, dict[str, Any] | RecordError]]:
    """A JSONL or CSV/TSV file (by suffix), leniently: records and RecordErrors in file order."""
    if Path(path).suffix.lower() in CSV_SUFFIXES:
        yield from ((n, r) for n, r in iter_csv(path)
                    if not (skip_blank and isinstance(r, RecordError) and r.reason == "blank_line"))
        return
    yield from iter_jsonl_lenient(path, skip_blank=skip_blank)


def read_records(path: str | Path) -> list[dict[str, Any]]:
    """Every record of a JSONL/CSV file the caller trusts; the first bad line raises ValueError."""
    records = []
    for _, record in iter_records(path):
        if isinstance(record, RecordError):
            raise ValueError(record.message())
        records.append(record)
    return records


def record_text(data: Mapping[str, Any]) -> tuple[str, str]:
    """(text, format): mlx-lm's three record formats (text | completions | chat) as one text to score and dedup."""
    if "text" in data:
        return str(data["text"]), "text"
    if "prompt" in data or "completion" in data:
        return f"{data.get('prompt', '')}\n{data.get('completion', '')}", "completions"
    messages = data.get("messages") or []
    return "\n".join(str(m.get("content", "")) for m in messages if isinstance(m, Mapping)), "chat"
