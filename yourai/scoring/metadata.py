"""The metadata the scorer reads (steps 1–3 and 5 of score.py's rule): which fields, and how each is typed.

Years may come as ints or 'YYYY…' strings (CSV), counts as digit strings; anything else is a
ValueError naming the field, so a bad record is rejected with its reason rather than mis-scored.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date
from typing import Any, Mapping

from yourai.formula import AUTHORITY_RANGE

YEAR_FIELDS = ("year", "date", "publication_date", "published")
INSTITUTION_FIELDS = ("source", "url", "url_or_origin", "publisher")
METADATA_KEYS = (*YEAR_FIELDS, *INSTITUTION_FIELDS, "source_type", "citation_count",
                 "authority_weight", "provenance_entropy")
EARLIEST_YEAR = 1000  # ours: older "years" in metadata are data errors, not manuscripts


@dataclass(frozen=True)
class Metadata:
    """A record's metadata as typed values the scorer uses (None where not given)."""

    year: int | None = None
    year_field: str | None = None
    source_type: str | None = None
    citation_count: int | None = None
    authority_weight: float | None = None
    provenance_entropy: float | None = None
    institution_text: tuple[tuple[str, str], ...] = ()


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _parse_year(key: str, value: Any) -> int:
    """Metadata year: an int, or a string starting with four digits ('1872', '2018-01-09')."""
    if isinstance(value, str) and len(value) >= 4 and value[:4].isdigit():
        year = int(value[:4])
    elif _is_number(value) and float(value).is_integer():
        year = int(value)
    else:
        raise ValueError(f"metadata {key!r} must be a year (int or 'YYYY…' string), got {value!r}")
    if not EARLIEST_YEAR <= year <= date.today().year + 1:
        raise ValueError(f"metadata {key!r} = {year} is outside {EARLIEST_YEAR}–{date.today().year + 1}")
    return year


def _parse_count(value: Any) -> int:
    """citation_count: a non-negative int (a digit string from CSV is accepted)."""
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    if _is_number(value) and float(value).is_integer() and value >= 0:
        return int(value)
    raise ValueError(f"metadata 'citation_count' must be a non-negative integer, got {value!r}")


def _parse_float(key: str, value: Any, low: float, high: float) -> float:
    """An explicit score in metadata: a finite number in [low, high]."""
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise ValueError(f"metadata {key!r} must be a number, got {value!r}") from None
    if not _is_number(value) or not low <= value <= high:
        raise ValueError(f"metadata {key!r} must be a number in [{low}, {high}], got {value!r}")
    return float(value)


def _present(metadata: Mapping[str, Any], key: str) -> bool:
    """A field counts as given unless missing, None or blank (CSV leaves blanks)."""
    value = metadata.get(key)
    return value is not None and not (isinstance(value, str) and not value.strip())


def parse_metadata(metadata: Mapping[str, Any] | None) -> Metadata:
    """Turn a record's metadata into typed values, or raise ValueError naming the field."""
    if metadata is None:
        return Metadata()
    if not isinstance(metadata, Mapping):
        raise ValueError(f"metadata must be a mapping, got {type(metadata).__name__}")
    given = {k: metadata[k] for k in METADATA_KEYS if _present(metadata, k)}
    year_key = next((k for k in YEAR_FIELDS if k in given), None)
    source_type = given.get("source_type")
    if source_type is not None and not isinstance(source_type, str):
        raise ValueError(f"metadata 'source_type' must be a string, got {source_type!r}")
    for key in INSTITUTION_FIELDS:
        if key in given and not isinstance(given[key], str):
            raise ValueError(f"metadata {key!r} must be a string, got {type(given[key]).__name__}")
    return Metadata(
        year=_parse_year(year_key, given[year_key]) if year_key else None,
        year_field=year_key,
        source_type=source_type.strip() if source_type else None,
        citation_count=_parse_count(given["citation_count"]) if "citation_count" in given else None,
        authority_weight=(_parse_float("authority_weight", given["authority_weight"], 0.0,
                                       AUTHORITY_RANGE[1])
                          if "authority_weight" in given else None),
        provenance_entropy=(_parse_float("provenance_entropy", given["provenance_entropy"], 0.0,
                                         math.inf) if "provenance_entropy" in given else None),
        institution_text=tuple((k, given[k]) for k in INSTITUTION_FIELDS if k in given),
    )

