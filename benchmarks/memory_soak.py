"""Memory soak: train the default model for many steps; report the leak slope and the monitor's overhead.

Both numbers come from one run of the real Trainer, with its memory callback (monitor + guard,
wired by the Trainer itself) and its 1 s timer thread. The leak slope is the Theil-Sen slope of
process RSS per optimizer step after a warm-up (MLX's cache and the allocator settle first); the
overhead is the time the Trainer spends in its memory callback divided by the time spent in the
training steps themselves, both summed over the same steps.

    python benchmarks/memory_soak.py [--steps 500] [--batch-size 4] [--seq-len 64] [--warmup 50]
    python benchmarks/memory_soak.py --model smollm2-135m-instruct -c configs/smollm2.yaml --steps 1000 --seq-len 32

A packaged or local model works as --model (on CPU it trains on its float32 copy, model.dequantize=auto); -c takes
the rest of the settings (LoRA layers, data) from a config file, the flags above still win.

The last line is machine-readable: `leak_slope_mb_per_step=<x> overhead=<y>` (y is a fraction).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import yourai  # noqa: F401  (before mlx: preloads OpenBLAS)
from yourai.config import load_config
from yourai.notebook.memory_profile import MemoryOverheadMeter, leak_summary
from yourai.notebook.experiments import resolve_data
from yourai.train import MemoryCallback, Trainer

TARGET_SLOPE_MB_PER_STEP = 0.1  # issue 8: no measurable creep after warm-up
TARGET_OVERHEAD = 0.01  # issue 8: monitor + guard below 1 % of a step


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=500, help="optimizer steps (default 500)")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--seq-len", type=int, default=64, help="train.max_seq_length")
    parser.add_argument("--warmup", type=int, default=50, help="steps left out of the leak fit (default 50)")
    parser.add_argument("--model", default="default", help="model.path: 'default' (the embedded model), a packaged name "
                        "such as smollm2-135m-instruct, a local directory or a hub id")
    parser.add_argument("-c", "--config", help="YAML config for everything the flags do not set (default: configs/default.yaml)")
    parser.add_argument("--json", help="also write the full result here")
    args = parser.parse_args()
    if args.steps < args.warmup + 10:
        parser.error(f"--steps ({args.steps}) must exceed --warmup ({args.warmup}) by at least 10 for a slope")
    return args


def soak(args: argparse.Namespace, out_dir: str) -> dict:
    """One Trainer run without evaluation or intermediate checkpoints: only steps and the monitor."""
    overrides = [f"model.path={args.model}", f"train.steps={args.steps}", f"train.batch_size={args.batch_size}",
                 f"train.max_seq_length={args.seq_len}", f"train.eval_every={args.steps}",
                 f"train.save_every={args.steps}", "train.val_batches=1", f"memory.leak_warmup_steps={args.warmup}"]
    config = load_config(args.config, overrides)
    memory = MemoryCallback.from_config(config.memory)
    meter = MemoryOverheadMeter(memory)
    data_dir = resolve_data(config, None, out_dir)
    trainer = Trainer(config, out_dir, data_dir=data_dir, callbacks=[memory, meter], progress=False)
    started = time.perf_counter()
    trainer.fit()
    wall_s = time.perf_counter() - started
    monitor = memory.monitor
    trace = monitor.to_frame().dropna(subset=["step"])
    after = trace[trace["step"] >= trace["step"].min() + args.warmup]
    return {
        "steps": args.steps, "batch_size": args.batch_size, "seq_len": args.seq_len, "wall_s": wall_s,
        "leak_rss": leak_summary(monitor.leak_estimate("rss_mb")),
        "leak_mlx_active": leak_summary(monitor.leak_estimate("mlx_active_mb")),
        "rss_mb_after_warmup": [float(after["rss_mb"].iloc[0]), float(after["rss_mb"].iloc[-1])],
        "rss_mb_max": float(trace["rss_mb"].max()), "mlx_peak_mb": float(trace["mlx_peak_mb"].max()),
        "samples": monitor.record_count, "timer_samples": int(monitor.to_frame()["step"].isna().sum()),
        **meter.summary(),
    }


def main() -> None:
    args = parse_args()
    with tempfile.TemporaryDirectory(prefix="yourai-soak-") as out_dir:
        result = soak(args, out_dir)
    leak, active = result["leak_rss"], result["leak_mlx_active"]
    print(f"{result['steps']} steps of {args.model} (batch {args.batch_size} x seq {args.seq_len}) in {result['wall_s']:.1f} s")
    print(f"RSS after the {args.warmup}-step warm-up: {result['rss_mb_after_warmup'][0]:.1f} -> "
          f"{result['rss_mb_after_warmup'][1]:.1f} MiB (max {result['rss_mb_max']:.1f}); MLX peak {result['mlx_peak_mb']:.1f} MiB")
    print(f"leak slope (RSS, Theil-Sen): {leak['slope_mb_per_step']:.4f} MB/step, 95 % interval "
          f"{leak['low']:.4f}..{leak['high']:.4f} (target <= {TARGET_SLOPE_MB_PER_STEP}: "
          f"{'met' if leak['slope_mb_per_step'] <= TARGET_SLOPE_MB_PER_STEP else 'NOT met'})")
    print(f"leak slope (MLX active): {active['slope_mb_per_step']:.4f} MB/step, 95 % interval {active['low']:.4f}..{active['high']:.4f}")
    print(f"monitor + guard {result['monitor_ms_per_step']:.3f} ms per step vs training step {result['step_ms']:.2f} ms: "
          f"overhead {100 * result['overhead_fraction']:.2f} % (target < {100 * TARGET_OVERHEAD:.0f} %: "
          f"{'met' if result['overhead_fraction'] < TARGET_OVERHEAD else 'NOT met'}); "
          f"{result['samples']} samples incl. {result['timer_samples']} from the timer thread")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(result, handle, indent=2)
    print(f"leak_slope_mb_per_step={leak['slope_mb_per_step']:.4f} overhead={result['overhead_fraction']:.4f}")


if __name__ == "__main__":
    main()
