"""Raw sources → the training set: validate · score · guard · chunk · dedup · balance · split · write.

Two streaming passes keep memory flat whatever the input size:
  pass 1 reads every source one record at a time, rejects what breaks the data contract,
         scores what lacks scores, drops TruthfulQA-contaminated records, chunks over-long
         texts, drops exact and near duplicates (on-disk SQLite index), and writes the
         survivors to a stage file while counting them per tier;
  pass 2 re-reads the stage file, keeps exactly the planned number per tier (the records with
         the smallest seeded hash, found with an SQLite index), and assigns each record to
         train/valid/test by a stable hash of its (parent) id, seed-independent so adding data
         never moves a record between splits.
Every input record ends in the output or in rejects.jsonl, and report.json proves it.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import re
import sqlite3
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

from yourai.config import Config, ConfigError, CurateConfig, load_config, to_dict
from yourai.dedup import SQLITE_CACHE_KIB, ContaminationGuard, DedupIndex, read_truthfulqa_needles
from yourai.paths import shared_dir
from yourai.scoring import Rejected, score_many
from yourai.sources import RESERVED_KEYS, Reject, SourceError, iter_source, parse_source, validate
from yourai.tiers import tier_of  # a light module, so training reads the rule without curation's imports

TIERS = ("primary", "middle", "consensus")
SPLITS = ("train", "valid", "test")
CONTRACT_KEYS = ("id", "text", "source_type", "year", "authority_weight", "provenance_entropy",
                 "origin", "license", "tier", "scores_supplied")
STRUCTURED_KEYS = ("prompt", "completion", "messages")
OUTPUT_FILES = ("curated.jsonl", "train.jsonl", "valid.jsonl", "test.jsonl", "rejects.jsonl", "report.json")
SCORE_BATCH_RECORDS = 2048  # records scored per batch: bounds memory, big enough for the process pool
TRUTHFULQA_CSV = "data/truthfulqa/v0/TruthfulQA.csv"  # relative to ../shared
_WORD_SPAN_RE = re.compile(r"\S+")
_HASH_SPACE = 2 ** 64


class CurateError(RuntimeError):
    """Curation stopped: a record broke the contract under `on_error: fail`."""


# ------------------------------------------------------------------ pure pieces


def _unit_fraction(text: str) -> float:
    """A stable pseudo-random number in [0, 1) from a string (SHA-256, platform independent)."""
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big") / _HASH_SPACE


def split_of(record_id: str, valid_fraction: float, test_fraction: float) -> str:
    """train/valid/test from the id alone: no seed, no neighbours, so a record never moves."""
    u = _unit_fraction(record_id)
    if u < test_fraction:
        return "test"
    return "valid" if u < test_fraction + valid_fraction else "train"


def balance_key(record_id: str, seed: int) -> int:
    """The seeded order in which a tier's records are kept (smallest first); fits SQLite's int64."""
    digest = hashlib.blake2b(f"{seed}\x00{record_id}".encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def chunk_text(text: str, max_words: int, overlap_words: int) -> list[str]:
    """Windows of at most `max_words` words sharing `overlap_words`, original spacing kept."""
    if overlap_words >= max_words:
        raise ValueError(f"chunk_overlap_words ({overlap_words}) must be < max_words ({max_words})")
    spans = [m.span() for m in _WORD_SPAN_RE.finditer(text)]
    if len(spans) <= max_words:
        return [text]
    chunks, start, step = [], 0, max_words - overlap_words
    while True:
        end = min(start + max_words, len(spans))
        chunks.append(text[spans[start][0]:spans[end - 1][1]])
        if end == len(spans):
            return chunks
        start += step


def plan_balance(counts: Mapping[str, int], targets: Mapping[str, float]) -> dict[str, int]:
    """How many to keep per tier: the largest set matching `targets` that the counts allow.

    Tiers with a zero target are dropped; tiers with a positive target but no records are
    left out and the other targets renormalised (reported as `empty_tiers`).
    """
    active = {t: p for t, p in targets.items() if p > 0 and counts.get(t, 0) > 0}
    if not active:
        return {t: 0 for t in counts}
    total_share = sum(active.values())
    capacity = min(counts[t] / (p / total_share) for t, p in active.items())
    keep = {t: 0 for t in counts}
    for tier, share in active.items():
        keep[tier] = min(counts[tier], int(capacity * share / total_share + 1e-9))
    return keep


def output_record(record: Mapping[str, Any]) -> dict[str, Any]:
    """Contract keys first (stable column order for readers), then every extra key kept."""
    ordered = {key: record.get(key) for key in CONTRACT_KEYS}
    ordered.update((k, v) for k, v in record.items() if k not in ordered and k not in RESERVED_KEYS)
    return ordered


def for_mlx(record: dict[str, Any], nest_structured: bool) -> dict[str, Any]:
    """mlx-lm picks the format from the first record, so a mixed run nests prompt/messages keys."""
    if not nest_structured or not any(k in record for k in STRUCTURED_KEYS):
        return record
    out = {k: v for k, v in record.items() if k not in STRUCTURED_KEYS}
    out["structured"] = {k: record[k] for k in STRUCTURED_KEYS if k in record}
    return out


# ------------------------------------------------------------------ bookkeeping


@dataclass
class Tally:
    """Every count report.json needs; bounded by the number of distinct reasons, not records."""

    funnel: Counter = field(default_factory=Counter)
    rejects: Counter = field(default_factory=Counter)  # (stage, reason) → n
    by_kind: dict = field(default_factory=dict)  # source kind → Counter(read, rejected)
    by_source: dict = field(default_factory=dict)  # source location → Counter(read, rejected)
    tiers_before: Counter = field(default_factory=Counter)
    tiers_after: Counter = field(default_factory=Counter)
    source_types: Counter = field(default_factory=Counter)
    splits: Counter = field(default_factory=Counter)
    split_tiers: Counter = field(default_factory=Counter)  # "valid/primary" → n
    formats: Counter = field(default_factory=Counter)
    scores: Counter = field(default_factory=Counter)  # supplied | computed
    chunking: Counter = field(default_factory=Counter)  # records_chunked, extra_chunks


class RejectLog:
    """Appends rejects to rejects.jsonl, counts them, and stops the run under `on_error: fail`."""

    FATAL_STAGES = ("read", "validate", "score", "chunk")  # data errors; dedup/balance are policy

    def __init__(self, path: Path, tally: Tally, on_error: str) -> None:
        self.handle = open(path, "w", encoding="utf-8")
        self.tally, self.on_error = tally, on_error

    def add(self, reject: Reject, kind: str | None = None) -> None:
        self.handle.write(json.dumps(reject.to_json(), ensure_ascii=False) + "\n")
        self.tally.rejects[(reject.stage, reject.reason)] += 1
        if kind is not None:
            self.tally.by_kind.setdefault(kind, Counter())["rejected"] += 1
            self.tally.by_source.setdefault(reject.source, Counter())["rejected"] += 1
        if self.on_error == "fail" and reject.stage in self.FATAL_STAGES:
            self.handle.close()
            raise CurateError(f"{reject.message()} (on_error: fail; use on_error=skip to reject and go on)")

    def close(self) -> None:
        self.handle.close()


# ------------------------------------------------------------------ pass 1


@dataclass
class Pass1:
    """Everything pass 1 needs, so the stage functions stay small."""

    config: CurateConfig
    tally: Tally
    rejects: RejectLog
    dedup: DedupIndex
    db: sqlite3.Connection  # seen ids + per-unit balance keys
    guard: ContaminationGuard | None
    workers: int | None


def _valid_records(specs: Sequence, p: Pass1) -> Iterator[dict[str, Any]]:
    """Stage read+validate: yields contract-valid records with unique ids, rejects the rest."""
    for spec in specs:
        for item in iter_source(spec):
            p.tally.funnel["read"] += 1
            p.tally.by_kind.setdefault(item.kind, Counter())["read"] += 1
            p.tally.by_source.setdefault(item.source, Counter())["read"] += 1
            if item.reject is not None:
                p.rejects.add(item.reject, item.kind)
                continue
            p.tally.funnel["parsed"] += 1
            result = validate(item, p.config.min_words)
            if isinstance(result, dict) and not _claim_id(p.db, result["id"]):
                result = Reject("validate", "duplicate_id", f"id {result['id']!r} appeared earlier",
                                item.source, item.line, "id", result["id"])
            if isinstance(result, Reject):
                p.rejects.add(result, item.kind)
                continue
            result.update(_kind=item.kind, _source=item.source, _line=item.line)
            result["scores_supplied"] = result.get("authority_weight") is not None
            p.tally.funnel["valid"] += 1
            yield result


def _claim_id(db: sqlite3.Connection, record_id: str) -> bool:
    return db.execute("INSERT OR IGNORE INTO ids VALUES (?)", (record_id,)).rowcount == 1


def _scored(records: Iterator[dict[str, Any]], p: Pass1) -> Iterator[dict[str, Any]]:
    """Stage score: supplied scores are kept (validated already); missing ones come from scoring."""
    while batch := list(islice(records, SCORE_BATCH_RECORDS)):
        todo = [r for r in batch if not r["scores_supplied"]]
        results = score_many(todo, workers=p.workers) if todo else iter(())
        for record in batch:
            if not record["scores_supplied"]:
                result = next(results)
                if isinstance(result, Rejected):
                    p.rejects.add(_reject(record, "score", "scoring_failed", result.reason, "text"), record["_kind"])
                    continue
                record["authority_weight"] = result.authority_weight
                record["provenance_entropy"] = result.provenance_entropy
            p.tally.scores["supplied" if record["scores_supplied"] else "computed"] += 1
            p.tally.funnel["scored"] += 1
            yield record


def _reject(record: Mapping[str, Any], stage: str, reason: str, detail: str,
            field_name: str | None = None, **extra: Any) -> Reject:
    return Reject(stage, reason, detail, record["_source"], record["_line"], field_name, record["id"], extra)


def _units(record: dict[str, Any], p: Pass1) -> list[dict[str, Any]]:
    """Stage guard+chunk: [] when contaminated or unchunkable, else one record per chunk."""
    if p.guard is not None and (hit := p.guard.find(record["text"])):
        kind, needle = hit
        p.rejects.add(_reject(record, "contamination", f"truthfulqa_{kind}",
                              f"contains the TruthfulQA {kind} {needle[:100]!r}", "text", matched=needle))
        return []
    p.tally.funnel["clean"] += 1
    chunks = chunk_text(record["text"], p.config.max_words, p.config.chunk_overlap_words)
    if len(chunks) == 1:
        return [record]
    if record["_format"] != "text":
        p.rejects.add(_reject(record, "chunk", "too_long_structured",
                              f"a {record['_format']} record over max_words={p.config.max_words} "
                              "cannot be chunked without breaking its structure", "text"))
        return []
    p.tally.chunking["records_chunked"] += 1
    p.tally.chunking["extra_chunks"] += len(chunks) - 1
    parent = record["id"]
    return [{**record, "id": f"{parent}#c{i}", "text": chunk, "parent_id": parent, "chunk_index": i,
             "n_chunks": len(chunks)} for i, chunk in enumerate(chunks, start=1)]


def _dedup_and_stage(unit: dict[str, Any], p: Pass1, stage_file) -> None:
    """Stage dedup: the first copy is written to the stage file; later copies are logged pairs."""
    duplicate = p.dedup.check_and_add(unit["id"], unit["text"])
    if duplicate is not None:
        stage, reason = ("dedup_exact", "exact_duplicate") if duplicate.exact else ("dedup_near", "near_duplicate")
        p.rejects.add(_reject(unit, stage, reason, f"duplicate of kept record {duplicate.kept_id!r}",
                              "text", kept_id=duplicate.kept_id, similarity=round(duplicate.similarity, 4)))
        return
    p.tally.funnel["unique"] += 1
    unit["tier"] = tier_of(unit["authority_weight"], p.config)
    p.tally.tiers_before[unit["tier"]] += 1
    p.tally.formats[unit["_format"]] += 1
    p.db.execute("INSERT INTO units(tier, key) VALUES (?, ?)", (unit["tier"], balance_key(unit["id"], p.config.seed)))
    stage_file.write(json.dumps(unit, ensure_ascii=False) + "\n")


def run_pass1(specs: Sequence, p: Pass1, stage_path: Path, progress: bool) -> None:
    """Stream every source through validate → score → guard → chunk → dedup into the stage file."""
    from tqdm.auto import tqdm

    with open(stage_path, "w", encoding="utf-8") as stage_file:
        records = _scored(_valid_records(specs, p), p)
        for record in tqdm(records, desc="curate: read, score, dedup", unit="rec", disable=not progress):
            units = _units(record, p)
            p.tally.funnel["units"] += len(units)
            for unit in units:
                _dedup_and_stage(unit, p, stage_file)
    p.db.commit()


# ------------------------------------------------------------------ pass 2


def _thresholds(db: sqlite3.Connection, keep: Mapping[str, int]) -> dict[str, tuple[int, int] | None]:
    """Per tier, the (key, seq) of the last record kept; None keeps nothing."""
    db.execute("CREATE INDEX IF NOT EXISTS units_order ON units(tier, key, seq)")
    limits: dict[str, tuple[int, int] | None] = {}
    for tier, n in keep.items():
        row = db.execute("SELECT key, seq FROM units WHERE tier = ? ORDER BY key, seq LIMIT 1 OFFSET ?",
                         (tier, n - 1)).fetchone() if n > 0 else None
        limits[tier] = tuple(row) if row else None
    return limits


class SplitWriters:
    """curated.jsonl plus one mlx-lm file per split, written as records stream past."""

    def __init__(self, out_dir: Path, nest_structured: bool) -> None:
        self.curated = open(out_dir / "curated.jsonl", "w", encoding="utf-8")
        self.splits = {name: open(out_dir / f"{name}.jsonl", "w", encoding="utf-8") for name in SPLITS}
        self.nest = nest_structured

    def write(self, record: dict[str, Any], split: str) -> None:
        self.curated.write(json.dumps({**record, "split": split}, ensure_ascii=False) + "\n")
        self.splits[split].write(json.dumps(for_mlx(record, self.nest), ensure_ascii=False) + "\n")

    def close(self) -> None:
        for handle in (self.curated, *self.splits.values()):
            handle.close()


def run_pass2(stage_path: Path, out_dir: Path, config: CurateConfig, tally: Tally, db: sqlite3.Connection,
              rejects: RejectLog, progress: bool) -> dict[str, int]:
    """Keep the planned records per tier and write each to its split; returns the plan."""
    from tqdm.auto import tqdm

    targets = dataclasses.asdict(config.tiers) if config.balance else {t: 1.0 for t in TIERS}
    counts = {t: tally.tiers_before.get(t, 0) for t in TIERS}
    keep = plan_balance(counts, targets) if config.balance else counts
    limits = _thresholds(db, keep)
    structured = sum(n for f, n in tally.formats.items() if f != "text")
    writers = SplitWriters(out_dir, nest_structured=0 < structured < sum(tally.formats.values()))
    with open(stage_path, encoding="utf-8") as stage_file:
        for seq, line in enumerate(tqdm(stage_file, total=tally.funnel["unique"], desc="curate: balance, split",
                                        unit="rec", disable=not progress), start=1):
            unit = json.loads(line)
            limit = limits[unit["tier"]]
            if limit is None or (balance_key(unit["id"], config.seed), seq) > limit:
                rejects.add(_reject(unit, "balance", "tier_downsampled",
                                    f"tier {unit['tier']!r} keeps {keep[unit['tier']]} of {counts[unit['tier']]}",
                                    tier=unit["tier"]))
                continue
            split = split_of(unit.get("parent_id") or unit["id"], config.split.valid, config.split.test)
            _count_output(tally, unit, split)
            writers.write(output_record(unit), split)
    writers.close()
    return keep


def _count_output(tally: Tally, unit: Mapping[str, Any], split: str) -> None:
    tally.funnel["balanced"] += 1
    tally.tiers_after[unit["tier"]] += 1
    tally.source_types[unit["source_type"]] += 1
    tally.splits[split] += 1
    tally.split_tiers[f"{split}/{unit['tier']}"] += 1
    tally.by_kind[unit["_kind"]]["output"] += 1


# ------------------------------------------------------------------ report


FUNNEL_STAGES = ("read", "parsed", "valid", "scored", "clean", "units", "unique", "balanced")


def reconcile(tally: Tally, rejected_lines: int) -> dict[str, Any]:
    """The accounting identities a reader can check; `ok` is their conjunction."""
    f, by_stage = tally.funnel, Counter()
    for (stage, _), n in tally.rejects.items():
        by_stage[stage] += n
    extra = tally.chunking["extra_chunks"]
    checks = {
        "read = parsed + read rejects": f["read"] == f["parsed"] + by_stage["read"],
        "parsed = valid + validate rejects": f["parsed"] == f["valid"] + by_stage["validate"],
        "valid = scored + score rejects": f["valid"] == f["scored"] + by_stage["score"],
        "scored = clean + contamination rejects": f["scored"] == f["clean"] + by_stage["contamination"],
        "units = clean + extra chunks - chunk rejects": f["units"] == f["clean"] + extra - by_stage["chunk"],
        "units = unique + dedup rejects": f["units"] == f["unique"] + by_stage["dedup_exact"] + by_stage["dedup_near"],
        "unique = output + balance rejects": f["unique"] == f["balanced"] + by_stage["balance"],
        "output = train + valid + test": f["balanced"] == sum(tally.splits.values()),
        "rejects.jsonl lines = rejects counted": rejected_lines == sum(by_stage.values()),
    }
    return {"ok": all(checks.values()), "checks": checks,
            "input_records": f["read"], "output_records": f["balanced"], "rejected_entries": rejected_lines}


def build_report(tally: Tally, config: CurateConfig, keep: Mapping[str, int], specs: Sequence,
                 guard_info: Mapping[str, Any], elapsed_s: float, rejected_lines: int) -> dict[str, Any]:
    """report.json: counts per stage, tier, source type and kind, rejects by reason, reconciliation."""
    reasons = Counter()
    for (_, reason), n in tally.rejects.items():
        reasons[reason] += n
    return {
        "funnel": {stage: tally.funnel[stage] for stage in FUNNEL_STAGES},
        "reconciliation": reconcile(tally, rejected_lines),
        "rejects_by_stage_reason": [{"stage": s, "reason": r, "count": n}
                                    for (s, r), n in sorted(tally.rejects.items())],
        "rejects_by_reason": dict(sorted(reasons.items())),
        "tiers": {"before_balance": {t: tally.tiers_before[t] for t in TIERS},
                  "planned": dict(keep), "after_balance": {t: tally.tiers_after[t] for t in TIERS},
                  "empty_tiers": [t for t in TIERS if getattr(config.tiers, t) > 0 and not tally.tiers_before[t]]},
        "splits": {s: tally.splits[s] for s in SPLITS},
        "split_tiers": {s: {t: tally.split_tiers[f"{s}/{t}"] for t in TIERS} for s in SPLITS},
        "source_types": dict(sorted(tally.source_types.items())),
        "source_kinds": {k: dict(v) for k, v in sorted(tally.by_kind.items())},
        "sources": {s: dict(v) for s, v in tally.by_source.items()},
        "formats": dict(tally.formats),
        "scores": {"supplied": tally.scores["supplied"], "computed": tally.scores["computed"]},
        "chunking": {"records_chunked": tally.chunking["records_chunked"],
                     "extra_chunks": tally.chunking["extra_chunks"]},
        "contamination": dict(guard_info),
        "config": to_dict(config),
        "source_specs": [{"location": s.location, "kind": s.kind} for s in specs],
        "elapsed_s": round(elapsed_s, 3),
        "records_per_s": round(tally.funnel["read"] / elapsed_s, 1) if elapsed_s > 0 else None,
    }


# ------------------------------------------------------------------ the run


def load_guard(config: CurateConfig, truthfulqa_csv: str | Path | None) -> tuple[ContaminationGuard | None, dict]:
    """The TruthfulQA guard when enabled and the data is present; the report says which."""
    path = shared_dir() / TRUTHFULQA_CSV if truthfulqa_csv == "auto" else truthfulqa_csv
    if not config.contamination_check:
        return None, {"checked": False, "why": "curate.contamination_check is false"}
    if path is None or not Path(path).is_file():
        return None, {"checked": False, "why": f"TruthfulQA data not found at {path}"}
    needles = read_truthfulqa_needles(Path(path))
    guard = ContaminationGuard(needles)
    return guard, {"checked": True, "data": str(path), "needles": guard.size}


# The ../shared corpora carry `source` (a description) and `url_or_origin`, not the contract's
# `source_type` / `origin`: each folder gets the scorer prior that matches its category in
# ../shared/data/corpora/README.md ((a) primary, (b) consensus, (c) citation markup).
SHARED_CORPUS_SOURCE_TYPES = {
    "phil_trans_1665_1869": "letter",  # (a) early papers are mostly communicated letters and observations
    "gutenberg_science_fieldreports": "historical_book",  # (a) monographs and field reports
    "medquad_nih_consensus": "medical_guidelines",  # (b) agency consensus answers
    "wikipedia_wikitext_refs": "wiki",  # (c)
    "plos_jats_citations": "journal_paper",  # (b)+(c) peer-reviewed papers
}


def shared_corpus_sources(corpora_dir: str | Path | None = None) -> list[dict[str, Any]]:
    """Source specs for the ../shared corpora, with the contract fields they lack filled in."""
    root = Path(corpora_dir) if corpora_dir is not None else shared_dir() / "data" / "corpora"
    specs = []
    for folder, source_type in SHARED_CORPUS_SOURCE_TYPES.items():
        for path in sorted((root / folder).glob("*.jsonl")):
            specs.append({"path": str(path), "defaults": {"source_type": source_type},
                          "fill_from": {"origin": "url_or_origin"}})
    return specs


def _open_work_db(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path)
    db.executescript(f"""PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF; PRAGMA cache_size=-{SQLITE_CACHE_KIB};
        CREATE TABLE ids(id TEXT PRIMARY KEY) WITHOUT ROWID;
        CREATE TABLE units(seq INTEGER PRIMARY KEY, tier TEXT, key INTEGER);""")
    return db


def curate(sources: Iterable[str | Mapping[str, Any]] | None, out_dir: str | Path, config: CurateConfig,
           *, truthfulqa_csv: str | Path | None = "auto", workers: int | None = None,
           progress: bool = False) -> dict[str, Any]:
    """Run the whole pipeline into `out_dir` and return report.json's content."""
    started = time.perf_counter()
    if config.chunk_overlap_words >= config.max_words:
        raise ConfigError(f"curate.chunk_overlap_words ({config.chunk_overlap_words}) must be < "
                          f"curate.max_words ({config.max_words})")
    specs = [parse_source(s) for s in (config.sources if sources is None else list(sources))]
    if not specs:
        raise SourceError("no sources given (pass SOURCE... or set curate.sources)")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    guard, guard_info = load_guard(config, truthfulqa_csv)
    tally = Tally()
    with tempfile.TemporaryDirectory(prefix=".curate-", dir=out) as work:
        work_dir = Path(work)
        db, rejects = _open_work_db(work_dir / "work.db"), RejectLog(out / "rejects.jsonl", tally, config.on_error)
        dedup = DedupIndex(work_dir / "dedup.db", config.near_dup_threshold, config.minhash_perm)
        try:
            p = Pass1(config, tally, rejects, dedup, db, guard, workers)
            run_pass1(specs, p, work_dir / "stage.jsonl", progress)
            dedup.close()
            keep = run_pass2(work_dir / "stage.jsonl", out, config, tally, db, rejects, progress)
        finally:
            rejects.close()
            db.close()
            dedup.close()
    guard_info = {**guard_info, "dropped": sum(n for (s, _), n in tally.rejects.items() if s == "contamination")}
    report = build_report(tally, config, keep, specs, guard_info, time.perf_counter() - started,
                          _count_lines(out / "rejects.jsonl"))
    (out / "report.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return report


def _count_lines(path: Path) -> int:
    with open(path, "rb") as handle:
        return sum(1 for _ in handle)


# ------------------------------------------------------------------ CLI

_OVERRIDE_RE = re.compile(r"^[A-Za-z_][\w.]*=")
EXIT_OK, EXIT_DATA_ERROR, EXIT_USAGE = 0, 1, 2


def split_cli_items(items: Sequence[str]) -> tuple[list[str], list[str]]:
    """SOURCE and key=value arguments share the positional list; a bare key means curate.<key>."""
    sources, overrides = [], []
    sections = {f.name for f in dataclasses.fields(Config)}
    for item in items:
        if _OVERRIDE_RE.match(item) and not Path(item).exists():
            key = item.split("=", 1)[0]
            overrides.append(item if key.split(".")[0] in sections else f"curate.{item}")
        else:
            sources.append(item)
    return sources, overrides


def cli_main(argv: list[str]) -> int:
    """`yourai curate SOURCE... --out DIR [-c CONFIG] [key=value ...]`; 0 ok, 1 data error under fail, 2 usage."""
    parser = argparse.ArgumentParser(prog="yourai curate", description=__doc__.splitlines()[0])
    parser.add_argument("items", nargs="*", metavar="SOURCE|key=value",
                        help="JSONL/CSV files, .txt/.md folders, hf:NAME[:SPLIT]; default: curate.sources")
    parser.add_argument("--out", required=True, help="run directory for the outputs")
    parser.add_argument("-c", "--config", help="YAML config (default: configs/default.yaml)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = parser.parse_intermixed_args(argv)
    sources, overrides = split_cli_items(args.items)
    try:
        config = load_config(args.config, overrides)
        report = curate(sources or None, args.out, config.curate, workers=config.scoring.workers,
                        progress=not args.no_progress and sys.stderr.isatty())
    except CurateError as err:
        print(f"yourai curate: {err}", file=sys.stderr)
        return EXIT_DATA_ERROR
    except (ConfigError, SourceError, OSError) as err:
        print(f"yourai curate: {err}", file=sys.stderr)
        return EXIT_USAGE
    print(format_summary(report, args.out))
    return EXIT_OK


def format_summary(report: Mapping[str, Any], out_dir: str | Path) -> str:
    """A few lines for the terminal: the funnel, the splits, the rejects, the reconciliation."""
    funnel = " → ".join(f"{stage} {n}" for stage, n in report["funnel"].items())
    splits = ", ".join(f"{s} {n}" for s, n in report["splits"].items())
    reasons = ", ".join(f"{r} {n}" for r, n in report["rejects_by_reason"].items()) or "none"
    ok = "reconciled" if report["reconciliation"]["ok"] else "DOES NOT RECONCILE"
    return (f"curated into {out_dir}\n  funnel: {funnel}\n  splits: {splits}\n  rejects: {reasons}\n"
            f"  counts {ok}: {report['reconciliation']['input_records']} input records, "
            f"{report['reconciliation']['output_records']} output records")
