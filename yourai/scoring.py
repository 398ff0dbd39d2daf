"""Citation & provenance scorer: text (+ metadata) → authority_weight, provenance_entropy, evidence.

Follows the reference scorer's arithmetic (anchor_your_ai.md §2) where it is sound and fixes
it where it is not: every pattern is word-bounded and case-aware, and `Score.evidence` lists
each hit with its span and contribution. The whole pattern set is ONE compiled alternation
walked once per document (see `scoring_patterns`).

Metadata rule, in order:
1. `year` (or `date`/`publication_date`/`published`) sets the era; else the text's own date.
2. `citation_count` (references the text rests on) → citations = max(text count, metadata).
3. `source`/`url`/`url_or_origin`/`publisher` strings add institutional markers (max rule).
4. A known `source_type` blends 70 % its prior with 30 % the text score (anchor rule) and
   adds one hit of its evidence type.
5. An explicit `authority_weight` / `provenance_entropy` wins outright: a curator's number
   beats a heuristic. Each step is recorded in `Score.rule` and in the evidence.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import sys
from collections import Counter, deque
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from datetime import date
from itertools import islice
from pathlib import Path
from typing import Any

from yourai import scoring_patterns as P

YEAR_FIELDS = ("year", "date", "publication_date", "published")
INSTITUTION_FIELDS = ("source", "url", "url_or_origin", "publisher")
METADATA_KEYS = (*YEAR_FIELDS, *INSTITUTION_FIELDS, "source_type", "citation_count",
                 "authority_weight", "provenance_entropy")
EARLIEST_YEAR = 1000  # ours: older "years" in metadata are data errors, not manuscripts
PARALLEL_MIN_RECORDS = 512  # ours: below this a process pool costs more than it saves
CHUNK_RECORDS = 64  # ours: records per task sent to a worker (amortises pickling)
IN_FLIGHT_PER_WORKER = 4  # ours: enough queued work to keep workers busy, bounded memory


@dataclass(frozen=True)
class Evidence:
    """One matched pattern: where it is, what it means, how much authority it moved."""

    pattern: str  # structured pattern name, or the keyword phrase
    family: str  # citation | institution | consensus | primary | type | metadata
    start: int
    end: int
    text: str
    evidence_type: str | None = None
    authority_delta: float = 0.0  # this hit's share of its family's authority component
    field: str = "text"  # "text" or the metadata key the span refers to


@dataclass(frozen=True)
class Score:
    """The two training numbers, the counts behind them and the evidence behind the counts."""

    authority_weight: float
    provenance_entropy: float
    citation_count: int
    primary_count: int
    institutional_score: float
    consensus_count: int
    source_type_counts: dict[str, int]
    type_entropy_bits: float  # pure Shannon entropy of source_type_counts
    year: int | None
    rule: str
    authority_components: dict[str, float]
    entropy_components: dict[str, float]
    evidence: tuple[Evidence, ...] = field(repr=False)

    def to_dict(self, include_evidence: bool = False) -> dict[str, Any]:
        """A JSON-ready dict; evidence only on request since it can be long."""
        out = asdict(self)
        out.pop("evidence")
        if include_evidence:
            out["evidence"] = [asdict(e) for e in self.evidence]
        return out


@dataclass(frozen=True)
class Rejected:
    """Stands in `score_many`'s output for a record that could not be scored."""

    index: int
    id: Any
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---------------------------------------------------------------- metadata validation


@dataclass(frozen=True)
class _Meta:
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


def _validate_metadata(metadata: Mapping[str, Any] | None) -> _Meta:
    """Turn a record's metadata into typed values, or raise ValueError naming the field."""
    if metadata is None:
        return _Meta()
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
    return _Meta(
        year=_parse_year(year_key, given[year_key]) if year_key else None,
        year_field=year_key,
        source_type=source_type.strip() if source_type else None,
        citation_count=_parse_count(given["citation_count"]) if "citation_count" in given else None,
        authority_weight=(_parse_float("authority_weight", given["authority_weight"], 0.0,
                                       P.AUTHORITY["max"].value)
                          if "authority_weight" in given else None),
        provenance_entropy=(_parse_float("provenance_entropy", given["provenance_entropy"], 0.0,
                                         math.inf) if "provenance_entropy" in given else None),
        institution_text=tuple((k, given[k]) for k in INSTITUTION_FIELDS if k in given),
    )


