"""Scorer speed and separation on the ../shared corpora: yourai vs the anchor's own citation_scorer.py, same run.

The anchor (arosboro/your_ai) is imported from a path you give — a checkout of the repository or
its `python/src/citation_scorer.py` — and never copied here. Both score the same documents with
the same metadata (`score_document(text, metadata=record)` there, `score(text, record)` here),
single process and on all cores. Arms alternate over `--repeats`; a second yourai arm in every
repeat (A/A) shows the noise floor. Rates are printed by wall clock and by CPU time (the latter
stays meaningful when other jobs share the cores). Target: >= 20x the anchor, single process.

    python benchmarks/score_speed.py --anchor ../your_ai [--repeats 3] [--workers N] [--limit DOCS]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import resource
import statistics
import sys
import time
from multiprocessing import get_context
from pathlib import Path
from typing import Callable

from yourai.notebook.scoring_tables import load_corpora
from yourai.paths import shared_dir
from yourai.scoring import Rejected, score, score_many
from yourai.stats import roc_auc

TARGET = 20.0
PRIMARY = ("phil_trans_1665_1869", "gutenberg_science_fieldreports")
CONSENSUS = ("medquad_nih_consensus",)
ANCHOR_FILE = Path("python") / "src" / "citation_scorer.py"
_anchor = None  # the anchor module inside a pool worker


def anchor_file(path: str) -> Path:
    """The anchor's citation_scorer.py from a repository checkout, its folder, or the file itself."""
    given = Path(path).expanduser()
    for candidate in (given, given / ANCHOR_FILE, given / "citation_scorer.py"):
        if candidate.is_file():
            return candidate
    raise SystemExit(f"--anchor {path}: no citation_scorer.py there (looked for {given / ANCHOR_FILE})")


