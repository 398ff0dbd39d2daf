"""Memory pressure for real: a ballast process eats available memory while a model trains; the guard must pause,
then halve the batch, then abort with a verified checkpoint — never an OOM kill — and the run must resume.

    python benchmarks/memory_pressure.py                                    # the embedded default (~1 min)
    python benchmarks/memory_pressure.py --model smollm2-135m-instruct      # the real model (a few minutes)

How it stays bounded: after `--calibrate-steps` steps (the run's own memory has settled) the guard's floors are set
*relative to the memory available then* — pause when available falls `--step-gb` below it, shrink at twice that,
abort at three times — so the ballast never needs more than ~3.5 × step-gb (default 1 GiB: ≤ 3.5 GiB), and
the ballast child refuses to go below `SAFETY_AVAILABLE_GB` of available memory whatever it is asked. Give absolute
floors (`--floors-gb PAUSE SHRINK ABORT`, GiB of available memory) to test a configuration's own fractions on a
machine you have to yourself. Every stage has a timeout; the script ends with the guard's events and a verdict.

The schedule follows the guard's own decisions (S = step time): ballast between the pause and shrink floors for
max(3 s, 3 S), freed by the child itself → the guard pauses and resumes; ballast between the shrink and abort floors
until the guard halves the batch, then freed; ballast past the abort floor → the guard aborts, the trainer saves a
checkpoint (verified here), the ballast is freed, and `Trainer(resume=True)` finishes the run. MLX's buffer cache is
off (memory.cache_limit_fraction=0) so that the guard's first remedy, clearing it, cannot undo the ballast.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GIB = 1024**3
SAFETY_AVAILABLE_GB = 1.0  # the ballast never pushes the machine's available memory below this
MARGIN = 0.5  # ballast sits mid-way between floors: half a step from each, robust to others' noise


# --- the ballast child: allocates and touches memory on command --------------------------------------------------


def ballast_child() -> None:
    """Read `<MiB> <hold_s>` lines; hold that much touched memory (hold_s > 0: then drop to 0 by itself)."""
    import numpy as np
    import psutil

    chunks: list = []
    for line in sys.stdin:
        target_mib, hold_s = (float(x) for x in line.split())
        chunks = chunks[: int(target_mib) // 64]
        while len(chunks) * 64 < target_mib and psutil.virtual_memory().available > SAFETY_AVAILABLE_GB * GIB:
            chunks.append(np.ones(64 * 2**20 // 8))  # 64 MiB, written so the pages are really committed
        print(f"{len(chunks) * 64}", flush=True)
        if hold_s > 0:
            time.sleep(hold_s)
            chunks = []


class Ballast:
    """The parent's handle on the child process."""

    def __init__(self) -> None:
        self.process = subprocess.Popen([sys.executable, __file__, "--ballast-child"], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, text=True)
        self.log: list[dict] = []

    def set(self, gib: float, hold_s: float = 0.0, label: str = "") -> int:
        """Hold `gib` of memory in the child (returns once allocated); with `hold_s`, the child frees it after."""
        self.process.stdin.write(f"{max(gib, 0.0) * 1024:.0f} {hold_s}\n")
        self.process.stdin.flush()
        held_mib = int(self.process.stdout.readline())
        self.log.append({"label": label, "asked_gib": round(gib, 3), "held_gib": round(held_mib / 1024, 3),
                         "hold_s": hold_s, "time": time.time()})
        return held_mib

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=30)


# --- the controller: a training callback that moves the ballast along the schedule ---------------------------------


def available_gib() -> float:
    import psutil

    return psutil.virtual_memory().available / GIB