def _validate_text(text: Any) -> str:
    if text is None:
        raise ValueError("text is None")
    if not isinstance(text, str):
        raise ValueError(f"text must be a string, got {type(text).__name__}")
    if not text.strip():
        raise ValueError("text is empty or whitespace-only")
    return text


# ---------------------------------------------------------------- the single pass


@dataclass
class _Hit:
    """A raw match before contributions are known."""

    pattern: str
    family: str
    start: int
    end: int
    evidence_type: str | None
    weight: float = 0.0  # institutional weight; item count for citations
    field: str = "text"


def _classify(match, field_name: str, offset: int) -> list[_Hit]:
    """Turn one match of the combined regex into hits (a keyword may mean two things)."""
    start, end = match.start() + offset, match.end() + offset
    name = match.lastgroup
    if name is None:
        phrase = match.group()
        keywords = P.KEYWORDS_EXACT.get(phrase) or P.KEYWORDS_FOLDED.get(
            P.WHITESPACE_RE.sub(" ", phrase).lower(), [])
        return [_Hit(kw.phrase, kw.family, start, end, kw.evidence_type, kw.weight, field_name)
                for kw in keywords]
    spec = P.STRUCTURED_BY_NAME[name]
    if spec.lead == P._LINE_START:
        start += 1  # the span starts after the newline lead
    if name in ("url", "www_url"):
        return _url_hits(name, match.group(), start, end, field_name)
    if name == "cite_template":
        kind = P.CITE_KIND_TYPES.get((match.group("cite_kind") or "").lower(), spec.evidence_type)
        return [_Hit(name, spec.family, start, end, kind, 1.0, field_name)]
    if name == "author_year":
        items = max(1, len(P.AUTHOR_YEAR_ITEM_RE.findall(match.group())))
        return [_Hit(name, spec.family, start, end, spec.evidence_type, float(items), field_name)]
    weight = P.STRUCTURED_INSTITUTION_WEIGHTS.get(name, 1.0)
    return [_Hit(name, spec.family, start, end, spec.evidence_type, weight, field_name)]


def _url_hits(name: str, url: str, start: int, end: int, field_name: str) -> list[_Hit]:
    """A URL cites something; a .gov/.edu host also marks an institution."""
    hits = []
    if field_name == "text":
        hits.append(_Hit(name, "citation", start, end, None, 1.0, field_name))
    if P.GOV_HOST_RE.match(url):
        hits.append(_Hit(".gov host", "institution", start, end, "government", P.GOV_HOST_WEIGHT, field_name))
    elif P.EDU_HOST_RE.match(url):
        hits.append(_Hit(".edu host", "institution", start, end, "academic_paper", P.EDU_HOST_WEIGHT,
                         field_name))
    return hits


def scan(text: str, field_name: str = "text") -> list[_Hit]:
    """All hits in one finditer pass (the text is prefixed by a newline so line patterns see line 1)."""
    hits: list[_Hit] = []
    for match in P.COMBINED_RE.finditer("\n" + text):
        hits.extend(_classify(match, field_name, -1))
    return hits


def _metadata_hits(meta: _Meta) -> list[_Hit]:
    """Institutional markers in metadata strings (anchor: source/url/publisher)."""
    hits = []
    for key, value in meta.institution_text:
        hits += [h for h in scan(value, key) if h.family == "institution"]
    return hits


def _text_year(text: str) -> int | None:
    """Date statement in the head, else the latest plausible year there (a text cannot cite its future).

    anchor: first 'copyright|published|written YYYY', else any 18xx–202x year in the first 2,000
    characters; ours: the latest such year, since the first is often a cited older work.
    """
    head = text[: P.YEAR_HEAD_CHARS]
    statement = P.YEAR_STATEMENT_RE.search(head)
    if statement:
        return int(statement.group(1))
    this_year = date.today().year
    years = [int(y) for y in P.YEAR_BARE_RE.findall(head) if int(y) <= this_year]
    return max(years) if years else None


# ---------------------------------------------------------------- arithmetic


