"""Scoring many records: input order kept, one result per record, a process pool for large inputs."""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass
from itertools import islice
from typing import Any

from yourai.scoring.metadata import METADATA_KEYS
from yourai.scoring.score import Score, score


@dataclass(frozen=True)
class Rejected:
    """Stands in `score_many`'s output for a record that could not be scored."""

    index: int
    id: Any
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


PARALLEL_MIN_RECORDS = 512  # ours: below this a process pool costs more than it saves
CHUNK_RECORDS = 64  # ours: records per task sent to a worker (amortises pickling)
IN_FLIGHT_PER_WORKER = 4  # ours: enough queued work to keep workers busy, bounded memory


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
