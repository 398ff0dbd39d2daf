"""Memory monitor and leak slope: simulated sources for the logic, MLX for the probes (the guard: test_guard.py)."""

from __future__ import annotations

import dataclasses
import time

import pytest

from memory_scenarios import TOTAL_MB, _wait_for

from yourai.config import MemoryConfig
from yourai.train.memory import (BYTES_PER_MB, MemoryMonitor, MemorySample, MemorySource, MlxMemorySource,
                                 SimulatedMemorySource, apply_cache_limit, used_fraction)


# --- monitor -------------------------------------------------------------------------


def test_simulated_source_satisfies_the_protocol():
    assert isinstance(SimulatedMemorySource(), MemorySource)
    assert isinstance(MlxMemorySource(), MemorySource)


def test_monitor_flags_a_leak_with_known_slope():
    source = SimulatedMemorySource(leak_mb_per_tick=2.0, noise_mb=3.0, seed=5)
    monitor = MemoryMonitor(source, MemoryConfig(leak_warmup_steps=10, leak_threshold_mb_per_step=1.0))
    for step in range(1, 81):
        monitor.record(step)
    estimate = monitor.leak_estimate()
    assert estimate.slope_mb_per_step == pytest.approx(2.0, abs=0.15)
    assert estimate.low < 2.0 < estimate.high
    assert estimate.n == 70 and estimate.warmup_steps == 10
    assert estimate.leaking


def test_monitor_warmup_hides_cache_fill_and_flat_run_is_not_a_leak():
    source = SimulatedMemorySource(cache_growth_mb_per_tick=10.0, noise_mb=0.5, seed=6)
    source.set_cache_limit(200.0)  # cache fills over the first 20 steps, then stays flat
    monitor = MemoryMonitor(source, MemoryConfig(leak_warmup_steps=20))
    for step in range(100):
        monitor.record(step)
    estimate = monitor.leak_estimate()
    assert abs(estimate.slope_mb_per_step) < 0.05
    assert not estimate.leaking
    no_warmup = dataclasses.replace(monitor.config, leak_warmup_steps=0)
    monitor.config = no_warmup
    assert monitor.leak_estimate().high > estimate.high  # the fill inflates the estimate


def test_positive_slope_within_noise_is_not_called_a_leak():
    config = MemoryConfig(leak_warmup_steps=0, leak_threshold_mb_per_step=0.0)
    monitor = MemoryMonitor(SimulatedMemorySource(noise_mb=5.0, seed=3), config)
    for step in range(50):
        monitor.record(step)
    estimate = monitor.leak_estimate()
    assert estimate.slope_mb_per_step > config.leak_threshold_mb_per_step
    assert estimate.low < 0.0 and not estimate.leaking  # the interval still allows zero growth


def test_leak_estimate_waits_for_enough_steps_and_ignores_unstepped_samples():
    monitor = MemoryMonitor(SimulatedMemorySource(), MemoryConfig(leak_warmup_steps=5))
    for step in range(12):
        monitor.record(step)
        monitor.record(None)
    assert monitor.leak_estimate() is None  # 7 post-warm-up steps < the minimum
    for step in range(12, 20):
        monitor.record(step)
    assert monitor.leak_estimate().n == 15


def test_leak_estimate_rejects_unknown_metric():
    with pytest.raises(ValueError, match="metric must be one of"):
        MemoryMonitor(SimulatedMemorySource()).leak_estimate("gpu_mb")


def test_trace_frame_has_every_probe_and_nullable_steps():
    monitor = MemoryMonitor(SimulatedMemorySource(), MemoryConfig())
    monitor.record(1)
    monitor.record(None)
    frame = monitor.to_frame()
    assert list(frame.columns) == [f.name for f in dataclasses.fields(MemorySample)]
    assert str(frame["step"].dtype) == "Int64"
    assert frame["step"].isna().tolist() == [False, True]
    assert frame["time_s"].is_monotonic_increasing


def test_monitor_rejects_a_source_missing_a_probe():
    class Partial:
        def sample(self):
            return {"rss_mb": 1.0}

        def clear_cache(self):
            pass

    with pytest.raises(ValueError, match="did not report"):
        MemoryMonitor(Partial()).record(0)


def test_timer_samples_between_steps_with_no_step():
    monitor = MemoryMonitor(SimulatedMemorySource(), MemoryConfig())
    monitor.start_timer(0.01)
    _wait_for(lambda: len(monitor.trace) >= 3)
    monitor.stop_timer()
    count = len(monitor.trace)
    time.sleep(0.05)
    assert len(monitor.trace) == count
    assert all(sample.step is None for sample in monitor.trace)


