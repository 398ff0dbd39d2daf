"""Memory profiling experiments behind notebook 05 and benchmarks/memory_soak.py.

Why: `yourai.train.memory` watches a run; this module asks the questions a user has *before* a run
(how much does batch size, sequence length or gradient checkpointing cost?) and shows that the
monitor and guard do what they claim (a deliberate leak is flagged; simulated pressure makes the
guard clear, pause, shrink and abort). Peak memory depends on array shapes, not token values,
so the sweep feeds seeded random tokens through a real LoRA training step of the chosen model.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
import pandas as pd

from yourai.config import LoraConfig, MemoryConfig
from yourai.train.callbacks import TrainingCallback
from yourai.train.guard import GuardDecision, MemoryCallback, MemoryGuard
from yourai.train.lora import build_lora_model, grad_checkpointing
from yourai.train.memory import BYTES_PER_MB, MemoryMonitor, SimulatedMemorySource, used_fraction

SWEEP_LEARNING_RATE = 1e-3  # the trainer's default; the value does not change memory
TRACE_METRICS = ("rss_mb", "mlx_active_mb", "mlx_cache_mb", "mlx_peak_mb")


# --- a LoRA training step to measure ---------------------------------------------------


def lora_model(model: str = "default", lora: LoraConfig = LoraConfig(), seed: int = 0,
               dequantize: str = "auto") -> tuple[nn.Module, Any]:
    """(model, tokenizer) with the adapters `yourai train` would attach under the same LoRA and dequantize settings."""
    mx.random.seed(seed)
    lm, tokenizer, _ = build_lora_model(model, lora, dequantize=dequantize)
    return lm, tokenizer


def make_lora_step(lm: nn.Module, optimizer: optim.Optimizer, keep_logits: list | None = None) -> Callable[[mx.array], float]:
    """One optimizer update on a token batch; returns the loss.

    `keep_logits`, when given, receives every step's logits: the classic "history for later"
    mistake that holds batch x seq x vocab floats per step and so leaks memory on purpose.
    """

    def loss_fn(model: nn.Module, tokens: mx.array) -> tuple[mx.array, mx.array]:
        logits = model(tokens[:, :-1])
        return nn.losses.cross_entropy(logits, tokens[:, 1:], reduction="mean"), logits

    value_and_grad = nn.value_and_grad(lm, loss_fn)

    def step(tokens: mx.array) -> float:
        (loss, logits), grads = value_and_grad(lm, tokens)
        optimizer.update(lm, grads)
        mx.eval(loss, lm.trainable_parameters(), optimizer.state)
        if keep_logits is not None:
            mx.eval(logits)
            keep_logits.append(logits)
        return loss.item()

    return step


def random_tokens(vocab_size: int, batch_size: int, seq_len: int, seed: int) -> mx.array:
    """Seeded token ids of shape (batch, seq_len + 1): inputs and shifted targets of seq_len each."""
    rng = np.random.default_rng(seed)
    return mx.array(rng.integers(0, vocab_size, size=(batch_size, seq_len + 1)), dtype=mx.int32)


# --- peak memory sweep -----------------------------------------------------------------


def measure_step_peak(lm: nn.Module, batch_size: int, seq_len: int, grad_checkpoint: bool, steps: int = 3,
                      seed: int = 0) -> dict:
    """Peak MLX memory of `steps` LoRA updates at one shape, above what the model holds at rest.

    One warm-up update first allocates the optimizer state; the cache is then cleared and the
    peak counter reset, so `step_peak_mb` is what one update needs on top of `resident_mb`.
    """
    if steps < 1 or batch_size < 1 or seq_len < 1:
        raise ValueError(f"measure_step_peak: steps, batch_size, seq_len must be >= 1, got {steps}, {batch_size}, {seq_len}")
    tokens = random_tokens(lm.args.vocab_size, batch_size, seq_len, seed)
    with grad_checkpointing(lm.layers[0], grad_checkpoint):
        step = make_lora_step(lm, optim.AdamW(learning_rate=SWEEP_LEARNING_RATE))
        step(tokens)
        mx.clear_cache()
        resident_mb = mx.get_active_memory() / BYTES_PER_MB
        mx.reset_peak_memory()
        started = time.perf_counter()
        for _ in range(steps):
            step(tokens)
        step_s = (time.perf_counter() - started) / steps
        peak_mb = mx.get_peak_memory() / BYTES_PER_MB
    return {"batch_size": batch_size, "seq_len": seq_len, "grad_checkpoint": grad_checkpoint,
            "peak_mb": peak_mb, "resident_mb": resident_mb, "step_peak_mb": peak_mb - resident_mb,
            "step_s": step_s}


def peak_memory_sweep(lm: nn.Module, batch_sizes: Sequence[int], seq_lengths: Sequence[int],
                      checkpointing: Sequence[bool] = (False, True), steps: int = 3, seed: int = 0) -> pd.DataFrame:
    """Peak memory for every (batch, seq_len, checkpointing): what to lower when a run will not fit."""
    rows = [measure_step_peak(lm, batch, seq_len, ckpt, steps, seed)
            for batch in batch_sizes for seq_len in seq_lengths for ckpt in checkpointing]
    return pd.DataFrame(rows)


def checkpointing_savings(sweep: pd.DataFrame) -> pd.DataFrame:
    """Per (batch, seq_len): step peak without / with checkpointing, and the share it saves."""
    table = sweep.pivot_table(index=["batch_size", "seq_len"], columns="grad_checkpoint", values="step_peak_mb")
    table.columns = ["off_mb" if not on else "on_mb" for on in table.columns]
    table["saved_fraction"] = 1.0 - table["on_mb"] / table["off_mb"]
    return table.reset_index()


# --- a deliberately leaking loop -------------------------------------------------------


def run_monitored_loop(lm: nn.Module, monitor: MemoryMonitor, steps: int, batch_size: int, seq_len: int,
                       leak: bool, seed: int = 0) -> int:
    """LoRA updates with the monitor sampling after each; `leak` keeps every step's logits alive.

    Returns how many arrays the loop kept, so a caller can release them (`del`) when done.
    """
    kept: list = []
    step = make_lora_step(lm, optim.AdamW(learning_rate=SWEEP_LEARNING_RATE), kept if leak else None)
    for index in range(steps):
        step(random_tokens(lm.args.vocab_size, batch_size, seq_len, seed + index))
        monitor.record(index)
    count = len(kept)
    kept.clear()
    return count


def leaked_mb_per_step(lm: nn.Module, batch_size: int, seq_len: int) -> float:
    """What keeping one step's float32 logits costs: batch x seq_len x vocab x 4 bytes."""
    return batch_size * seq_len * lm.args.vocab_size * np.dtype(np.float32).itemsize / BYTES_PER_MB


