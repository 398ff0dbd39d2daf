"""The memory guard: turns the monitor's latest sample into an action, and the callback that runs both in training.

Guard escalation (one `MemoryGuard.check` per optimizer step), with
used fraction u = 1 - system_available / system_total:

    u <  clear_cache_fraction             -> none
    u >= clear_cache_fraction             -> clear the MLX cache, re-sample
    u <  pause_fraction (after clearing)  -> clear_cache
    u >= abort_fraction                   -> abort (the trainer saves a checkpoint and stops)
    u >= shrink_fraction, batch > 1       -> shrink (batch // 2, accumulation raised)
    otherwise                             -> pause with bounded exponential back-off;
                                             recovered -> pause; else shrink, or abort at batch 1

The guard uses the *system* used fraction, not RSS / total: on unified memory the machine
freezes when all processes together exhaust it, and on macOS Metal buffers are not fully
counted in a process's RSS. The process share (RSS / total) is reported in every event and
message so a user can tell pressure from this run apart from pressure from other programs.
"""

from __future__ import annotations

import dataclasses
import gc
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from yourai.config import MemoryConfig
from yourai.train.callbacks import Control, TrainingAbort, TrainingCallback
from yourai.train.memory import (LEAK_CONFIDENCE, LEAK_UPDATE_EVERY_STEPS, SAMPLE_KEYS, LeakEstimate, MemoryMonitor,
                                 MemorySample, MemorySource, apply_cache_limit, process_fraction, used_fraction)

ACTIONS = ("none", "clear_cache", "pause", "shrink", "abort")
# Pause back-off: first wait, doubling up to the cap, all bounded by MemoryConfig.max_pause_s.
PAUSE_FIRST_INTERVAL_S = 0.25
PAUSE_MAX_INTERVAL_S = 8.0


@dataclass(frozen=True)
class GuardDecision:
    """What the trainer must do after this step; `events` go to metrics.jsonl verbatim."""

    action: str
    batch_size: int
    grad_accumulation: int
    message: str = ""
    events: list[dict] = field(default_factory=list)
    used_fraction: float | None = None


class MemoryAbort(TrainingAbort):
    """Raised by the trainer (after saving a checkpoint) when the guard says abort."""

    def __init__(self, decision: GuardDecision) -> None:
        super().__init__(decision.message)
        self.decision = decision


def validate_thresholds(config: MemoryConfig) -> None:
    """The escalation only makes sense when the fractions rise in order."""
    names = ("clear_cache_fraction", "pause_fraction", "shrink_fraction", "abort_fraction")
    values = [getattr(config, name) for name in names]
    for (low_name, low), (high_name, high) in zip(zip(names, values), zip(names[1:], values[1:])):
        if low > high:
            raise ValueError(f"memory.{low_name} ({low}) must not exceed memory.{high_name} ({high})")