def test_timer_failure_is_raised_on_stop():
    class Broken(SimulatedMemorySource):
        def sample(self):
            raise OSError("probe failed")

    monitor = MemoryMonitor(Broken(), MemoryConfig())
    monitor.start_timer(0.01)
    _wait_for(lambda: monitor.timer_error is not None)
    with pytest.raises(RuntimeError, match="timer failed"):
        monitor.stop_timer()


# --- cache limit, callback and the real MLX probes ----------------------------------


def test_cache_limit_caps_cache_growth_at_the_configured_fraction():
    source = SimulatedMemorySource(total_mb=TOTAL_MB, cache_growth_mb_per_tick=300.0)
    event = apply_cache_limit(MemoryConfig(cache_limit_fraction=0.05), TOTAL_MB, source)
    assert event == {"event": "memory_cache_limit", "limit_mb": 500.0, "previous_limit_mb": None, "cache_limit_fraction": 0.05}
    assert max(source.sample()["mlx_cache_mb"] for _ in range(10)) == 500.0


def test_cache_limit_never_loosens_a_tighter_existing_limit():
    source = SimulatedMemorySource(total_mb=TOTAL_MB)
    source.set_cache_limit(32.0)
    event = apply_cache_limit(MemoryConfig(cache_limit_fraction=0.25), TOTAL_MB, source)
    assert event["limit_mb"] == 32.0 and source.cache_limit_mb == 32.0


def test_real_cache_limit_is_applied_to_mlx_and_restorable():
    import mlx.core as mx

    previous_bytes = mx.set_cache_limit(1 << 40)  # loosen first so the policy has something to tighten
    try:
        event = apply_cache_limit(MemoryConfig(cache_limit_fraction=0.001), 100_000.0)
        assert event["limit_mb"] == 100.0
        assert mx.set_cache_limit(previous_bytes) == 100 * BYTES_PER_MB
    finally:
        mx.set_cache_limit(previous_bytes)


def test_mlx_source_sees_allocation_cache_and_clear():
    import mlx.core as mx

    source, size_mb = MlxMemorySource(), 64
    mx.reset_peak_memory()
    before = source.sample()
    assert 0 < before["system_available_mb"] <= before["system_total_mb"] and before["rss_mb"] > 0
    assert before["mlx_peak_mb"] < before["mlx_active_mb"] + size_mb / 2  # the reset took: the block is not in it
    block = mx.ones((size_mb * BYTES_PER_MB // 4,), dtype=mx.float32)
    mx.eval(block)
    held = source.sample()
    assert held["mlx_active_mb"] - before["mlx_active_mb"] == pytest.approx(size_mb, abs=1)
    assert held["mlx_peak_mb"] - before["mlx_peak_mb"] >= size_mb - 1  # the probe reads MLX's peak, which saw the block
    previous_limit_mb = source.set_cache_limit(4 * size_mb)  # the CPU backend's default cap is small
    try:
        del block
        assert source.sample()["mlx_cache_mb"] >= size_mb - 1  # freed buffers wait in MLX's cache
        source.clear_cache()
        assert source.sample()["mlx_cache_mb"] == 0
    finally:
        source.set_cache_limit(previous_limit_mb)


def test_mlx_leaking_loop_is_flagged_by_the_monitor():
    import mlx.core as mx

    monitor = MemoryMonitor(MlxMemorySource(), MemoryConfig(leak_warmup_steps=5, leak_threshold_mb_per_step=0.5))
    kept, leak_mb, recording_s = [], 1, 0.0
    for step in range(40):
        kept.append(mx.zeros((leak_mb * BYTES_PER_MB // 4,), dtype=mx.float32) + step)  # a history holding arrays
        mx.eval(kept[-1])
        started = time.perf_counter()
        monitor.record(step)
        recording_s += time.perf_counter() - started
    estimate = monitor.leak_estimate("mlx_active_mb")
    assert estimate.slope_mb_per_step == pytest.approx(leak_mb, abs=0.05) and estimate.leaking
    assert 0 < monitor.record_seconds_total <= recording_s  # what record() reports is the time spent inside it


def test_used_fraction_is_system_wide():
    sample = MemorySample(1, 0.0, 100.0, 0.0, 0.0, 0.0, 2500.0, 10_000.0)
    assert used_fraction(sample) == pytest.approx(0.75)
