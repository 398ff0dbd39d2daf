"""Checkpoint stall per save: writing on the training thread (before) vs on a background thread (after).

Each arm is a fresh `Trainer` process on the same model, data and shapes, saving a checkpoint every
`--save-every` steps; arms alternate over repeats. Every `checkpoint` event in metrics.jsonl carries
`stall_s` (how long the training thread was held by that save: the snapshot, plus any wait for the
previous save, plus with `train.async_save=false` the whole write) and `write_s` (the write, fsync,
hashing, rename, verify and prune). The final save is left out (the run waits for it either way).

Two views are printed: the stall per save (median, the target of issue 16 item 6) and the wall
cost per save, (fit time of the arm − fit time of an arm that saves only at the end) / saves, which
also counts what a background write takes from training by sharing the CPU. A second synchronous
arm (A/A) gives the noise floor of this machine to judge the ratios by.

    python benchmarks/checkpoint_stall.py [--model PATH] [--steps 20] [--save-every 1] [--repeats 3]
                                          [--batch 8] [--seq 256] [--rank 8]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import yourai  # noqa: F401  (OpenBLAS before mlx)

ARMS = {"sync": False, "async": True, "sync A/A": False, "no saves": True}

ARM = r'''
import json, sys, time
from pathlib import Path
import yourai
from yourai.config import load_config
from yourai.train import Trainer
from yourai.train.checkpoints import latest_checkpoint
a = json.loads(sys.argv[1])
config = load_config(None, {"model.path": a["model"], "train.steps": a["steps"], "train.batch_size": a["batch"],
    "train.max_seq_length": a["seq"], "train.save_every": a["save_every"], "train.async_save": a["async_save"],
    "train.keep_last": 2, "train.eval_every": 10**6, "train.val_batches": 1, "train.warmup_steps": 0,
    "train.lora.rank": a["rank"]})
trainer = Trainer(config, a["out"], data_dir=a["data"], progress=False)
started = time.perf_counter()
trainer.fit()
fit_s = time.perf_counter() - started
lines = [json.loads(line) for line in open(a["out"] + "/metrics.jsonl")]
saves = [e for e in lines if e.get("event") == "checkpoint" and e["step"] < a["steps"]]
latest = latest_checkpoint(Path(a["out"], "checkpoints"))
print(json.dumps({"fit_s": fit_s, "stall_s": [e["stall_s"] for e in saves], "write_s": [e["write_s"] for e in saves],
                  "checkpoint_mb": sum(p.stat().st_size for p in latest.iterdir()) / 2**20}))
'''


def curated_sample(out: Path) -> Path:
    from yourai.config import load_config
    from yourai.data.curate import curate

    curate(None, out, load_config().curate)
    return out


def run_arm(params: dict) -> dict:
    done = subprocess.run([sys.executable, "-c", ARM, json.dumps(params)], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-3000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def summarise(rows: list[dict], baseline_fit_s: float) -> dict:
    """Medians over repeats of the per-save stall and write, and the wall cost per save against the no-save arm."""
    stalls = [statistics.median(r["stall_s"]) for r in rows if r["stall_s"]]
    writes = [statistics.median(r["write_s"]) for r in rows if r["write_s"]]
    saves = len(rows[0]["stall_s"])
    fit_s = statistics.median(r["fit_s"] for r in rows)
    return {"stall_ms": 1e3 * statistics.median(stalls) if stalls else 0.0,
            "write_ms": 1e3 * statistics.median(writes) if writes else 0.0, "fit_s": fit_s,
            "wall_ms_per_save": 1e3 * (fit_s - baseline_fit_s) / saves if saves else 0.0, "saves": saves,
            "checkpoint_mb": rows[0]["checkpoint_mb"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default", help="model.path: a hub id, local mlx-lm dir or 'default'")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--save-every", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--rank", type=int, default=8, help="LoRA rank (the checkpoint's size grows with it)")
    args = parser.parse_args()
    results: dict[str, list[dict]] = {arm: [] for arm in ARMS}
    with tempfile.TemporaryDirectory() as tmp:
        data = curated_sample(Path(tmp) / "data")
        common = {"model": args.model, "data": str(data), "steps": args.steps, "batch": args.batch, "seq": args.seq,
                  "rank": args.rank}
        for repeat in range(args.repeats):
            order = list(ARMS) if repeat % 2 == 0 else list(reversed(ARMS))  # alternate the arm order
            for arm in order:
                save_every = 10**6 if arm == "no saves" else args.save_every
                out = str(Path(tmp) / f"{arm.replace(' ', '_').replace('/', '')}-{repeat}")
                row = run_arm({**common, "out": out, "save_every": save_every, "async_save": ARMS[arm]})
                results[arm].append(row)
                stall = statistics.median(row["stall_s"]) * 1e3 if row["stall_s"] else 0.0
                print(f"  repeat {repeat} {arm:8s} fit {row['fit_s']:7.2f} s  stall/save median {stall:8.2f} ms")
    baseline = statistics.median(r["fit_s"] for r in results["no saves"])
    table = {arm: summarise(rows, baseline) for arm, rows in results.items() if arm != "no saves"}
    first = table["sync"]
    print(f"\nmodel {args.model}: batch {args.batch} x {args.seq}, LoRA rank {args.rank}, {args.steps} steps, "
          f"a save every {args.save_every} ({first['saves']} measured), checkpoint {first['checkpoint_mb']:.2f} MB, "
          f"{args.repeats} repeats; no-save arm {baseline:.2f} s")
    for arm, row in table.items():
        print(f"{arm:8s} stall/save {row['stall_ms']:8.2f} ms  write/save {row['write_ms']:8.2f} ms  "
              f"fit {row['fit_s']:7.2f} s  wall cost/save {row['wall_ms_per_save']:8.2f} ms")
    after, twin = table["async"], table["sync A/A"]
    print(f"\nstall per save, before/after: {first['stall_ms'] / max(after['stall_ms'], 1e-9):.1f}x less "
          f"(A/A noise floor {twin['stall_ms'] / max(first['stall_ms'], 1e-9):.2f}x); wall cost per save "
          f"{first['wall_ms_per_save']:.1f} -> {after['wall_ms_per_save']:.1f} ms "
          f"(A/A {twin['wall_ms_per_save']:.1f} ms)")


if __name__ == "__main__":
    main()
