"""Memory monitor, leak-slope estimate and guard for long training runs.

Why: MLX's buffer cache can grow while `mx.get_peak_memory()` stays flat (peak counts live
buffers only), so long LoRA runs on unified-memory machines creep until the machine freezes.
We sample what each probe sees (process RSS, MLX active / cache / peak, system available),
estimate the per-step growth robustly, and act on thresholds that are *fractions of the
machine's memory* (set per machine class in configs/hardware/), never absolute gigabytes.

Units: every `_mb` value is a mebibyte (2**20 bytes), the unit psutil and Activity Monitor use.

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
import threading
import time
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any, Callable, Protocol, Sequence, runtime_checkable

import numpy as np
import psutil

from yourai.config import MemoryConfig

BYTES_PER_MB = 1024**2
SAMPLE_KEYS = (
    "rss_mb",
    "mlx_active_mb",
    "mlx_cache_mb",
    "mlx_peak_mb",
    "system_available_mb",
    "system_total_mb",
)
ACTIONS = ("none", "clear_cache", "pause", "shrink", "abort")

# Theil-Sen costs O(n^2) pairs: 200 points -> ~20k slopes, about a millisecond in numpy.
# Evenly spaced subsampling keeps the estimate robust while bounding that cost on long runs.
LEAK_MAX_POINTS = 200
# Below this many post-warm-up steps a slope interval is too wide to mean anything.
LEAK_MIN_POINTS = 10
LEAK_CONFIDENCE = 0.95
# The callback refreshes the cached leak estimate this often (metrics() is called every step).
LEAK_UPDATE_EVERY_STEPS = 25
# Pause back-off: first wait, doubling up to the cap, all bounded by MemoryConfig.max_pause_s.
PAUSE_FIRST_INTERVAL_S = 0.25
PAUSE_MAX_INTERVAL_S = 8.0


# --- samples and sources -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MemorySample:
    """One reading of every probe; `step` is None for timer and pause samples."""

    step: int | None
    time_s: float  # seconds since the monitor was created (monotonic clock)
    rss_mb: float
    mlx_active_mb: float
    mlx_cache_mb: float
    mlx_peak_mb: float
    system_available_mb: float
    system_total_mb: float


def used_fraction(sample: MemorySample) -> float:
    """Share of the machine's memory in use by everything (what freezes a unified-memory Mac)."""
    return 1.0 - sample.system_available_mb / sample.system_total_mb


def process_fraction(sample: MemorySample) -> float:
    """Share of the machine's memory held by this process (tells our pressure from others')."""
    return sample.rss_mb / sample.system_total_mb


@runtime_checkable
class MemorySource(Protocol):
    """Where readings come from: MLX + psutil for real runs, a script for tests."""

    def sample(self) -> dict[str, float]: ...

    def clear_cache(self) -> None: ...


class MlxMemorySource:
    """Real readings: psutil (RSS, system) and MLX's allocator counters."""

    def __init__(self) -> None:
        import mlx.core as mx

        self._mx = mx
        self._process = psutil.Process()  # reused: creating one per sample costs more than reading

    def sample(self) -> dict[str, float]:
        """Read every probe once (~35 microseconds on Linux)."""
        memory = psutil.virtual_memory()
        mx = self._mx
        return {
            "rss_mb": self._process.memory_info().rss / BYTES_PER_MB,
            "mlx_active_mb": mx.get_active_memory() / BYTES_PER_MB,
            "mlx_cache_mb": mx.get_cache_memory() / BYTES_PER_MB,
            "mlx_peak_mb": mx.get_peak_memory() / BYTES_PER_MB,
            "system_available_mb": memory.available / BYTES_PER_MB,
            "system_total_mb": memory.total / BYTES_PER_MB,
        }

    def clear_cache(self) -> None:
        self._mx.clear_cache()

    def set_cache_limit(self, limit_mb: float) -> float:
        """Cap MLX's buffer cache (MLX frees beyond it by itself); returns the previous cap."""
        return self._mx.set_cache_limit(int(limit_mb * BYTES_PER_MB)) / BYTES_PER_MB