def _shannon_bits(counts: Mapping[str, float]) -> float:
    """H = −Σ p·log2 p over the evidence types with non-zero counts."""
    total = sum(counts.values())
    if total <= 0:
        return 0.0
    return -sum((c / total) * math.log2(c / total) for c in counts.values() if c > 0)


def _era_terms(year: int | None) -> tuple[float, float]:
    """(authority age term, entropy base) for a year (anchor eras; ours for unknown year)."""
    if year is None:
        return 0.0, P.ENTROPY["base_unknown_year"].value
    if year < P.ERA_PRE_MODERN_BEFORE:
        return P.AUTHORITY["age_pre_modern"].value, P.ENTROPY["base_pre_modern"].value
    if year < P.ERA_MODERN_FROM:
        return 0.0, P.ENTROPY["base_mid"].value
    return P.AUTHORITY["age_modern"].value, P.ENTROPY["base_modern"].value


@dataclass(frozen=True)
class _Counts:
    citations: int
    primary: int
    consensus: int
    institutional: float
    types: dict[str, int]


def _count(hits: list[_Hit], meta: _Meta) -> _Counts:
    """Aggregate hits into the counts the formulas use."""
    citations = int(sum(h.weight for h in hits if h.family == "citation"))
    if meta.citation_count is not None:
        citations = max(citations, meta.citation_count)
    institutional = max((h.weight for h in hits if h.family == "institution"), default=0.0)
    types = Counter(h.evidence_type for h in hits if h.evidence_type and h.field == "text")
    prior = P.SOURCE_TYPE_PRIORS.get(meta.source_type or "")
    if prior and prior.evidence_type:
        types[prior.evidence_type] += P.SOURCE_TYPE_EVIDENCE_HITS
    return _Counts(citations=citations,
                   primary=sum(1 for h in hits if h.family == "primary"),
                   consensus=sum(1 for h in hits if h.family == "consensus"),
                   institutional=min(institutional, P.AUTHORITY["institution_cap"].value),
                   types={t: types[t] for t in P.EVIDENCE_TYPES if types[t]})


def _authority_components(c: _Counts, year: int | None) -> dict[str, float]:
    """The anchor's additive authority terms, before clamping."""
    a = P.AUTHORITY
    return {
        "base": a["base"].value,
        "citation": min(a["citation_cap"].value, a["citation_log_scale"].value * math.log10(c.citations + 1)),
        "institutional": c.institutional,
        "consensus": min(a["consensus_cap"].value, a["consensus_per_hit"].value * c.consensus),
        "age": _era_terms(year)[0],
        "primary": -min(a["primary_cap"].value, a["primary_per_hit"].value * c.primary),
    }


def _entropy_components(c: _Counts, year: int | None) -> dict[str, float]:
    """The anchor's additive entropy terms (bits), before flooring at 0."""
    e = P.ENTROPY
    return {
        "base": _era_terms(year)[1],
        "type_entropy": _shannon_bits(c.types),
        "primary_bonus": min(e["primary_bonus_cap"].value, e["primary_bonus_per_hit"].value * c.primary),
        "variety_bonus": min(e["variety_cap"].value, e["variety_per_type"].value * len(c.types)),
        "institutional": -e["institution_penalty"].value * c.institutional,
        "consensus": -min(e["consensus_penalty_cap"].value, e["consensus_penalty_per_hit"].value * c.consensus),
    }


def _evidence(hits: list[_Hit], text: str, meta: _Meta, components: dict[str, float]) -> tuple[Evidence, ...]:
    """Attach each hit's share of its family's authority term (institution: the max hit only)."""
    per_family = Counter(h.family for h in hits)
    citation_items = sum(h.weight for h in hits if h.family == "citation") or 1.0
    top_institution = max((h for h in hits if h.family == "institution"), key=lambda h: h.weight, default=None)
    sources = dict(meta.institution_text)
    out = []
    for h in hits:
        if h.family == "citation":
            delta = components["citation"] * h.weight / citation_items
        elif h.family in ("consensus", "primary"):
            delta = components[h.family] / per_family[h.family]
        elif h.family == "institution":
            delta = components["institutional"] if h is top_institution else 0.0
        else:
            delta = 0.0
        where = text if h.field == "text" else sources[h.field]
        out.append(Evidence(h.pattern, h.family, h.start, h.end, where[h.start:h.end], h.evidence_type,
                            round(delta, 6), h.field))
    return tuple(out)


