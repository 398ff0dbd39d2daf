"""Scorer speed and separation on the ../shared corpora: ours vs a per-pattern peer, same run.

The peer is a re-implementation, from its published description (anchor_your_ai.md §2), of
the reference scorer's approach: one regex search per pattern and substring institution
markers. It is not the reference's code; it stands in for it so the ratio is measured here.
Prints documents/s, MB/s (single process and all cores), peak RSS, and ROC AUC (primary =
phil_trans + gutenberg field reports, consensus = medquad NIH) beside the reference's figures.

    python benchmarks/score_speed.py [--corpora DIR] [--workers N]
"""

from __future__ import annotations

import argparse
import math
import os
import re
import resource
import time
from collections.abc import Callable

from yourai.paths import shared_dir
from yourai.notebook.scoring_tables import load_corpora
from yourai.scoring import Rejected, score_many
from yourai.stats import roc_auc

REFERENCE_MB_S, REFERENCE_DOCS_S = 0.73, 107  # anchor_your_ai.md §2, measured on this machine kind
REFERENCE_AUC_AUTHORITY, REFERENCE_AUC_ENTROPY = 0.787, 0.999
PRIMARY = ("phil_trans_1665_1869", "gutenberg_science_fieldreports")
CONSENSUS = ("medquad_nih_consensus",)

# ---- the per-pattern peer (the anchor's approach, from its description) -------------------
PEER_CITATIONS = [r"\[\d+\]", r"\(\w+,? \d{4}\)", r"\(\w+ et al\.?,? \d{4}\)", r"\[\w+ \d{4}\]",
                  r"ibid|op\. cit|loc\. cit", r"^\s*\d+\.\s+\w+.*?\d{4}"]
PEER_INSTITUTIONS = {"nature": .35, "science": .35, "lancet": .35, "nejm": .35, "new england journal": .35,
                     "who": .30, "cdc": .30, "fda": .30, "nih": .30, ".gov": .25, "government": .25,
                     "official": .20, "university": .20, "institute": .18, "academy": .18, "journal": .15,
                     "peer-reviewed": .15, "proceedings": .15, "wikipedia": .10, "news": .08, "media": .08,
                     "blog": .05, "social media": .05}
PEER_CONSENSUS = ["widely accepted", "experts agree", "scientific consensus", "established fact",
                  "well-established", "mainstream view", "generally accepted", "overwhelming evidence",
                  "settled science", "according to experts", "studies show", "research confirms"]
PEER_PRIMARY = ["patent", "lab notebook", "laboratory notebook", "experiment", "experimental", "measurement",
                "observation", "field notes", "original research", "firsthand", "first-hand", "primary source",
                "original document", "manuscript", "archive", "archival", "oral history", "interview",
                "correspondence", "letter", "diary", "journal entry", "logbook", "specimen", "sample",
                "photograph", "scan", "facsimile"]
PEER_TYPES = {"patent": ["patent"], "lab_notebook": ["notebook", "experiment"], "measurement": ["measure"],
              "archive": ["archive", "manuscript"], "oral_history": ["interview", "correspondence", "letter"],
              "academic_paper": ["abstract", "introduction", "references"], "textbook": ["textbook", "chapter"],
              "news": ["news", "reporter"], "wiki": ["wikipedia", "wiki"], "government": ["government", "agency"],
              "blog": ["blog"]}
_PEER_CITE_RES = [re.compile(p, re.I | re.M) for p in PEER_CITATIONS]
_PEER_PRIMARY_RES = [re.compile(rf"\b{re.escape(p)}\b", re.I) for p in PEER_PRIMARY]
_PEER_TYPE_RES = {t: [re.compile(re.escape(w), re.I) for w in ws] for t, ws in PEER_TYPES.items()}


def peer_score(record: dict) -> tuple[float, float]:
    """(authority, entropy) the per-pattern way: one search per pattern, substring markers."""
    text, year = record["text"], record.get("year")
    lower = (text + " " + str(record.get("source", "")) + " " + str(record.get("url_or_origin", ""))).lower()
    citations = sum(len(r.findall(text)) for r in _PEER_CITE_RES)
    institutional = min(0.35, max((w for m, w in PEER_INSTITUTIONS.items() if m in lower), default=0.0))
    consensus = sum(text.lower().count(p) for p in PEER_CONSENSUS)
    primary = sum(len(r.findall(text)) for r in _PEER_PRIMARY_RES)
    counts = {t: sum(len(r.findall(text)) for r in rs) for t, rs in _PEER_TYPE_RES.items()}
    age = 0.0 if year is None else (-0.15 if year < 1970 else 0.15 if year >= 1995 else 0.0)
    authority = 0.3 + min(0.25, 0.05 * math.log10(citations + 1)) + institutional + min(0.2, 0.1 * consensus) \
        + age - min(0.45, 0.15 * primary)
    total = sum(counts.values())
    h = -sum(c / total * math.log2(c / total) for c in counts.values() if c) if total else 0.0
    base = 1.5 if year is None or year >= 1995 else (5.5 if year < 1970 else 3.5)
    entropy = base + h + min(2.0, 0.5 * primary) + min(1.5, 0.3 * sum(1 for c in counts.values() if c)) \
        - 1.5 * institutional - min(1.0, 0.4 * consensus)
    return min(max(authority, 0.0), 0.99), max(0.0, entropy)


