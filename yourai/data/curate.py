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

import dataclasses
import hashlib
import json
import re
import sqlite3
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

from yourai.config import ConfigError, CurateConfig
from yourai.data.dedup import SQLITE_CACHE_KIB, ContaminationGuard, DedupIndex, read_truthfulqa_needles
from yourai.data.report import SPLITS, RejectLog, Tally, build_report
from yourai.data.contract import RESERVED_KEYS, fill_item, validate
from yourai.data.sources import Reject, SourceError, SourceSpec, iter_source, parse_source, shared_corpus_sources
from yourai.paths import shared_dir
from yourai.scoring import Rejected, score_many
from yourai.tiers import TIERS, tier_of

CONTRACT_KEYS = ("id", "text", "source_type", "year", "authority_weight", "provenance_entropy",
                 "origin", "license", "tier", "scores_supplied")
STRUCTURED_KEYS = ("prompt", "completion", "messages")
OUTPUT_FILES = ("curated.jsonl", "train.jsonl", "valid.jsonl", "test.jsonl", "rejects.jsonl", "report.json")
SCORE_BATCH_RECORDS = 2048  # records scored per batch: bounds memory, big enough for the process pool
TRUTHFULQA_CSV = "data/truthfulqa/v0/TruthfulQA.csv"  # relative to ../shared
_WORD_SPAN_RE = re.compile(r"\S+")
_HASH_SPACE = 2 ** 64


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


def _valid_records(specs: Sequence, state: Pass1) -> Iterator[dict[str, Any]]:
    """Stage read+fill+validate: yields contract-valid records with unique ids, rejects the rest."""
    for spec in specs:
        for item in iter_source(spec):
            state.tally.funnel["read"] += 1
            state.tally.by_kind.setdefault(item.kind, Counter())["read"] += 1
            state.tally.by_source.setdefault(item.source, Counter())["read"] += 1
            if item.reject is not None:
                state.rejects.add(item.reject, item.kind)
                continue
            state.tally.funnel["parsed"] += 1
            item, filled = fill_item(item, spec)
            result = validate(item, state.config.min_words)
            if isinstance(result, dict) and not _claim_id(state.db, result["id"]):
                result = Reject("validate", "duplicate_id", f"id {result['id']!r} appeared earlier",
                                item.source, item.line, "id", result["id"])
            if isinstance(result, Reject):
                state.rejects.add(result, item.kind)
                continue
            result.update(_kind=item.kind, _source=item.source, _line=item.line)
            result["scores_supplied"] = result.get("authority_weight") is not None
            state.tally.funnel["valid"] += 1
            state.tally.filled.update(filled.items())
            yield result


def _claim_id(db: sqlite3.Connection, record_id: str) -> bool:
    return db.execute("INSERT OR IGNORE INTO ids VALUES (?)", (record_id,)).rowcount == 1


def _scored(records: Iterator[dict[str, Any]], state: Pass1) -> Iterator[dict[str, Any]]:
    """Stage score: supplied scores are kept (validated already); missing ones come from scoring."""
    while batch := list(islice(records, SCORE_BATCH_RECORDS)):
        todo = [r for r in batch if not r["scores_supplied"]]
        results = score_many(todo, workers=state.workers) if todo else iter(())
        for record in batch:
            if not record["scores_supplied"]:
                result = next(results)
                if isinstance(result, Rejected):
                    state.rejects.add(_reject(record, "score", "scoring_failed", result.reason, "text"), record["_kind"])
                    continue
                record["authority_weight"] = result.authority_weight
                record["provenance_entropy"] = result.provenance_entropy
            state.tally.scores["supplied" if record["scores_supplied"] else "computed"] += 1
            state.tally.funnel["scored"] += 1
            yield record


def _reject(record: Mapping[str, Any], stage: str, reason: str, detail: str,
            field_name: str | None = None, **extra: Any) -> Reject:
    return Reject(stage, reason, detail, record["_source"], record["_line"], field_name, record["id"], extra)


def _units(record: dict[str, Any], state: Pass1) -> list[dict[str, Any]]:
    """Stage guard+chunk: [] when contaminated or unchunkable, else one record per chunk."""
    if state.guard is not None and (hit := state.guard.find(record["text"])):
        kind, needle = hit
        state.rejects.add(_reject(record, "contamination", f"truthfulqa_{kind}",
                              f"contains the TruthfulQA {kind} {needle[:100]!r}", "text", matched=needle))
        return []
    state.tally.funnel["clean"] += 1
    chunks = chunk_text(record["text"], state.config.max_words, state.config.chunk_overlap_words)
    if len(chunks) == 1:
        return [record]
    if record["_format"] != "text":
        state.rejects.add(_reject(record, "chunk", "too_long_structured",
                              f"a {record['_format']} record over max_words={state.config.max_words} "
                              "cannot be chunked without breaking its structure", "text"))
        return []
    state.tally.chunking["records_chunked"] += 1
    state.tally.chunking["extra_chunks"] += len(chunks) - 1
    parent = record["id"]
    return [{**record, "id": f"{parent}#c{i}", "text": chunk, "parent_id": parent, "chunk_index": i,
             "n_chunks": len(chunks)} for i, chunk in enumerate(chunks, start=1)]