def _tidy(terms: dict[str, float]) -> dict[str, float]:
    """Round for readable output; + 0.0 turns −0.0 into 0.0."""
    return {name: round(value, 6) + 0.0 for name, value in terms.items()}


def _blend(text_value: float, prior_value: float) -> float:
    return P.PRIOR_BLEND * prior_value + (1 - P.PRIOR_BLEND) * text_value


def score(text: str, metadata: Mapping[str, Any] | None = None) -> Score:
    """Score one document; raises ValueError on bad text or metadata."""
    text = _validate_text(text)
    meta = _validate_metadata(metadata)
    hits = scan(text) + _metadata_hits(meta)
    year = meta.year if meta.year is not None else _text_year(text)
    counts = _count(hits, meta)
    auth_terms = _tidy(_authority_components(counts, year))
    ent_terms = _tidy(_entropy_components(counts, year))
    authority = min(max(sum(auth_terms.values()), 0.0), P.AUTHORITY["max"].value)
    entropy = max(0.0, sum(ent_terms.values()))
    rules = ["text"] if meta.year is None else [f"text+{meta.year_field}"]
    if len(text.strip()) < P.SHORT_TEXT_CHARS:
        authority, entropy = P.SHORT_TEXT_SCORE
        rules = [f"short-text(<{P.SHORT_TEXT_CHARS} chars)"]
    authority, entropy = _apply_metadata_overrides(authority, entropy, meta, rules)
    return Score(authority_weight=round(authority, 6) + 0.0, provenance_entropy=round(entropy, 6) + 0.0,
                 citation_count=counts.citations, primary_count=counts.primary,
                 institutional_score=counts.institutional, consensus_count=counts.consensus,
                 source_type_counts=counts.types, type_entropy_bits=ent_terms["type_entropy"],
                 year=year, rule="; ".join(rules), authority_components=auth_terms,
                 entropy_components=ent_terms, evidence=_evidence(hits, text, meta, auth_terms))


def _apply_metadata_overrides(authority: float, entropy: float, meta: _Meta, rules: list[str]) -> tuple[float, float]:
    """Source-type prior blend, then explicit values (steps 4 and 5 of the module rule)."""
    prior = P.SOURCE_TYPE_PRIORS.get(meta.source_type or "")
    if prior is not None:
        authority = _blend(authority, prior.authority_weight)
        entropy = _blend(entropy, prior.provenance_entropy_bits)
        rules.append(f"prior-blend {P.PRIOR_BLEND:.0%} source_type={meta.source_type}")
    elif meta.source_type and meta.source_type != P.UNKNOWN_SOURCE_TYPE:
        rules.append(f"source_type={meta.source_type!r} has no prior (text only)")
    if meta.authority_weight is not None:
        authority = meta.authority_weight
        rules.append("authority_weight from metadata")
    if meta.provenance_entropy is not None:
        entropy = meta.provenance_entropy
        rules.append("provenance_entropy from metadata")
    return authority, entropy


# ---------------------------------------------------------------- batch


def _score_record(index: int, record: Any) -> Score | Rejected:
    """Score one record dict, turning a ValueError into a Rejected entry."""
    if not isinstance(record, Mapping):
        return Rejected(index, None, f"record must be an object, got {type(record).__name__}")
    record_id = record.get("id")
    if "text" not in record:
        return Rejected(index, record_id, "record has no 'text' field")
    try:
        return score(record["text"], record)
    except ValueError as err:
        return Rejected(index, record_id, str(err))


def _slim(record: Any) -> Any:
    """Only the fields the scorer reads travel to a worker (PLOS records carry big reference lists)."""
    if not isinstance(record, Mapping):
        return record
    return {k: record[k] for k in ("id", "text", *METADATA_KEYS) if k in record}


def _score_chunk(chunk: list[tuple[int, Any]]) -> list[Score | Rejected]:
    return [_score_record(index, record) for index, record in chunk]


def _chunks(indexed: Iterator[tuple[int, Any]], size: int) -> Iterator[list[tuple[int, Any]]]:
    while chunk := [(i, _slim(r)) for i, r in islice(indexed, size)]:
        yield chunk


