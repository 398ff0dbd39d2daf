"""Curation's bookkeeping: the counts, the rejects file and report.json, which proves every record is accounted for."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from yourai.config import CurateConfig, to_dict
from yourai.data.sources import Reject
from yourai.tiers import TIERS

SPLITS = ("train", "valid", "test")


class CurateError(RuntimeError):
    """Curation stopped: a record broke the contract under `on_error: fail`."""


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
    filled: Counter = field(default_factory=Counter)  # (contract field, how) → valid records it was filled in
    reject_fields: Counter = field(default_factory=Counter)  # (reason, field) → n


class RejectLog:
    """Appends rejects to rejects.jsonl, counts them, and stops the run under `on_error: fail`."""

    FATAL_STAGES = ("read", "validate", "score", "chunk")  # data errors; dedup/balance are policy

    def __init__(self, path: Path, tally: Tally, on_error: str) -> None:
        self.handle = open(path, "w", encoding="utf-8")
        self.tally, self.on_error = tally, on_error

    def add(self, reject: Reject, kind: str | None = None) -> None:
        self.handle.write(json.dumps(reject.to_json(), ensure_ascii=False) + "\n")
        self.tally.rejects[(reject.stage, reject.reason)] += 1
        self.tally.reject_fields[(reject.reason, reject.field_name)] += 1
        if kind is not None:
            self.tally.by_kind.setdefault(kind, Counter())["rejected"] += 1
            self.tally.by_source.setdefault(reject.source, Counter())["rejected"] += 1
        if self.on_error == "fail" and reject.stage in self.FATAL_STAGES:
            self.handle.close()
            raise CurateError(f"{reject.message()} (on_error: fail; use on_error=skip to reject and go on)")

    def close(self) -> None:
        self.handle.close()


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
        "rejects_by_reason_field": [{"reason": r, "field": f, "count": n} for (r, f), n in tally.reject_fields.most_common()],
        "filled_fields": _filled(tally),
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


def _filled(tally: Tally) -> dict[str, dict[str, int]]:
    """{contract field: {how: records}}: how many kept-valid records had each field filled, and from what."""
    filled: dict[str, dict[str, int]] = {}
    for (name, how), n in sorted(tally.filled.items()):
        filled.setdefault(name, {})[how] = n
    return filled


def top_reject_reasons(report: Mapping[str, Any], limit: int = 5) -> list[str]:
    """The most common reasons records were rejected, with the field at fault: what to fix first."""
    return [f"{entry['reason']}" + (f" (field '{entry['field']}')" if entry["field"] else "") + f": {entry['count']}"
            for entry in report["rejects_by_reason_field"][:limit]]


def format_summary(report: Mapping[str, Any], out_dir: str | Path) -> str:
    """A few lines for the terminal: the funnel, the splits, the rejects, the reconciliation."""
    funnel = " → ".join(f"{stage} {n}" for stage, n in report["funnel"].items())
    splits = ", ".join(f"{s} {n}" for s, n in report["splits"].items())
    reasons = ", ".join(f"{r} {n}" for r, n in report["rejects_by_reason"].items()) or "none"
    ok = "reconciled" if report["reconciliation"]["ok"] else "DOES NOT RECONCILE"
    filled = ", ".join(f"{name} {sum(ways.values())} ({', '.join(f'{how} {n}' for how, n in ways.items())})"
                       for name, ways in report["filled_fields"].items()) or "none"
    return (f"curated into {out_dir}\n  funnel: {funnel}\n  splits: {splits}\n  rejects: {reasons}\n"
            f"  filled in: {filled}\n"
            f"  counts {ok}: {report['reconciliation']['input_records']} input records, "
            f"{report['reconciliation']['output_records']} output records")
