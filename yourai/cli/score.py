"""`yourai score IN -o OUT`: score a JSONL/CSV file's records; unscorable and unreadable lines go to a rejects file."""

from __future__ import annotations

import argparse
import json
import sys
from collections import deque
from pathlib import Path
from typing import Iterator

from yourai.records import RecordError, iter_records
from yourai.scoring import Rejected, Score, score_many


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
    """Exit 0 when every line was read and accounted for (rejects are listed, not fatal); 2 on usage errors."""
    args = _parse_cli(argv)
    if not args.input.is_file():
        print(f"yourai score: input not found: {args.input}", file=sys.stderr)
        return 2
    rejects_path = args.rejects or _default_rejects_path(args.output)
    unreadable: list[RecordError] = []
    pending: deque[tuple[int, dict]] = deque()

    def records() -> Iterator[dict]:
        for line_no, record in iter_records(args.input):
            if isinstance(record, RecordError):
                unreadable.append(record)
                continue
            pending.append((line_no, record))
            yield record

    n_scored = n_rejected = 0
    args.output.parent.mkdir(parents=True, exist_ok=True)
    with args.output.open("w", encoding="utf-8") as out, rejects_path.open("w", encoding="utf-8") as rej:
        for result in score_many(records(), workers=args.workers):
            line_no, record = pending.popleft()
            if isinstance(result, Rejected):
                rej.write(json.dumps({**result.to_dict(), "line": line_no,
                                      "reason": f"{args.input}:{line_no}: {result.reason}"}) + "\n")
                n_rejected += 1
            else:
                out.write(json.dumps(_output_record(record, result, args.evidence), ensure_ascii=False) + "\n")
                n_scored += 1
        for error in unreadable:
            rej.write(json.dumps({"index": None, "id": None, "line": error.line, "reason": error.message()}) + "\n")
    n_rejected += len(unreadable)
    print(f"yourai score: {n_scored} scored → {args.output}; {n_rejected} rejected → {rejects_path}", file=sys.stderr)
    return 0