def shrink_batch(batch_size: int, grad_accumulation: int) -> tuple[int, int]:
    """Halve the batch (min 1) and raise accumulation so the effective batch never shrinks.

    Even batches keep batch x accumulation exactly (accumulation doubles). For an odd batch
    b the new accumulation is ceil(b * accumulation / (b // 2)), so the effective batch grows by
    less than one new batch (3 x 1 -> 1 x 3 keeps 3; 5 x 1 -> 2 x 3 gives 6): the optimizer never
    sees fewer samples per update than the run was configured for.
    """
    if batch_size < 1 or grad_accumulation < 1:
        raise ValueError(f"shrink_batch: batch_size and grad_accumulation must be >= 1, got {batch_size}, {grad_accumulation}")
    new_batch = max(1, batch_size // 2)
    return new_batch, math.ceil(batch_size * grad_accumulation / new_batch)


def _pct(fraction: float) -> str:
    return f"{100.0 * fraction:.1f} %"


class MemoryGuard:
    """Turns the latest sample into an action: clear cache, pause, shrink, or abort."""

    def __init__(self, monitor: MemoryMonitor, config: MemoryConfig, sleep: Callable[[float], None] = time.sleep) -> None:
        validate_thresholds(config)
        self.monitor = monitor
        self.config = config
        self._sleep = sleep
        self._last_shrink_step: int | None = None

    def check(self, step: int, batch_size: int, grad_accumulation: int, sample: MemorySample | None = None) -> GuardDecision:
        """Decide after optimizer step `step`; pausing happens inside this call."""
        sample = sample if sample is not None else self.monitor.record(step)
        events: list[dict] = []
        used = used_fraction(sample)
        if used < self.config.clear_cache_fraction:
            return GuardDecision("none", batch_size, grad_accumulation, used_fraction=used)
        sample, used = self._clear_cache(step, sample, events)
        if used < self.config.pause_fraction:
            action = "clear_cache" if events else "none"
            return GuardDecision(action, batch_size, grad_accumulation, self._summary(events), events, used)
        if used >= self.config.abort_fraction:
            return self._abort(step, sample, batch_size, grad_accumulation, events, waited_s=0.0)
        if used >= self.config.shrink_fraction and batch_size > 1 and not self._cooling_down(step):
            return self._shrink(step, sample, batch_size, grad_accumulation, events)
        sample, used, waited_s = self._pause(step, sample, events)
        if used < self.config.pause_fraction:
            message = f"paused {waited_s:.2f} s at step {step} until memory fell to {_pct(used)}"
            return GuardDecision("pause", batch_size, grad_accumulation, message, events, used)
        if used >= self.config.abort_fraction or batch_size == 1:
            return self._abort(step, sample, batch_size, grad_accumulation, events, waited_s)
        return self._shrink(step, sample, batch_size, grad_accumulation, events)

    def _cooling_down(self, step: int) -> bool:
        """Right after a shrink, memory has not shown the smaller batch yet: wait, don't halve twice."""
        last = self._last_shrink_step
        return last is not None and step - last <= self.config.shrink_cooldown_steps

    def _event(self, name: str, step: int, sample: MemorySample, **extra: Any) -> dict:
        return {
            "event": name,
            "step": step,
            "used_fraction": round(used_fraction(sample), 4),
            "process_fraction": round(process_fraction(sample), 4),
            "system_available_mb": round(sample.system_available_mb, 1),
            **extra,
        }

    def _summary(self, events: list[dict]) -> str:
        return "; ".join(f"{e['event']} at {_pct(e['used_fraction'])}" for e in events)

    def _clear_cache(self, step: int, sample: MemorySample, events: list[dict]) -> tuple[MemorySample, float]:
        """Cheapest remedy first: hand MLX's cached buffers back, then look again."""
        if sample.mlx_cache_mb <= 0.0:
            return sample, used_fraction(sample)
        self.monitor.source.clear_cache()
        after = self.monitor.record(None)
        events.append(
            self._event(
                "memory_clear_cache",
                step,
                sample,
                cache_mb=round(sample.mlx_cache_mb, 1),
                used_fraction_after=round(used_fraction(after), 4),
                threshold=self.config.clear_cache_fraction,
            )
        )
        return after, used_fraction(after)

    def _pause(self, step: int, sample: MemorySample, events: list[dict]) -> tuple[MemorySample, float, float]:
        """Wait with doubling intervals, re-sampling, until below pause_fraction or max_pause_s."""
        limit_s, target = self.config.max_pause_s, self.config.pause_fraction
        events.append(self._event("memory_pause", step, sample, threshold=target, max_pause_s=limit_s))
        gc.collect()  # drop Python garbage that may still hold MLX buffers
        self.monitor.source.clear_cache()
        waited_s, interval_s, used = 0.0, PAUSE_FIRST_INTERVAL_S, used_fraction(sample)
        while waited_s < limit_s:
            delay_s = min(interval_s, limit_s - waited_s)
            self._sleep(delay_s)
            waited_s += delay_s
            sample = self.monitor.record(None)
            used = used_fraction(sample)
            if used < target:
                events.append(self._event("memory_resume", step, sample, waited_s=round(waited_s, 3)))
                return sample, used, waited_s
            interval_s = min(2.0 * interval_s, PAUSE_MAX_INTERVAL_S)
        events.append(self._event("memory_pause_timeout", step, sample, waited_s=round(waited_s, 3)))
        return sample, used, waited_s

    def _shrink(self, step: int, sample: MemorySample, batch_size: int, grad_accumulation: int, events: list[dict]) -> GuardDecision:
        new_batch, new_accumulation = shrink_batch(batch_size, grad_accumulation)
        self._last_shrink_step = step
        events.append(
            self._event(
                "memory_shrink",
                step,
                sample,
                threshold=self.config.shrink_fraction,
                batch_size_before=batch_size,
                batch_size=new_batch,
                grad_accumulation_before=grad_accumulation,
                grad_accumulation=new_accumulation,
                effective_batch_before=batch_size * grad_accumulation,
                effective_batch=new_batch * new_accumulation,
            )
        )
        message = (
            f"memory at {_pct(used_fraction(sample))} at step {step}: batch {batch_size} -> {new_batch}, "
            f"gradient accumulation {grad_accumulation} -> {new_accumulation} "
            f"(effective batch {batch_size * grad_accumulation} -> {new_batch * new_accumulation})"
        )
        return GuardDecision("shrink", new_batch, new_accumulation, message, events, used_fraction(sample))

    def _abort(self, step: int, sample: MemorySample, batch_size: int, grad_accumulation: int, events: list[dict], waited_s: float) -> GuardDecision:
        leak = self.monitor.leak_estimate()
        message = abort_message(step, sample, self.config, batch_size, grad_accumulation, waited_s, leak)
        events.append(self._event("memory_abort", step, sample, threshold=self.config.abort_fraction, waited_s=round(waited_s, 3)))
        return GuardDecision("abort", batch_size, grad_accumulation, message, events, used_fraction(sample))


def abort_message(
    step: int,
    sample: MemorySample,
    config: MemoryConfig,
    batch_size: int,
    grad_accumulation: int,
    waited_s: float,
    leak: LeakEstimate | None,
) -> str:
    """Say what was seen (numbers) and what to change, so the user's next run fits."""
    used = used_fraction(sample)
    seen = (
        f"Memory guard stopped training at step {step}: {_pct(used)} of {sample.system_total_mb:,.0f} MB in use "
        f"(available {sample.system_available_mb:,.0f} MB; this process RSS {sample.rss_mb:,.0f} MB = "
        f"{_pct(process_fraction(sample))}; MLX active {sample.mlx_active_mb:,.0f} MB, cache "
        f"{sample.mlx_cache_mb:,.0f} MB, peak {sample.mlx_peak_mb:,.0f} MB) with batch {batch_size} x "
        f"accumulation {grad_accumulation}, after clearing the cache and pausing {waited_s:.1f} s "
        f"(pause at {_pct(config.pause_fraction)}, abort at {_pct(config.abort_fraction)})."
    )
    if leak is not None:
        seen += (
            f" Memory grew {leak.slope_mb_per_step:.3f} MB/step ({LEAK_CONFIDENCE:.0%} interval "
            f"{leak.low:.3f}..{leak.high:.3f}) after a {leak.warmup_steps}-step warm-up"
            + (" - above the leak threshold." if leak.leaking else ".")
        )
    advice = (
        " To fit: lower train.batch_size (raise train.grad_accumulation to keep the effective batch), "
        "set train.grad_checkpoint=true, lower train.max_seq_length, train fewer LoRA layers "
        "(train.lora.num_layers), choose a smaller model, or pick the hardware profile for a smaller "
        "machine (run.hardware_profile)."
    )
    if process_fraction(sample) < 0.5 * used:
        advice += " Most of the memory in use is held by other programs: close them and resume from the checkpoint."
    return seen + advice


class MemoryCallback(TrainingCallback):
    """Monitor + guard as a training callback: records a sample per step, guards, reports the leak slope.

    Pass one to `Trainer(callbacks=[...])` to choose its source or settings (a scripted source for
    tests, a different config); without one the Trainer adds `MemoryCallback.from_config(config.memory)`.
    Everything it does per step is timed into `overhead_s_total`, so its cost can be reported.
    """

    def __init__(self, monitor: MemoryMonitor, guard: MemoryGuard | None = None,
                 leak_every_steps: int = LEAK_UPDATE_EVERY_STEPS, start_timer: bool = True) -> None:
        if leak_every_steps < 1:
            raise ValueError(f"MemoryCallback: leak_every_steps must be >= 1, got {leak_every_steps}")
        self.monitor = monitor
        self.guard = guard
        self.leak_every_steps = leak_every_steps
        self.start_timer = start_timer
        self.leak: LeakEstimate | None = None
        self.overhead_s_total = 0.0
        self.last_overhead_ms = 0.0
        self._steps_seen = 0
        self._last_step_sample: MemorySample | None = None

    @classmethod
    def from_config(cls, config: MemoryConfig, source: MemorySource | None = None) -> "MemoryCallback":
        """Monitor and guard on `source` (default: the real MLX + psutil probes, with the timer thread)."""
        monitor = MemoryMonitor(source, config)
        return cls(monitor, MemoryGuard(monitor, config), start_timer=source is None)

    def on_train_begin(self, info: dict) -> Control:
        """Wire the cache limit and (optionally) the timer; the cache-limit event is logged."""
        sample = self.monitor.record(None)
        event = apply_cache_limit(self.monitor.config, sample.system_total_mb, self._cache_limit_target())
        if self.start_timer:
            self.monitor.start_timer()
        return Control(events=[event])

    def _cache_limit_target(self) -> Any:
        source = self.monitor.source
        return source if hasattr(source, "set_cache_limit") else None

    def on_train_end(self, summary: dict) -> None:
        self.monitor.stop_timer()

    def on_step_end(self, step: int, metrics: dict) -> Control:
        """Guard after the update (`metrics` names the micro-batch size and count), add readings to `metrics`."""
        started = time.perf_counter()
        decision = self.check_step(step, metrics["micro_batch"], metrics["micro_batches"])
        metrics.update(self.metrics())
        self.overhead_s_total += time.perf_counter() - started
        control = Control(events=list(decision.events))
        if decision.action == "shrink":
            control.micro_batch = max(1, decision.batch_size)
        elif decision.action == "abort":
            control.abort = MemoryAbort(decision)
        return control

    def check_step(self, step: int, batch_size: int, grad_accumulation: int) -> GuardDecision:
        """Record, guard, refresh the leak estimate every few steps; the guard's decision."""
        started = time.perf_counter()
        sample = self.monitor.record(step)
        self._last_step_sample = sample
        if self.guard is not None and self.monitor.config.guard:
            decision = self.guard.check(step, batch_size, grad_accumulation, sample=sample)
        else:
            decision = GuardDecision("none", batch_size, grad_accumulation, used_fraction=used_fraction(sample))
        self._steps_seen += 1
        leak_events = self._refresh_leak(step) if self._steps_seen % self.leak_every_steps == 0 else []
        if leak_events:
            decision = dataclasses.replace(decision, events=decision.events + leak_events)
        self.last_overhead_ms = 1000.0 * (time.perf_counter() - started)
        return decision

    def _refresh_leak(self, step: int) -> list[dict]:
        """Recompute the cached estimate; log an event when the leak verdict changes."""
        was_leaking = self.leak is not None and self.leak.leaking
        self.leak = self.monitor.leak_estimate()
        if self.leak is None or self.leak.leaking == was_leaking:
            return []
        return [
            {
                "event": "memory_leak_suspected" if self.leak.leaking else "memory_leak_cleared",
                "step": step,
                "leak_slope_mb_per_step": round(self.leak.slope_mb_per_step, 4),
                "leak_slope_low": round(self.leak.low, 4),
                "leak_slope_high": round(self.leak.high, 4),
                "threshold_mb_per_step": self.leak.threshold_mb_per_step,
            }
        ]

    def metrics(self) -> dict[str, float]:
        """Numbers merged into each metrics.jsonl line (the leak slope once it is estimable)."""
        sample = self._last_step_sample
        if sample is None:
            return {}
        metrics = {key: round(getattr(sample, key), 2) for key in SAMPLE_KEYS if key != "system_total_mb"}
        metrics["memory_used_fraction"] = round(used_fraction(sample), 4)
        metrics["memory_monitor_ms"] = round(self.last_overhead_ms, 4)
        if self.leak is not None:
            metrics["leak_slope_mb_per_step"] = round(self.leak.slope_mb_per_step, 4)
            metrics["leak_slope_low"] = round(self.leak.low, 4)
            metrics["leak_slope_high"] = round(self.leak.high, 4)
        return metrics