class PressureSchedule:
    """Calibrates the guard's floors, then steps the ballast through pause → shrink → abort as the guard answers."""

    def __init__(self, memory, ballast: Ballast, args: argparse.Namespace) -> None:
        self.memory, self.ballast, self.args = memory, ballast, args
        self.stage, self.floors_gib, self.fractions = "warmup", {}, {}
        self.step_times: list[float] = []
        self.started = time.perf_counter()

    def calibrate(self) -> None:
        """Floors as GiB of available memory, turned into the guard's used fractions (they are what it reads)."""
        from yourai.train.guard import validate_thresholds

        total = self.memory.monitor.record(None).system_total_mb / 1024
        if self.args.floors_gb:
            self.floors_gib = dict(zip(("pause", "shrink", "abort"), self.args.floors_gb))
        else:
            now = available_gib()
            self.floors_gib = {name: now - k * self.args.step_gb for k, name in ((1, "pause"), (2, "shrink"), (3, "abort"))}
        self.fractions = {f"{name}_fraction": round(1 - floor / total, 4) for name, floor in self.floors_gib.items()}
        config = dataclasses.replace(self.memory.guard.config, clear_cache_fraction=self.fractions["pause_fraction"],
                                     **self.fractions)
        validate_thresholds(config)
        self.memory.guard.config = config  # the guard reads its config at every check

    def ballast_past(self, floor: str, hold_s: float = 0.0) -> None:
        """Ballast that puts available memory `MARGIN × step` below `floor` (between it and the next floor)."""
        depth = MARGIN * (self.args.step_gb if not self.args.floors_gb else
                          min(abs(a - b) for a, b in zip(self.args.floors_gb, self.args.floors_gb[1:])))
        gib = available_gib() - (self.floors_gib[floor] - depth)
        if gib > self.args.max_ballast_gb:
            raise RuntimeError(f"{floor}: needs {gib:.2f} GiB of ballast, above --max-ballast-gb {self.args.max_ballast_gb}")
        self.ballast.set(max(gib, 0.0), hold_s, label=floor)

    def after_guard(self, step: int, action: str) -> None:
        """Called right after the guard's decision of each step; moves to the next stage when it answered."""
        self.step_times.append(time.perf_counter())
        if self.stage == "warmup" and step >= self.args.calibrate_steps:
            self.calibrate()
            step_s = (self.step_times[-1] - self.step_times[0]) / max(1, len(self.step_times) - 1)
            self.ballast_past("pause", hold_s=max(3.0, 3 * step_s))  # the child frees it: the guard resumes
            self.stage = "pause"
        elif self.stage == "pause" and action in ("pause", "shrink"):
            self.stage = "before_shrink"
        elif self.stage == "before_shrink":
            self.ballast_past("shrink")
            self.stage = "shrink"
        elif self.stage == "shrink" and action == "shrink":
            self.ballast.set(0.0, label="after_shrink")  # the batch is halved: pressure gone
            self.stage = "before_abort"
        elif self.stage == "before_abort":
            self.ballast_past("abort")
            self.stage = "abort"
        elif self.stage == "abort" and action == "abort":
            self.stage = "aborted"  # the trainer saves a checkpoint and stops; the ballast goes after
        if time.perf_counter() - self.started > self.args.timeout_s:
            raise TimeoutError(f"stage {self.stage!r} did not finish within {self.args.timeout_s} s")


def observed_memory_callback(config, schedule_factory):
    """The real MemoryCallback (monitor + guard), reporting each decision to the schedule as soon as it is taken."""
    from yourai.train import MemoryCallback

    class ObservedMemoryCallback(MemoryCallback):
        def check_step(self, step: int, batch_size: int, grad_accumulation: int):
            decision = super().check_step(step, batch_size, grad_accumulation)
            self.schedule.after_guard(step, decision.action)
            return decision

    memory = ObservedMemoryCallback.from_config(config)
    memory.schedule = schedule_factory(memory)
    return memory


# --- the run -----------------------------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default", help="model.path (default: the embedded model)")
    parser.add_argument("-c", "--config", help="YAML config (default: configs/default.yaml)")
    parser.add_argument("--steps", type=int, default=40, help="steps of the whole run, resume included")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--seq-len", type=int, default=32)
    parser.add_argument("--calibrate-steps", type=int, default=3)
    parser.add_argument("--step-gb", type=float, default=1.0,
                        help="GiB between relative floors (default 1.0: above a shared machine's noise)")
    parser.add_argument("--floors-gb", type=float, nargs=3, metavar=("PAUSE", "SHRINK", "ABORT"),
                        help="absolute floors, GiB of available memory (default: relative to calibration)")
    parser.add_argument("--max-ballast-gb", type=float, default=5.0, help="refuse to hold more (default 5)")
    parser.add_argument("--timeout-s", type=float, default=600.0)
    parser.add_argument("--json", help="also write the result here")
    return parser.parse_args()