def _dedup_and_stage(unit: dict[str, Any], state: Pass1, stage_file) -> None:
    """Stage dedup: the first copy is written to the stage file; later copies are logged pairs."""
    duplicate = state.dedup.check_and_add(unit["id"], unit["text"])
    if duplicate is not None:
        stage, reason = ("dedup_exact", "exact_duplicate") if duplicate.exact else ("dedup_near", "near_duplicate")
        state.rejects.add(_reject(unit, stage, reason, f"duplicate of kept record {duplicate.kept_id!r}",
                              "text", kept_id=duplicate.kept_id, similarity=round(duplicate.similarity, 4)))
        return
    state.tally.funnel["unique"] += 1
    unit["tier"] = tier_of(unit["authority_weight"], state.config.primary_max_authority, state.config.consensus_min_authority)
    state.tally.tiers_before[unit["tier"]] += 1
    state.tally.formats[unit["_format"]] += 1
    state.db.execute("INSERT INTO units(tier, key) VALUES (?, ?)", (unit["tier"], balance_key(unit["id"], state.config.seed)))
    stage_file.write(json.dumps(unit, ensure_ascii=False, allow_nan=False) + "\n")


def run_pass1(specs: Sequence, state: Pass1, stage_path: Path, progress: bool) -> None:
    """Stream every source through validate → score → guard → chunk → dedup into the stage file."""
    from tqdm.auto import tqdm

    with open(stage_path, "w", encoding="utf-8") as stage_file:
        records = _scored(_valid_records(specs, state), state)
        for record in tqdm(records, desc="curate: read, score, dedup", unit="rec", disable=not progress):
            units = _units(record, state)
            state.tally.funnel["units"] += len(units)
            for unit in units:
                _dedup_and_stage(unit, state, stage_file)
    state.db.commit()


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
        """Strict JSON (no NaN/Infinity): validation rejected non-finite values, this makes sure."""
        self.curated.write(json.dumps({**record, "split": split}, ensure_ascii=False, allow_nan=False) + "\n")
        self.splits[split].write(json.dumps(for_mlx(record, self.nest), ensure_ascii=False, allow_nan=False) + "\n")

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


def _open_work_db(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path)
    db.executescript(f"""PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF; PRAGMA cache_size=-{SQLITE_CACHE_KIB};
        CREATE TABLE ids(id TEXT PRIMARY KEY) WITHOUT ROWID;
        CREATE TABLE units(seq INTEGER PRIMARY KEY, tier TEXT, key INTEGER);""")
    return db


def curation_sources(config: CurateConfig, sources: Iterable[str | Mapping[str, Any]] | None = None) -> list[str | Mapping[str, Any]]:
    """What stage 01 reads: `sources` (default curate.sources), then the ../shared corpora curate.shared_corpora
    names. One rule, so the notebooks that look at stage 01's input (03's score table) see what it curates —
    a config with only shared corpora (configs/smollm2.yaml) has an empty curate.sources."""
    given = list(config.sources if sources is None else sources)
    return given + (shared_corpus_sources(names=config.shared_corpora) if config.shared_corpora else [])


def curation_specs(config: CurateConfig, sources: Iterable[str | Mapping[str, Any]]) -> list[SourceSpec]:
    """`sources` parsed as curation parses them: with the run-wide curate.defaults, fields and csv_columns, each
    file once (a later listing's options win, the first listing's place is kept). Notebooks 02 and 03 read their
    tables through this too, so they see the same records, filled the same way, as stage 01."""
    specs = [parse_source(s, config.defaults, config.fields, config.csv_columns) for s in sources]
    return list({spec.location: spec for spec in specs}.values())


def curate(sources: Iterable[str | Mapping[str, Any]] | None, out_dir: str | Path, config: CurateConfig,
           *, truthfulqa_csv: str | Path | None = "auto", workers: int | None = None,
           progress: bool = False) -> dict[str, Any]:
    """Run the whole pipeline into `out_dir` and return report.json's content."""
    started = time.perf_counter()
    if config.chunk_overlap_words >= config.max_words:
        raise ConfigError(f"curate.chunk_overlap_words ({config.chunk_overlap_words}) must be < "
                          f"curate.max_words ({config.max_words})")
    bad_fields = {k: v for k, v in config.fields.items() if not isinstance(v, str)}
    if bad_fields:
        raise ConfigError(f"curate.fields: maps a contract field to the input's field name, got {bad_fields}")
    specs = curation_specs(config, curation_sources(config, sources))
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
            run_pass1(specs, Pass1(config, tally, rejects, dedup, db, guard, workers), work_dir / "stage.jsonl", progress)
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
