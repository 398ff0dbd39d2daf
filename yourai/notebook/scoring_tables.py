"""Notebook 02's tables: the ../shared corpora as groups, scores as a DataFrame, evidence in a line."""

from __future__ import annotations

from itertools import islice
from pathlib import Path
from typing import Any, Mapping, Sequence

from yourai.config import CurateConfig
from yourai.data.contract import fill_item
from yourai.data.curate import curation_specs
from yourai.data.sources import iter_source
from yourai.records import iter_jsonl
from yourai.scoring import Rejected, Score, score_many
from yourai.scoring import patterns as P


def load_corpora(corpora_dir: str | Path, limit_per_corpus: int | None = None) -> dict[str, list[dict]]:
    """The ../shared corpora as {folder name: records}, each record tagged with `corpus`."""
    corpora: dict[str, list[dict]] = {}
    for folder in sorted(p for p in Path(corpora_dir).iterdir() if p.is_dir()):
        records = []
        for jsonl in sorted(folder.glob("*.jsonl")):
            for _, record in islice(iter_jsonl(jsonl), limit_per_corpus):
                records.append({**record, "corpus": folder.name})
        corpora[folder.name] = records
    return corpora


def load_sources(sources: Sequence[str | Mapping[str, Any]], settings: CurateConfig | None = None) -> dict[str, list[dict]]:
    """Sources as {source name: records}, parsed and read as stage 01 reads them (curation's readers, the
    run-wide curate `settings`, each file once; the records that parse — stage 01 reports the rest) and filled
    as curation fills them (a shared corpus's `source_type` is its source default, not a field of its records),
    so notebooks 02 and 03 look at exactly what stage 01 curates.

    A source is named by its file stem, or folder/stem where two files share a stem (two corpora's
    `part.jsonl`), so no source's records replace another's."""
    specs = curation_specs(settings or CurateConfig(), sources)
    stems = [spec.location if spec.kind == "hf" else Path(spec.location).stem for spec in specs]
    groups: dict[str, list[dict]] = {}
    for spec, stem in zip(specs, stems):
        name = stem if stems.count(stem) == 1 else f"{Path(spec.location).parent.name}/{stem}"
        filled = (fill_item(item, spec)[0] for item in iter_source(spec) if item.data is not None)
        groups.setdefault(name, []).extend(item.data for item in filled)  # a folder/stem shared twice: both kept
    return groups


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