def guard_events(metrics_path: Path) -> list[dict]:
    lines = [json.loads(line) for line in metrics_path.read_text().splitlines() if line.strip()]
    return [e for e in lines if str(e.get("event", "")).startswith("memory_")
            and e["event"] not in ("memory_cache_limit",)]


def run(args: argparse.Namespace, out: Path) -> dict:
    import yourai  # noqa: F401  (before mlx: preloads OpenBLAS)
    from yourai.config import load_config
    from yourai.notebook.experiments import resolve_data
    from yourai.train import MemoryAbort, Trainer
    from yourai.train import checkpoints as ckpt

    overrides = [f"model.path={args.model}", f"train.steps={args.steps}", f"train.batch_size={args.batch_size}",
                 f"train.max_seq_length={args.seq_len}", f"train.eval_every={args.steps}", f"train.save_every={args.steps}",
                 "train.val_batches=1", "memory.max_pause_s=30", "memory.shrink_cooldown_steps=1",
                 "memory.cache_limit_fraction=0.0"]  # no MLX cache: clearing it cannot undo the ballast
    config = load_config(args.config, overrides)
    data_dir = resolve_data(config, None, out)
    ballast = Ballast()
    memory = observed_memory_callback(config.memory, lambda callback: PressureSchedule(callback, ballast, args))
    schedule = memory.schedule
    started, aborted, checkpoint = time.perf_counter(), None, None
    try:
        Trainer(config, out, data_dir=data_dir, callbacks=[memory], progress=False).fit()
    except MemoryAbort as err:
        aborted = str(err)
        checkpoint = ckpt.latest_checkpoint(out / "checkpoints")
    finally:
        ballast.set(0.0, label="release")
        ballast.close()
    events = guard_events(out / "metrics.jsonl")
    verified = ckpt.verify(checkpoint) if checkpoint else None
    resumed = Trainer(config, out, data_dir=data_dir, resume=True, progress=False).fit() if aborted else None
    return {"model": args.model, "floors_available_gib": schedule.floors_gib, "guard_fractions": schedule.fractions,
            "ballast": ballast.log, "events": events, "aborted": aborted, "checkpoint": str(checkpoint),
            "checkpoint_verified": verified is not None, "resumed_from": resumed.resumed_from if resumed else None,
            "final_step": resumed.steps if resumed else None, "wall_s": time.perf_counter() - started}


def verdict(result: dict, steps: int) -> dict[str, bool]:
    names = [e["event"] for e in result["events"]]
    first = {name: names.index(name) if name in names else None for name in ("memory_pause", "memory_shrink", "memory_abort")}
    ordered = None not in first.values() and first["memory_pause"] < first["memory_shrink"] < first["memory_abort"]
    return {"paused": "memory_resume" in names, "shrank": first["memory_shrink"] is not None,
            "aborted_with_checkpoint": bool(result["aborted"]) and result["checkpoint_verified"],
            "in_order": ordered, "resumed_to_the_end": result["final_step"] == steps}


def main() -> None:
    if sys.argv[1:] == ["--ballast-child"]:
        ballast_child()
        return
    args = parse_args()
    with tempfile.TemporaryDirectory(prefix="yourai-pressure-") as tmp:
        result = run(args, Path(tmp))
    result["verdict"] = verdict(result, args.steps)
    print(f"floors (GiB available): {', '.join(f'{k} {v:.2f}' for k, v in result['floors_available_gib'].items())}"
          f" = used fractions {result['guard_fractions']}")
    for event in result["events"]:
        print(f"  step {event['step']:>3} {event['event']:<22} used {event['used_fraction']:.3f}, "
              f"available {event['system_available_mb'] / 1024:.2f} GiB, this process {event['process_fraction']:.3f}")
    print(f"ballast levels (GiB held): {[(b['label'], b['held_gib']) for b in result['ballast']]}")
    print(f"aborted: {bool(result['aborted'])}; checkpoint verified: {result['checkpoint_verified']}; "
          f"resumed from step {result['resumed_from']} to {result['final_step']}; {result['wall_s']:.0f} s")
    print("verdict: " + ", ".join(f"{k}={v}" for k, v in result["verdict"].items()))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2, default=str) + "\n")
    sys.exit(0 if all(result["verdict"].values()) else 1)


if __name__ == "__main__":
    main()
