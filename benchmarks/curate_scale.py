"""Does curation memory stay flat as the input grows? records/s and peak RSS at 10k and 100k records.

Each size runs in its own subprocess so its peak RSS (getrusage ru_maxrss) is measured cleanly;
the peer is the same pipeline on 10x less data, measured in the same run. Target: the 100k/10k
peak-RSS ratio ≤ 1.2.

    python benchmarks/curate_scale.py                 # 10k and 100k
    python benchmarks/curate_scale.py --sizes 2000 20000
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RSS_RATIO_TARGET = 1.2  # the bound on peak RSS at 10x the records
WORDS_PER_RECORD = (40, 160)  # typical short documents; some exceed max_words once chunked below
DUPLICATE_EVERY = 20  # every 20th record repeats an earlier one, so dedup has work to do
SCORED_EVERY = 2  # every 2nd record supplies its own scores (the rest go through the scorer)
VOCAB_SIZE = 5000
SOURCE_TYPES = ("patent", "letter", "journal_paper", "encyclopedia", "news", "blog", "government")


def _words(rng: random.Random) -> list[str]:
    return [f"w{rng.randrange(VOCAB_SIZE)}" for _ in range(rng.randint(*WORDS_PER_RECORD))]


def generate(path: Path, n_records: int, seed: int = 0) -> None:
    """Synthetic records with random texts, planted exact duplicates and some supplied scores."""
    rng = random.Random(seed)
    recent: list[str] = []
    with open(path, "w", encoding="utf-8") as handle:
        for i in range(n_records):
            if i % DUPLICATE_EVERY == DUPLICATE_EVERY - 1 and recent:
                text = rng.choice(recent)
            else:
                text = " ".join(_words(rng)) + f" Observed in {1700 + i % 320} (Smith, 1999)."
                recent = (recent + [text])[-100:]
            record = {"id": f"gen-{i:07d}", "text": text, "source_type": rng.choice(SOURCE_TYPES),
                      "year": 1700 + i % 320, "origin": "benchmark generator", "license": "CC0-1.0"}
            if i % SCORED_EVERY == 0:
                record.update(authority_weight=round(rng.uniform(0, 0.99), 3),
                              provenance_entropy=round(rng.uniform(0, 8), 3))
            handle.write(json.dumps(record) + "\n")


def child(n_records: int, work_dir: Path) -> None:
    """Generate, curate, and print one JSON line with throughput and peak RSS of this process."""
    from yourai.config import load_config
    from yourai.data.curate import curate

    source = work_dir / f"gen_{n_records}.jsonl"
    generate(source, n_records)
    config = load_config(None, {"curate.sources": [str(source)]})
    started = time.perf_counter()
    report = curate(None, work_dir / f"out_{n_records}", config.curate, workers=config.scoring.workers)
    elapsed_s = time.perf_counter() - started
    peak_self_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    peak_workers_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(json.dumps({"records": n_records, "elapsed_s": round(elapsed_s, 2),
                      "records_per_s": round(n_records / elapsed_s, 1),
                      "peak_rss_mb": round(peak_self_mb, 1), "peak_worker_rss_mb": round(peak_workers_mb, 1),
                      "output": report["funnel"]["balanced"], "reconciled": report["reconciliation"]["ok"]}))


def measure(n_records: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="curate_scale_") as work:
        done = subprocess.run([sys.executable, __file__, "--child", str(n_records), work],
                              check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs=2, default=[10_000, 100_000], metavar=("SMALL", "LARGE"))
    parser.add_argument("--child", nargs=2, metavar=("N", "DIR"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(int(args.child[0]), Path(args.child[1]))
        return 0
    rows = [measure(n) for n in args.sizes]
    print(f"{'records':>9} {'records/s':>10} {'peak RSS MB':>12} {'worker RSS MB':>14} {'output':>8} reconciled")
    for row in rows:
        print(f"{row['records']:>9} {row['records_per_s']:>10.1f} {row['peak_rss_mb']:>12.1f} "
              f"{row['peak_worker_rss_mb']:>14.1f} {row['output']:>8} {row['reconciled']}")
    ratio = rows[1]["peak_rss_mb"] / rows[0]["peak_rss_mb"]
    verdict = "within" if ratio <= RSS_RATIO_TARGET else "ABOVE"
    print(f"peak RSS ratio {args.sizes[1]}/{args.sizes[0]}: {ratio:.3f} ({verdict} the {RSS_RATIO_TARGET} target)")
    print(f"throughput ratio: {rows[1]['records_per_s'] / rows[0]['records_per_s']:.3f}")
    return 0 if ratio <= RSS_RATIO_TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