def load_anchor(path: Path):
    """Import the anchor's module from its file (stdlib only), under a name that cannot shadow ours."""
    spec = importlib.util.spec_from_file_location("anchor_citation_scorer", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _init_worker(path: str) -> None:
    global _anchor
    _anchor = load_anchor(Path(path))


def _anchor_chunk(records: list[dict]) -> list[tuple[float, float]]:
    results = [_anchor.score_document(r["text"], r) for r in records]
    return [(r.authority_weight, r.provenance_entropy) for r in results]


def anchor_all_cores(path: Path, records: list[dict], workers: int) -> list[tuple[float, float]]:
    """The anchor on every core: the same process pool shape our score_many uses (chunks of 64)."""
    chunks = [records[i : i + 64] for i in range(0, len(records), 64)]
    with get_context("spawn").Pool(workers, initializer=_init_worker, initargs=(str(path),)) as pool:
        return [pair for chunk in pool.imap(_anchor_chunk, chunks) for pair in chunk]


def _cpu_s() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def timed(function: Callable[[], list]) -> tuple[list, float, float]:
    """(result, wall seconds, CPU seconds of this process and its finished children)."""
    wall, cpu = time.perf_counter(), _cpu_s()
    result = function()
    return result, time.perf_counter() - wall, _cpu_s() - cpu


def separation(pairs_by_corpus: dict[str, list[tuple[float, float]]]) -> tuple[float, float]:
    """(authority AUC: consensus above primary, entropy AUC: primary above consensus)."""
    primary = [p for name in PRIMARY for p in pairs_by_corpus.get(name, [])]
    consensus = [p for name in CONSENSUS for p in pairs_by_corpus.get(name, [])]
    if not primary or not consensus:
        return float("nan"), float("nan")
    return (roc_auc([a for a, _ in consensus], [a for a, _ in primary]),
            roc_auc([e for _, e in primary], [e for _, e in consensus]))


def by_corpus(corpora: dict[str, list[dict]], pairs: list[tuple[float, float]]) -> dict[str, list[tuple[float, float]]]:
    out, start = {}, 0
    for name, records in corpora.items():
        out[name], start = pairs[start : start + len(records)], start + len(records)
    return out


def run_arms(arms: dict[str, Callable[[], list]], repeats: int, size_mb: float) -> tuple[dict, dict]:
    """Every arm once per repeat, order reversed every other repeat; MB/s by wall and by CPU per arm."""
    rates: dict[str, list[tuple[float, float]]] = {name: [] for name in arms}
    results: dict[str, list] = {}
    for repeat in range(repeats):
        for name in (list(arms) if repeat % 2 == 0 else list(reversed(arms))):
            results[name], wall_s, cpu_s = timed(arms[name])
            rates[name].append((size_mb / wall_s, size_mb / cpu_s))
            print(f"  repeat {repeat} {name:34s} {size_mb / wall_s:7.2f} MB/s wall  {size_mb / cpu_s:7.2f} MB/s CPU", flush=True)
    return rates, results


def median_rates(rates: list[tuple[float, float]]) -> tuple[float, float]:
    return statistics.median(r[0] for r in rates), statistics.median(r[1] for r in rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--anchor", required=True, help="a checkout of arosboro/your_ai, or its citation_scorer.py")
    parser.add_argument("--corpora", default=str(shared_dir() / "data" / "corpora"))
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--limit", type=int, default=0, help="score only every k-th document so about this many remain")
    args = parser.parse_args()
    path = anchor_file(args.anchor)
    anchor = load_anchor(path)
    corpora = load_corpora(args.corpora)
    if args.limit:
        step = max(1, sum(len(rs) for rs in corpora.values()) // args.limit)
        corpora = {name: rs[::step] for name, rs in corpora.items()}
    records = [r for rs in corpora.values() for r in rs]
    size_mb = sum(len(r["text"].encode("utf-8")) for r in records) / 1e6
    print(f"anchor: {path}\n{len(records)} documents, {size_mb:.1f} MB, {len(corpora)} corpora, {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.1f}\n")

    def ours() -> list:
        return [(s.authority_weight, s.provenance_entropy) for s in score_many(records, workers=1)]

    single = {"anchor score_document, 1 process": lambda: [(r.authority_weight, r.provenance_entropy) for r in
                                                           (anchor.score_document(x["text"], x) for x in records)],
              "yourai score, 1 process": ours, "yourai score, 1 process (A/A)": ours}
    cores = {f"anchor, {args.workers} processes": lambda: anchor_all_cores(path, records, args.workers),
             f"yourai, {args.workers} processes": lambda: [(s.authority_weight, s.provenance_entropy)
                                                          for s in score_many(records, workers=args.workers)]}
    rates, results = run_arms(single, args.repeats, size_mb)
    core_rates, _ = run_arms(cores, args.repeats, size_mb)
    assert not any(isinstance(s, Rejected) for s in score_many(records[:50], workers=1)), "a shared record was rejected"
    (anchor_wall, anchor_cpu), (ours_wall, ours_cpu), (twin_wall, twin_cpu) = (median_rates(v) for v in rates.values())
    (anchor_all, _), (ours_all, _) = (median_rates(v) for v in core_rates.values())
    print(f"\nmedians over {args.repeats} repeats (MB/s, wall | CPU):")
    print(f"  anchor 1 process {anchor_wall:7.2f} | {anchor_cpu:6.2f}    yourai 1 process {ours_wall:7.2f} | {ours_cpu:6.2f}")
    print(f"  anchor all cores {anchor_all:7.2f}          yourai all cores {ours_all:7.2f}")
    print(f"speed-up, 1 process: {ours_wall / anchor_wall:5.1f}x wall, {ours_cpu / anchor_cpu:5.1f}x CPU   (target >= {TARGET:.0f}x)")
    print(f"speed-up, all cores: {ours_all / anchor_all:5.1f}x wall; yourai all cores vs anchor 1 process: "
          f"{ours_all / anchor_wall:5.1f}x")
    print(f"A/A (two identical yourai arms): {twin_wall / ours_wall:.2f}x wall, {twin_cpu / ours_cpu:.2f}x CPU; "
          f"yourai 1-process spread {min(r[0] for r in rates['yourai score, 1 process']):.2f}–"
          f"{max(r[0] for r in rates['yourai score, 1 process']):.2f} MB/s")
    ours_auc = separation(by_corpus(corpora, results["yourai score, 1 process"]))
    anchor_auc = separation(by_corpus(corpora, results["anchor score_document, 1 process"]))
    print("\nROC AUC (primary vs consensus)   authority  entropy")
    print(f"  yourai                          {ours_auc[0]:8.3f} {ours_auc[1]:8.3f}")
    print(f"  anchor (its code, same run)     {anchor_auc[0]:8.3f} {anchor_auc[1]:8.3f}")


if __name__ == "__main__":
    sys.exit(main())
