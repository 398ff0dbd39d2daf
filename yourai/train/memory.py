"""Memory monitor and leak-slope estimate for long training runs (the guard that acts on them: guard.py).

Why: MLX's buffer cache can grow while `mx.get_peak_memory()` stays flat (peak counts live
buffers only), so long LoRA runs on unified-memory machines creep until the machine freezes.
We sample what each probe sees (process RSS, MLX active / cache / peak, system available),
estimate the per-step growth robustly, and act on thresholds that are *fractions of the
machine's memory* (set per machine class in configs/hardware/), never absolute gigabytes.

Units: every `_mb` value is a mebibyte (2**20 bytes), the unit psutil and Activity Monitor use.

The guard (yourai.train.guard) acts on these samples; the monitor only records and estimates.
"""

from __future__ import annotations

import dataclasses
import math
import threading
import time
from dataclasses import dataclass
from typing import Any, Protocol, Sequence, runtime_checkable

import numpy as np
import psutil

from yourai.config import MemoryConfig
from yourai.stats import DEFAULT_CONFIDENCE, theil_sen

BYTES_PER_MB = 1024**2
SAMPLE_KEYS = (
    "rss_mb",
    "mlx_active_mb",
    "mlx_cache_mb",
    "mlx_peak_mb",
    "system_available_mb",
    "system_total_mb",
)

# Theil-Sen costs O(n^2) pairs: 200 points -> ~20k slopes, about a millisecond in numpy.
# Evenly spaced subsampling keeps the estimate robust while bounding that cost on long runs.
LEAK_MAX_POINTS = 200
# Below this many post-warm-up steps a slope interval is too wide to mean anything.
LEAK_MIN_POINTS = 10
LEAK_CONFIDENCE = DEFAULT_CONFIDENCE
# The callback refreshes the cached leak estimate this often (metrics() is called every step).
LEAK_UPDATE_EVERY_STEPS = 25


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