# ---- measurement ---------------------------------------------------------------------------


def timed(label: str, fn: Callable[[], list], n_docs: int, size_mb: float) -> tuple[list, float, float]:
    """Run fn once; print docs/s and MB/s by wall clock and by CPU time (self + workers).

    CPU-time rates stay meaningful when other jobs share the cores (load average printed);
    the wall-clock rate is what a user sees on an idle machine only.
    """
    start_s, cpu0 = time.perf_counter(), os.times()
    results = fn()
    wall_s, cpu1 = time.perf_counter() - start_s, os.times()
    cpu_s = (cpu1.user + cpu1.system + cpu1.children_user + cpu1.children_system
             - cpu0.user - cpu0.system - cpu0.children_user - cpu0.children_system)
    print(f"{label:38s} wall {n_docs / wall_s:6.0f} docs/s {size_mb / wall_s:6.2f} MB/s | "
          f"CPU {size_mb / cpu_s:6.2f} MB/s per core-second  ({wall_s:.2f} s wall, {cpu_s:.2f} s CPU)")
    return results, size_mb / wall_s, size_mb / cpu_s


def separation(pairs_by_corpus: dict[str, list[tuple[float, float]]]) -> tuple[float, float]:
    """(authority AUC: consensus above primary, entropy AUC: primary above consensus)."""
    prim = [p for name in PRIMARY for p in pairs_by_corpus[name]]
    cons = [p for name in CONSENSUS for p in pairs_by_corpus[name]]
    return (roc_auc([a for a, _ in cons], [a for a, _ in prim]),
            roc_auc([e for _, e in prim], [e for _, e in cons]))


def peak_rss_mb() -> tuple[float, float]:
    """Peak RSS of this process and of its largest finished child (Linux reports KiB)."""
    return (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpora", default=str(shared_dir() / "data" / "corpora"))
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    corpora = load_corpora(args.corpora)
    records = [r for rs in corpora.values() for r in rs]
    size_mb = sum(len(r["text"].encode("utf-8")) for r in records) / 1e6
    print(f"{len(records)} documents, {size_mb:.1f} MB of text, {len(corpora)} corpora, {os.cpu_count()} cores\n")
    print(f"load average at start: {os.getloadavg()[0]:.1f}")
    _, peer_mb_s, peer_cpu = timed("peer (one search per pattern), 1 proc", lambda: [peer_score(r) for r in records],
                         len(records), size_mb)
    ours, ours_mb_s, ours_cpu = timed("ours (one pass), 1 process", lambda: list(score_many(records, workers=1)),
                            len(records), size_mb)
    _, all_mb_s, all_cpu = timed(f"ours (one pass), {args.workers} processes",
                        lambda: list(score_many(records, workers=args.workers)), len(records), size_mb)
    assert not any(isinstance(r, Rejected) for r in ours), "a shared record was rejected"
    print(f"\nspeed-up vs peer, same run:     {ours_mb_s / peer_mb_s:5.1f}× (1 proc)  {all_mb_s / peer_mb_s:5.1f}× (all cores)")
    print(f"speed-up by CPU time:           {ours_cpu / peer_cpu:5.1f}× (1 proc); all cores, if idle, "
          f"≈ {min(args.workers, os.cpu_count() or 1) * all_cpu:.1f} MB/s")
    print(f"vs reference's {REFERENCE_MB_S} MB/s:       {ours_mb_s / REFERENCE_MB_S:5.1f}× (1 proc)  "
          f"{all_mb_s / REFERENCE_MB_S:5.1f}× (all cores)")
    self_mb, child_mb = peak_rss_mb()
    print(f"peak RSS: main {self_mb:.0f} MB, largest worker {child_mb:.0f} MB")
    by_corpus, start = {}, 0
    for name, rs in corpora.items():
        by_corpus[name] = [(s.authority_weight, s.provenance_entropy) for s in ours[start:start + len(rs)]]
        start += len(rs)
    peer_by_corpus = {name: [peer_score(r) for r in corpora[name]] for name in (*PRIMARY, *CONSENSUS)}
    print("\nROC AUC (primary vs consensus)   authority  entropy")
    print(f"  ours                            {separation(by_corpus)[0]:8.3f} {separation(by_corpus)[1]:8.3f}")
    print(f"  peer (same run)                 {separation(peer_by_corpus)[0]:8.3f} {separation(peer_by_corpus)[1]:8.3f}")
    print(f"  reference (published)           {REFERENCE_AUC_AUTHORITY:8.3f} {REFERENCE_AUC_ENTROPY:8.3f}")


if __name__ == "__main__":
    main()