class SimulatedMemorySource:
    """A deterministic machine for tests and the notebook: one tick per `sample()` call.

    rss = base_rss + active + cache + leak_per_tick * tick + noise;
    available = total - rss - other_used (other programs, scripted per tick, last value held).
    The attributes are public so a scenario can change them between steps (e.g. active memory
    proportional to the batch size).
    """

    def __init__(
        self,
        total_mb: float = 16384.0,
        base_rss_mb: float = 400.0,
        active_mb: float = 200.0,
        leak_mb_per_tick: float = 0.0,
        cache_growth_mb_per_tick: float = 0.0,
        noise_mb: float = 0.0,
        other_used_mb: float | Sequence[float] = 0.0,
        seed: int = 0,
    ) -> None:
        self.total_mb = total_mb
        self.base_rss_mb = base_rss_mb
        self.active_mb = active_mb
        self.leak_mb_per_tick = leak_mb_per_tick
        self.cache_growth_mb_per_tick = cache_growth_mb_per_tick
        self.noise_mb = noise_mb
        self.other_used_mb = [other_used_mb] if isinstance(other_used_mb, (int, float)) else list(other_used_mb)
        if not self.other_used_mb:
            raise ValueError("SimulatedMemorySource: other_used_mb must hold at least one value")
        self.cache_mb = 0.0
        self.cache_limit_mb: float | None = None
        self.peak_mb = 0.0
        self.tick = 0
        self.clear_count = 0
        self._rng = np.random.default_rng(seed)

    def _other_used(self) -> float:
        return float(self.other_used_mb[min(self.tick, len(self.other_used_mb) - 1)])

    def sample(self) -> dict[str, float]:
        """Advance one tick and report it."""
        self.cache_mb += self.cache_growth_mb_per_tick
        if self.cache_limit_mb is not None:
            self.cache_mb = min(self.cache_mb, self.cache_limit_mb)
        noise = float(self._rng.normal(0.0, self.noise_mb)) if self.noise_mb > 0 else 0.0
        rss = self.base_rss_mb + self.active_mb + self.cache_mb + self.leak_mb_per_tick * self.tick + noise
        self.peak_mb = max(self.peak_mb, self.active_mb)
        reading = {
            "rss_mb": rss,
            "mlx_active_mb": self.active_mb,
            "mlx_cache_mb": self.cache_mb,
            "mlx_peak_mb": self.peak_mb,
            "system_available_mb": max(self.total_mb - rss - self._other_used(), 0.0),
            "system_total_mb": self.total_mb,
        }
        self.tick += 1
        return reading

    def clear_cache(self) -> None:
        self.cache_mb = 0.0
        self.clear_count += 1

    def set_cache_limit(self, limit_mb: float) -> float:
        previous = self.cache_limit_mb if self.cache_limit_mb is not None else math.inf
        self.cache_limit_mb = limit_mb
        return previous


def apply_cache_limit(config: MemoryConfig, total_mb: float, source: Any = None) -> dict:
    """Wire the cache-limit policy: cap MLX's cache at cache_limit_fraction of the machine.

    A cap only tightens: where MLX's own limit is already lower (the CPU backend keeps a small
    cache by default) that limit stays. Returns the event to log. `source` defaults to the real
    MLX allocator; any object with `set_cache_limit(limit_mb) -> previous_mb` works.
    """
    target = source if source is not None else MlxMemorySource()
    limit_mb = config.cache_limit_fraction * total_mb
    previous_mb = target.set_cache_limit(limit_mb)
    if previous_mb < limit_mb:
        limit_mb = previous_mb
        target.set_cache_limit(limit_mb)
    return {
        "event": "memory_cache_limit",
        "limit_mb": round(limit_mb, 1),
        "previous_limit_mb": round(previous_mb, 1) if math.isfinite(previous_mb) else None,
        "cache_limit_fraction": config.cache_limit_fraction,
    }


# --- leak slope ----------------------------------------------------------------------


def _tie_groups(values: np.ndarray) -> np.ndarray:
    """Sizes of the groups of equal values (RSS is page-quantised, so flat traces tie a lot)."""
    _, counts = np.unique(values, return_counts=True)
    return counts[counts > 1].astype(float)


def kendall_s_variance(x: np.ndarray, y: np.ndarray) -> float:
    """Null variance of Kendall's S with ties in x and y (Kendall 1970, eq. 4.3)."""
    n = float(x.size)
    tx, ty = _tie_groups(x), _tie_groups(y)
    base = n * (n - 1) * (2 * n + 5)
    base -= np.sum(tx * (tx - 1) * (2 * tx + 5)) + np.sum(ty * (ty - 1) * (2 * ty + 5))
    variance = base / 18.0
    if n > 2:
        variance += np.sum(tx * (tx - 1) * (tx - 2)) * np.sum(ty * (ty - 1) * (ty - 2)) / (9 * n * (n - 1) * (n - 2))
    variance += np.sum(tx * (tx - 1)) * np.sum(ty * (ty - 1)) / (2 * n * (n - 1))
    return float(max(variance, 0.0))