def score_many(records: Iterable[Any], workers: int | None = None) -> Iterator[Score | Rejected]:
    """Score records in input order, one result per record; a bad record yields `Rejected` in its place.

    Streams: records are read lazily in chunks. With more than one worker (default: all cores)
    and at least PARALLEL_MIN_RECORDS records, chunks are scored in a process pool (ordered imap).
    """
    workers = os.cpu_count() or 1 if workers is None else workers
    if workers < 1:
        raise ValueError(f"workers must be ≥ 1, got {workers}")
    indexed = enumerate(records)
    head = list(islice(indexed, PARALLEL_MIN_RECORDS))
    if workers == 1 or len(head) < PARALLEL_MIN_RECORDS:
        yield from (_score_record(i, r) for i, r in head)
        yield from (_score_record(i, r) for i, r in indexed)
        return
    yield from _score_parallel(_chain(head, indexed), workers)


def _score_parallel(indexed: Iterator[tuple[int, Any]], workers: int) -> Iterator[Score | Rejected]:
    """Ordered, bounded parallel map: at most IN_FLIGHT_PER_WORKER chunks per worker are pending.

    (Pool.imap would read the whole input ahead of the workers; this keeps memory bounded.)
    """
    import multiprocessing  # only the parallel path pays for it

    pending: deque = deque()
    with multiprocessing.get_context().Pool(workers) as pool:
        for chunk in _chunks(indexed, CHUNK_RECORDS):
            pending.append(pool.apply_async(_score_chunk, (chunk,)))
            if len(pending) >= workers * IN_FLIGHT_PER_WORKER:
                yield from pending.popleft().get()
        while pending:
            yield from pending.popleft().get()


def _chain(first: list, rest: Iterator) -> Iterator:
    yield from first
    yield from rest


# ---------------------------------------------------------------- files


