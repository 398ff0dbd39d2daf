"""The one JSONL reader: (line number, object) per non-blank line, errors naming file and line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator


def iter_jsonl(path: str | Path, error: type[Exception] = ValueError) -> Iterator[tuple[int, dict]]:
    """Stream a JSONL file; bad JSON or a non-object line raises `error` naming `path:line`."""
    with open(path, encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise error(f"{path}:{line_number}: invalid JSON: {err.msg}") from err
            if not isinstance(record, dict):
                raise error(f"{path}:{line_number}: expected a JSON object, got {type(record).__name__}")
            yield line_number, record