def theil_sen(x: Sequence[float], y: Sequence[float], confidence: float = LEAK_CONFIDENCE) -> tuple[float, float, float, float]:
    """Median of pairwise slopes with Sen's (1968) rank-based interval; robust to spikes.

    Returns (slope, low, high, intercept). The interval takes the ordered pairwise slopes at
    ranks (N -/+ z * sqrt(Var S)) / 2, where N is the number of slopes and S Kendall's statistic.
    """
    x_arr, y_arr = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if x_arr.ndim != 1 or x_arr.shape != y_arr.shape:
        raise ValueError(f"theil_sen: x and y must be 1-D of equal length, got {x_arr.shape} and {y_arr.shape}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"theil_sen: confidence must be in (0, 1), got {confidence}")
    first, second = np.triu_indices(x_arr.size, k=1)
    dx = x_arr[second] - x_arr[first]
    distinct = dx != 0
    if not distinct.any():
        raise ValueError("theil_sen: need at least two distinct x values")
    slopes = np.sort((y_arr[second] - y_arr[first])[distinct] / dx[distinct])
    slope = float(np.median(slopes))
    z = NormalDist().inv_cdf(0.5 + confidence / 2.0)
    half_width_ranks = z * math.sqrt(kendall_s_variance(x_arr, y_arr))
    count = slopes.size
    lower_rank = int(round((count - half_width_ranks) / 2.0))  # 1-based rank of the lower limit
    upper_rank = int(round((count + half_width_ranks) / 2.0)) + 1  # 1-based rank of the upper limit
    low = float(slopes[min(max(lower_rank, 1), count) - 1])
    high = float(slopes[min(max(upper_rank, 1), count) - 1])
    intercept = float(np.median(y_arr - slope * x_arr))
    return slope, low, high, intercept


@dataclass(frozen=True)
class LeakEstimate:
    """Growth per optimizer step after warm-up, with its interval and the verdict."""

    slope_mb_per_step: float
    low: float
    high: float
    n: int  # points used in the fit (after warm-up and subsampling)
    warmup_steps: int
    metric: str
    intercept_mb: float = 0.0
    confidence: float = LEAK_CONFIDENCE
    threshold_mb_per_step: float = 1.0
    leaking: bool = False  # slope above threshold AND interval excludes zero growth


def _even_subsample(count: int, limit: int) -> np.ndarray:
    """Indices of at most `limit` evenly spaced points, always keeping the first and last."""
    if count <= limit:
        return np.arange(count)
    return np.unique(np.linspace(0, count - 1, limit).round().astype(int))


# --- monitor -------------------------------------------------------------------------


class MemoryMonitor:
    """Records samples per step (and on an optional timer) into a trace pandas can read."""

    def __init__(self, source: MemorySource | None = None, config: MemoryConfig | None = None) -> None:
        self.source = source if source is not None else MlxMemorySource()
        self.config = config if config is not None else MemoryConfig()
        self.trace: list[MemorySample] = []
        self._stepped: list[MemorySample] = []  # step samples only, so leak fits skip timer samples cheaply
        self._steps: list[int] = []
        self.record_seconds_total = 0.0  # measured cost of record(), for overhead reports
        self.record_count = 0
        self._t0 = time.monotonic()
        self._lock = threading.Lock()
        self._timer: threading.Thread | None = None
        self._timer_stop = threading.Event()
        self.timer_error: BaseException | None = None

    def record(self, step: int | None) -> MemorySample:
        """Sample every probe now; the trainer calls this after each optimizer step."""
        started = time.perf_counter()
        time_s = time.monotonic() - self._t0
        reading = self.source.sample()
        missing = [key for key in SAMPLE_KEYS if key not in reading]
        if missing:
            raise ValueError(f"{type(self.source).__name__}.sample() did not report {missing}")
        sample = MemorySample(step, time_s, *(float(reading[key]) for key in SAMPLE_KEYS))
        with self._lock:
            self.trace.append(sample)
            if step is not None:
                self._stepped.append(sample)
                self._steps.append(step)
            self.record_seconds_total += time.perf_counter() - started
            self.record_count += 1
        return sample

    @property
    def latest(self) -> MemorySample | None:
        return self.trace[-1] if self.trace else None

    def start_timer(self, interval_s: float | None = None) -> None:
        """Sample every `interval_s` in a daemon thread (sees memory between and during steps)."""
        interval_s = self.config.sample_interval_s if interval_s is None else interval_s
        if interval_s <= 0:
            raise ValueError(f"start_timer: interval_s must be > 0, got {interval_s}")
        if self._timer is not None:
            raise RuntimeError("start_timer: the timer is already running; call stop_timer() first")
        self._timer_stop.clear()
        self._timer = threading.Thread(target=self._timer_loop, args=(interval_s,), name="memory-monitor", daemon=True)
        self._timer.start()

    def _timer_loop(self, interval_s: float) -> None:
        while not self._timer_stop.wait(interval_s):
            try:
                self.record(None)
            except BaseException as err:  # kept and re-raised by stop_timer(), never swallowed
                self.timer_error = err
                return

    def stop_timer(self) -> None:
        """Stop the timer thread; re-raise anything it failed with."""
        if self._timer is not None:
            self._timer_stop.set()
            self._timer.join()
            self._timer = None
        if self.timer_error is not None:
            error, self.timer_error = self.timer_error, None
            raise RuntimeError("memory monitor timer failed") from error

    def to_frame(self) -> Any:
        """The trace as a DataFrame (step is a nullable integer: timer samples have none)."""
        import pandas as pd

        with self._lock:
            rows = [dataclasses.asdict(sample) for sample in self.trace]
        frame = pd.DataFrame(rows, columns=[f.name for f in dataclasses.fields(MemorySample)])
        frame["step"] = frame["step"].astype("Int64")
        return frame

    def leak_estimate(self, metric: str = "rss_mb") -> LeakEstimate | None:
        """Theil-Sen slope of `metric` per step after warm-up; None until enough steps exist."""
        if metric not in SAMPLE_KEYS:
            raise ValueError(f"leak_estimate: metric must be one of {SAMPLE_KEYS}, got {metric!r}")
        with self._lock:
            steps, stepped = np.asarray(self._steps, dtype=float), list(self._stepped)
        if steps.size == 0:
            return None
        warmup = self.config.leak_warmup_steps
        kept = np.flatnonzero(steps >= steps.min() + warmup)
        if np.unique(steps[kept]).size < LEAK_MIN_POINTS:
            return None
        chosen = kept[_even_subsample(kept.size, LEAK_MAX_POINTS)]
        values = np.array([getattr(stepped[index], metric) for index in chosen])
        slope, low, high, intercept = theil_sen(steps[chosen], values)
        threshold = self.config.leak_threshold_mb_per_step
        return LeakEstimate(
            slope_mb_per_step=slope,
            low=low,
            high=high,
            n=int(chosen.size),
            warmup_steps=warmup,
            metric=metric,
            intercept_mb=intercept,
            threshold_mb_per_step=threshold,
            leaking=slope > threshold and low > 0.0,
        )


# --- guard ---------------------------------------------------------------------------


@dataclass(frozen=True)
class GuardDecision:
    """What the trainer must do after this step; `events` go to metrics.jsonl verbatim."""

    action: str
    batch_size: int
    grad_accumulation: int
    message: str = ""
    events: list[dict] = field(default_factory=list)
    used_fraction: float | None = None


class MemoryAbort(RuntimeError):
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


# --- trainer callback ----------------------------------------------------------------


class MemoryCallback:
    """Monitor + guard behind the two calls the trainer makes each step."""

    def __init__(self, monitor: MemoryMonitor, guard: MemoryGuard | None = None, leak_every_steps: int = LEAK_UPDATE_EVERY_STEPS) -> None:
        if leak_every_steps < 1:
            raise ValueError(f"MemoryCallback: leak_every_steps must be >= 1, got {leak_every_steps}")
        self.monitor = monitor
        self.guard = guard
        self.leak_every_steps = leak_every_steps
        self.leak: LeakEstimate | None = None
        self.overhead_s_total = 0.0
        self.last_overhead_ms = 0.0
        self._steps_seen = 0
        self._last_step_sample: MemorySample | None = None

    def on_train_begin(self, start_timer: bool = True) -> list[dict]:
        """Wire the cache limit and (optionally) the timer; returns the events to log."""
        sample = self.monitor.record(None)
        events = [apply_cache_limit(self.monitor.config, sample.system_total_mb, self._cache_limit_target())]
        if start_timer:
            self.monitor.start_timer()
        return events

    def _cache_limit_target(self) -> Any:
        source = self.monitor.source
        return source if hasattr(source, "set_cache_limit") else None

    def on_train_end(self) -> None:
        self.monitor.stop_timer()

    def on_step_end(self, step: int, batch_size: int, grad_accumulation: int) -> GuardDecision:
        """Record, guard, refresh the leak estimate every few steps; all timed as overhead."""
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
        elapsed_s = time.perf_counter() - started
        self.overhead_s_total += elapsed_s
        self.last_overhead_ms = 1000.0 * elapsed_s
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