def iter_records(path: str | Path, errors: list[dict] | None = None) -> Iterator[tuple[int, dict]]:
    """(line number, record) from a JSONL or CSV file; unparseable lines go to `errors` (or raise)."""
    path = Path(path)
    if path.suffix.lower() == ".csv":
        with path.open(newline="", encoding="utf-8") as handle:
            for row in csv.DictReader(handle):
                yield 0, row  # line numbers of multi-line CSV rows are not meaningful; see below
        return
    with path.open(encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                reason = f"{path}:{line_no}: invalid JSON ({err.msg})"
                if errors is None:
                    raise ValueError(reason) from None
                errors.append({"line": line_no, "id": None, "reason": reason})
                continue
            yield line_no, record


def load_corpora(corpora_dir: str | Path, limit_per_corpus: int | None = None) -> dict[str, list[dict]]:
    """The ../shared corpora as {folder name: records}, each record tagged with `corpus`."""
    corpora: dict[str, list[dict]] = {}
    for folder in sorted(p for p in Path(corpora_dir).iterdir() if p.is_dir()):
        records = []
        for jsonl in sorted(folder.glob("*.jsonl")):
            for _, record in islice(iter_records(jsonl), limit_per_corpus):
                records.append({**record, "corpus": folder.name})
        corpora[folder.name] = records
    return corpora


# ---------------------------------------------------------------- notebook helpers

PRIMARY_GROUPS = ("phil_trans_1665_1869", "gutenberg_science_fieldreports", "patent", "lab_notebook", "letter")
CONSENSUS_GROUPS = ("medquad_nih_consensus", "government", "encyclopedia")
ERA_EDGES = ((1700, "<1700"), (1800, "1700s"), (1870, "1800–1869"), (1970, "1870–1969"),
             (P.ERA_MODERN_FROM, "1970–1994"), (10_000, "1995+"))  # reporting bins (ours)


def era_label(year: int | None) -> str:
    """A reporting era for plots; the scorer itself uses the anchor's three eras."""
    if year is None:
        return "unknown"
    return next(label for edge, label in ERA_EDGES if year < edge)


def evidence_summary(result: Score, limit: int = 6) -> str:
    """'pattern×count (Δauthority)' for the hits that moved authority most, for tables."""
    totals: dict[str, list[float]] = {}
    for e in result.evidence:
        entry = totals.setdefault(f"{e.family}:{e.pattern}", [0, 0.0])
        entry[0] += 1
        entry[1] += e.authority_delta
    ranked = sorted(totals.items(), key=lambda kv: (-abs(kv[1][1]), -kv[1][0]))[:limit]
    return "; ".join(f"{name}×{count} ({delta:+.3f})" for name, (count, delta) in ranked)


def score_table(records: list[dict], workers: int | None = 1, use_metadata: bool = True):
    """Score records into a pandas DataFrame: one row per record, rejects included with their reason."""
    import pandas as pd  # notebook-side dependency; the scorer itself needs only the stdlib

    inputs = records if use_metadata else [{"id": r.get("id"), "text": r.get("text")} for r in records]
    rows = []
    for record, result in zip(records, score_many(inputs, workers=workers)):
        group = record.get("source_type") or record.get("corpus") or "unknown"
        row = {"id": record.get("id"), "group": group, "score": result}
        if isinstance(result, Rejected):
            rows.append({**row, "rejected": result.reason})
            continue
        rows.append({**row, "rejected": None, "authority_weight": result.authority_weight,
                     "provenance_entropy": result.provenance_entropy, "citation_count": result.citation_count,
                     "primary_count": result.primary_count, "year": result.year, "era": era_label(result.year),
                     "label": ("primary" if group in PRIMARY_GROUPS else
                               "consensus" if group in CONSENSUS_GROUPS else None)})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------- CLI


def _output_record(record: dict, result: Score, include_evidence: bool) -> dict:
    """The input record, kept whole, with the two scores and a compact explanation added."""
    detail = result.to_dict(include_evidence=include_evidence)
    out = dict(record)
    out["authority_weight"] = detail.pop("authority_weight")
    out["provenance_entropy"] = detail.pop("provenance_entropy")
    out["scoring"] = detail
    return out


def _default_rejects_path(out_path: Path) -> Path:
    return out_path.with_name(out_path.stem + ".rejects.jsonl")


def _parse_cli(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="yourai score", description=(
        "Score records (JSONL or CSV with a 'text' column) → JSONL with authority_weight, "
        "provenance_entropy and the counts behind them; unscorable records go to a rejects file."))
    parser.add_argument("input", type=Path, help="input .jsonl or .csv")
    parser.add_argument("-o", "--output", type=Path, required=True, help="scored JSONL to write")
    parser.add_argument("--rejects", type=Path, help="rejects JSONL (default: OUT.rejects.jsonl)")
    parser.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    parser.add_argument("--evidence", action="store_true", help="include every matched span")
    return parser.parse_args(argv)


def cli_main(argv: list[str]) -> int:
    """`yourai score IN -o OUT`: exit 0 when every record was read (rejects are listed, not fatal)."""
    args = _parse_cli(argv)
    if not args.input.is_file():
        print(f"yourai score: input not found: {args.input}", file=sys.stderr)
        return 2
    rejects_path = args.rejects or _default_rejects_path(args.output)
    parse_errors: list[dict] = []
    line_numbers: deque[int] = deque()
    kept: deque[dict] = deque()

    def records() -> Iterator[dict]:
        for line_no, record in iter_records(args.input, parse_errors):
            line_numbers.append(line_no)
            kept.append(record)
            yield record

    n_scored = 0
    args.output.parent.mkdir(parents=True, exist_ok=True)
    with args.output.open("w", encoding="utf-8") as out, rejects_path.open("w", encoding="utf-8") as rej:
        for result in score_many(records(), workers=args.workers):
            line_no, record = line_numbers.popleft(), kept.popleft()
            if isinstance(result, Rejected):
                where = f"{args.input}:{line_no}" if line_no else f"{args.input} row {result.index + 1}"
                rej.write(json.dumps({**result.to_dict(), "line": line_no or None,
                                      "reason": f"{where}: {result.reason}"}) + "\n")
            else:
                out.write(json.dumps(_output_record(record, result, args.evidence), ensure_ascii=False) + "\n")
                n_scored += 1
        for error in parse_errors:
            rej.write(json.dumps({"index": None, **error}) + "\n")
    n_rejected = sum(1 for _ in rejects_path.open(encoding="utf-8"))
    print(f"yourai score: {n_scored} scored → {args.output}; {n_rejected} rejected → {rejects_path}",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(cli_main(sys.argv[1:]))