# --- the guard under simulated pressure ------------------------------------------------


@dataclass
class SimulatedClock:
    """Seconds that pass only when told: steps advance it, and the guard's pauses sleep on it."""

    now_s: float = 0.0

    def sleep(self, seconds: float) -> None:
        self.now_s += seconds


class TimelineSource(SimulatedMemorySource):
    """A simulated machine whose other programs follow a timeline of (start_s, used_mb) on a clock.

    A tick-indexed script cannot express "another program exits two seconds into our pause";
    a timeline on the clock the guard sleeps on can.
    """

    def __init__(self, clock: SimulatedClock, timeline: Sequence[tuple[float, float]], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        starts = [start for start, _ in timeline]
        if not timeline or starts[0] != 0.0 or any(b <= a for a, b in zip(starts, starts[1:])):
            raise ValueError(f"TimelineSource: timeline must start at 0.0 s with increasing start times, got {starts}")
        self.clock = clock
        self.timeline = [(float(start), float(used_mb)) for start, used_mb in timeline]

    def other_mb_now(self) -> float:
        """Other programs' memory at the clock's current time (the last entry that has started)."""
        index = int(np.searchsorted([start for start, _ in self.timeline], self.clock.now_s, side="right")) - 1
        return self.timeline[index][1]

    def _other_used(self) -> float:  # the hook SimulatedMemorySource.sample() reads
        return self.other_mb_now()


@dataclass(frozen=True)
class PressureScenario:
    """A machine, a run and what other programs do; defaults walk the guard through every action."""

    timeline: tuple[tuple[float, float], ...] = (
        (0.0, 6000.0),  # a busy machine, below the clear-cache threshold
        (3.5, 7800.0),  # a browser grows for a moment: our MLX cache must go
        (4.5, 6000.0),
        (4.9, 9600.0),  # a build starts: clearing is not enough, pause...
        (5.6, 6000.0),  # ...and it finishes 0.6 s into our pause
        (7.5, 10500.0),  # a second model is loaded and stays: halve our batch
        (11.5, 14000.0),  # it grows until nothing helps: checkpoint and abort
    )
    steps: int = 14
    step_s: float = 1.0
    batch_size: int = 8
    grad_accumulation: int = 1
    total_mb: float = 16384.0
    base_rss_mb: float = 600.0  # interpreter, libraries, frozen weights
    per_sample_mb: float = 400.0  # activations per sample in the batch: shrinking relieves pressure
    cache_growth_mb_per_tick: float = 50.0  # MLX keeps freed buffers: the cache creeps until cleared


@dataclass
class GuardSimulation:
    """What the guard decided at each step (`table`) and its full decisions (messages, events)."""

    table: pd.DataFrame
    decisions: list[GuardDecision] = field(default_factory=list)
    source: TimelineSource | None = None


def simulate_guard(scenario: PressureScenario = PressureScenario(), config: MemoryConfig | None = None) -> GuardSimulation:
    """Run the real MemoryGuard on a simulated machine, one check per simulated optimizer step."""
    config = config if config is not None else MemoryConfig()
    clock = SimulatedClock()
    source = TimelineSource(clock, scenario.timeline, total_mb=scenario.total_mb, base_rss_mb=scenario.base_rss_mb,
                            cache_growth_mb_per_tick=scenario.cache_growth_mb_per_tick)
    monitor = MemoryMonitor(source, config)
    guard = MemoryGuard(monitor, config, sleep=clock.sleep)
    batch, accumulation = scenario.batch_size, scenario.grad_accumulation
    rows, decisions = [], []
    for step in range(1, scenario.steps + 1):
        clock.now_s += scenario.step_s
        source.active_mb = scenario.per_sample_mb * batch
        started_s, other_mb = clock.now_s, source.other_mb_now()
        sample = monitor.record(step)
        decision = guard.check(step, batch, accumulation, sample=sample)
        decisions.append(decision)
        rows.append({"step": step, "clock_s": started_s, "other_mb": other_mb, "used_before": used_fraction(sample),
                     "action": decision.action, "batch_size": decision.batch_size,
                     "grad_accumulation": decision.grad_accumulation, "used_after": decision.used_fraction,
                     "paused_s": clock.now_s - started_s,
                     "events": " ".join(event["event"].removeprefix("memory_") for event in decision.events)})
        batch, accumulation = decision.batch_size, decision.grad_accumulation
        if decision.action == "abort":
            break
    return GuardSimulation(pd.DataFrame(rows), decisions, source)


# --- monitor overhead inside a real training run ---------------------------------------


class MemoryOverheadMeter(TrainingCallback):
    """What the memory callback costs inside a real training run: its own per-step time over the steps' time.

    The memory callback times everything it does per step (`overhead_s_total`); this callback sums
    the training steps' times from the same run, so the ratio needs no patching of either.
    """

    def __init__(self, memory: MemoryCallback) -> None:
        self.memory = memory
        self.step_s = 0.0
        self.steps = 0

    def on_step_end(self, step: int, metrics: dict) -> None:
        self.step_s += metrics["step_time_s"]
        self.steps += 1

    @property
    def overhead_fraction(self) -> float:
        """Monitor time per step / training step time (both summed over the same steps)."""
        if self.step_s <= 0.0:
            raise ValueError("MemoryOverheadMeter: no training step was timed yet")
        return self.memory.overhead_s_total / self.step_s

    def summary(self) -> dict:
        return {"steps": self.steps, "monitor_ms_per_step": 1000.0 * self.memory.overhead_s_total / max(self.steps, 1),
                "step_ms": 1000.0 * self.step_s / max(self.steps, 1), "overhead_fraction": self.overhead_fraction}


def leak_summary(estimate: Any) -> dict:
    """A LeakEstimate as the JSON the notebook and the soak benchmark write (None stays None)."""
    if estimate is None:
        return {"slope_mb_per_step": None}
    return {"metric": estimate.metric, "slope_mb_per_step": estimate.slope_mb_per_step, "low": estimate.low,
            "high": estimate.high, "confidence": estimate.confidence, "n": estimate.n,
            "warmup_steps": estimate.warmup_steps, "leaking": estimate.leaking,
            "threshold_mb_per_step": estimate.threshold_mb_per_step}


# --- figures ---------------------------------------------------------------------------


def plot_trace(rss_ax: Any, mlx_ax: Any, trace: pd.DataFrame, leak: Any = None) -> None:
    """RSS (with the leak fit) and MLX active / cache / peak at each optimizer step."""
    stepped = trace.dropna(subset=["step"])
    rss_ax.plot(stepped["step"], stepped["rss_mb"], lw=1.2, label="rss_mb")
    if leak is not None:
        fit_steps = np.array([stepped["step"].min() + leak.warmup_steps, stepped["step"].max()], dtype=float)
        rss_ax.plot(fit_steps, leak.intercept_mb + leak.slope_mb_per_step * fit_steps, "k--", lw=1,
                    label=f"Theil-Sen {leak.slope_mb_per_step:.3f} MB/step")
    rss_ax.set(xlabel="optimizer step", ylabel="MiB", title="process RSS")
    rss_ax.legend(fontsize=7)
    for key in TRACE_METRICS[1:]:
        mlx_ax.plot(stepped["step"], stepped[key], lw=1.2, label=key)
    mlx_ax.set(xlabel="optimizer step", ylabel="MiB", title="MLX allocator")
    mlx_ax.legend(fontsize=7)


def plot_sweep(ax: Any, sweep: pd.DataFrame) -> None:
    """Step peak memory against tokens per batch, one line per (seq_len, checkpointing)."""
    for (seq_len, ckpt), rows in sweep.groupby(["seq_len", "grad_checkpoint"]):
        rows = rows.sort_values("batch_size")
        ax.plot(rows["batch_size"], rows["step_peak_mb"], "o-" if ckpt else "s--", ms=4,
                label=f"seq {seq_len}, checkpointing {'on' if ckpt else 'off'}")
    ax.set(xlabel="batch size", ylabel="peak MiB above resident", title="one LoRA update's peak memory")
    ax.legend(fontsize=7)
