"""Citation & provenance scorer: text (+ metadata) → authority_weight, provenance_entropy, evidence.

Follows the reference scorer's arithmetic (anchor_your_ai.md §2) where it is sound and fixes
it where it is not: every pattern is word-bounded and case-aware, and `Score.evidence` lists
each hit with its span and contribution. The whole pattern set is ONE alternation
(`scanner.COMBINED_RE`), walked once per document as two faster streams (`scanner.combined_matches`).

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

import math
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import date
from functools import lru_cache
from typing import Any, NamedTuple

from yourai.scoring import patterns as P
from yourai.scoring import scanner
from yourai.scoring.metadata import (Metadata,
                                     parse_metadata)


class Evidence(NamedTuple):
    """One matched pattern: where it is, what it means, how much authority it moved.

    A NamedTuple, not a frozen dataclass: a long document has thousands of hits, and a frozen
    dataclass's __init__ made building them a fifth of the scorer's time.
    """

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
    low_confidence: bool = False  # shorter than SHORT_TEXT_CHARS: scored on little text

    def to_dict(self, include_evidence: bool = False) -> dict[str, Any]:
        """A JSON-ready dict; evidence only on request since it can be long."""
        out = asdict(self)
        out.pop("evidence")
        if include_evidence:
            out["evidence"] = [e._asdict() for e in self.evidence]
        return out


def _validate_text(text: Any) -> str:
    if text is None:
        raise ValueError("text is None")
    if not isinstance(text, str):
        raise ValueError(f"text must be a string, got {type(text).__name__}")
    if not text.strip():
        raise ValueError("text is empty or whitespace-only")
    return text


# ---------------------------------------------------------------- the single pass


class _Hit(NamedTuple):
    """A raw match before contributions are known (a NamedTuple, as Evidence: tens of thousands per corpus)."""

    pattern: str
    family: str
    start: int
    end: int
    evidence_type: str | None
    weight: float = 0.0  # institutional weight; item count for citations
    field: str = "text"


def _classify(match: re.Match, field_name: str, offset: int, padded: str) -> list[_Hit]:
    """Turn one match (of the original text, or of its lower case for folded keywords) into hits."""
    start, end = match.start() + offset, match.end() + offset
    name = match.lastgroup
    if name is None:
        keywords = _keywords_of(padded[match.start() : match.end()])  # the original text, whichever string matched
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


@lru_cache(maxsize=4096)
def _keywords_of(phrase: str) -> list[P.Keyword]:
    """The keyword rows a matched phrase stands for; cached, since a corpus repeats a few hundred spellings."""
    return P.KEYWORDS_EXACT.get(phrase) or P.KEYWORDS_FOLDED.get(P.WHITESPACE_RE.sub(" ", phrase).lower(), [])


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
    """All hits in one left-to-right pass (the text is prefixed by a newline so line patterns see line 1)."""
    hits: list[_Hit] = []
    padded = "\n" + text
    for match in scanner.combined_matches(padded):
        hits.extend(_classify(match, field_name, -1, padded))
    return hits


def _metadata_hits(meta: Metadata) -> list[_Hit]:
    """Institutional markers in metadata strings (anchor: source/url/publisher)."""
    hits: list[_Hit] = []
    for key, value in meta.institution_text:
        hits += _institution_hits(value, key)
    return hits


@lru_cache(maxsize=4096)
def _institution_hits(value: str, key: str) -> tuple[_Hit, ...]:
    """One metadata string's institutional hits; cached, since a corpus repeats its few `source` values."""
    return tuple(h for h in scan(value, key) if h.family == "institution")


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


def _count(hits: list[_Hit], meta: Metadata) -> _Counts:
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


def _evidence(hits: list[_Hit], text: str, meta: Metadata, components: dict[str, float]) -> tuple[Evidence, ...]:
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
                            round(delta, 6) if delta else 0.0, h.field))
    return tuple(out)


def _tidy(terms: dict[str, float]) -> dict[str, float]:
    """Round for readable output; + 0.0 turns −0.0 into 0.0."""
    return {name: round(value, 6) + 0.0 for name, value in terms.items()}


def _blend(text_value: float, prior_value: float) -> float:
    return P.PRIOR_BLEND * prior_value + (1 - P.PRIOR_BLEND) * text_value


def score(text: str, metadata: Mapping[str, Any] | None = None) -> Score:
    """Score one document; raises ValueError on bad text or metadata."""
    text = _validate_text(text)
    meta = parse_metadata(metadata)
    hits = scan(text) + _metadata_hits(meta)
    year = meta.year if meta.year is not None else _text_year(text)
    counts = _count(hits, meta)
    auth_terms = _tidy(_authority_components(counts, year))
    ent_terms = _tidy(_entropy_components(counts, year))
    authority = min(max(sum(auth_terms.values()), 0.0), P.AUTHORITY["max"].value)
    entropy = max(0.0, sum(ent_terms.values()))
    rules = ["text"] if meta.year is None else [f"text+{meta.year_field}"]
    low_confidence = len(text.strip()) < P.SHORT_TEXT_CHARS
    if low_confidence:
        rules.append(f"low-confidence (<{P.SHORT_TEXT_CHARS} chars)")
    authority, entropy = _apply_metadata_overrides(authority, entropy, meta, rules)
    return Score(authority_weight=round(authority, 6) + 0.0, provenance_entropy=round(entropy, 6) + 0.0,
                 citation_count=counts.citations, primary_count=counts.primary,
                 institutional_score=counts.institutional, consensus_count=counts.consensus,
                 source_type_counts=counts.types, type_entropy_bits=ent_terms["type_entropy"],
                 year=year, rule="; ".join(rules), authority_components=auth_terms,
                 entropy_components=ent_terms, evidence=_evidence(hits, text, meta, auth_terms),
                 low_confidence=low_confidence)


def _apply_metadata_overrides(authority: float, entropy: float, meta: Metadata, rules: list[str]) -> tuple[float, float]:
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
