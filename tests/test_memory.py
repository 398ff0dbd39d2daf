"""Memory monitor, leak slope and guard: simulated sources for the logic, MLX for the probes."""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from yourai.config import MemoryConfig
from yourai.memory import (
    ACTIONS,
    BYTES_PER_MB,
    PAUSE_FIRST_INTERVAL_S,
    PAUSE_MAX_INTERVAL_S,
    MemoryCallback,
    MemoryGuard,
    MemoryMonitor,
    MemorySample,
    MemorySource,
    MlxMemorySource,
    SimulatedMemorySource,
    apply_cache_limit,
    kendall_s_variance,
    shrink_batch,
    theil_sen,
    used_fraction,
)

TOTAL_MB = 10_000.0
# Defaults of MemoryConfig: clear 0.70, pause 0.80, shrink 0.85, abort 0.92.
CONFIG = MemoryConfig(max_pause_s=4.0, leak_warmup_steps=5)


class FakeSleep:
    """Records requested pauses instead of sleeping, so back-off is tested exactly and fast."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


def _source_at(used: float | list[float], cache_mb: float = 0.0) -> SimulatedMemorySource:
    """A machine whose used fraction (per tick) is scripted through other programs' usage."""
    base_rss_mb, active_mb = 1000.0, 500.0
    own_mb = base_rss_mb + active_mb + cache_mb
    script = [used] if isinstance(used, float) else used
    source = SimulatedMemorySource(
        total_mb=TOTAL_MB,
        base_rss_mb=base_rss_mb,
        active_mb=active_mb,
        other_used_mb=[u * TOTAL_MB - own_mb for u in script],
    )
    source.cache_mb = cache_mb
    return source


def _guard(source: SimulatedMemorySource, config: MemoryConfig = CONFIG) -> tuple[MemoryGuard, FakeSleep]:
    sleep = FakeSleep()
    return MemoryGuard(MemoryMonitor(source, config), config, sleep=sleep), sleep


def _names(decision) -> list[str]:
    return [event["event"] for event in decision.events]


# --- Theil-Sen -----------------------------------------------------------------------


def test_theil_sen_recovers_known_slope_under_noise():
    rng = np.random.default_rng(1)
    steps = np.arange(200, dtype=float)
    rss = 500.0 + 0.75 * steps + rng.normal(0.0, 4.0, steps.size)
    slope, low, high, intercept = theil_sen(steps, rss)
    assert slope == pytest.approx(0.75, abs=0.03)
    assert low < 0.75 < high
    assert high - low < 0.1
    assert intercept == pytest.approx(500.0, abs=3.0)


def test_theil_sen_ignores_spikes_that_pull_least_squares():
    rng = np.random.default_rng(2)
    steps = np.arange(150, dtype=float)
    rss = 800.0 + 0.2 * steps + rng.normal(0.0, 1.0, steps.size)
    rss[-15:] += 400.0  # a late burst (e.g. an eval pass) is not a per-step leak
    least_squares = np.polyfit(steps, rss, 1)[0]
    slope, low, high, _ = theil_sen(steps, rss)
    assert abs(least_squares - 0.2) > 0.5
    assert slope == pytest.approx(0.2, abs=0.05)


def test_theil_sen_interval_covers_true_slope_about_95_percent_of_the_time():
    true_slope, hits, trials = -0.3, 0, 300
    steps = np.arange(40, dtype=float)
    for seed in range(trials):
        rng = np.random.default_rng(seed)
        _, low, high, _ = theil_sen(steps, true_slope * steps + rng.normal(0.0, 2.0, steps.size))
        hits += low <= true_slope <= high
    assert 0.91 <= hits / trials <= 0.99


def test_theil_sen_flat_page_quantised_trace_has_zero_slope():
    rng = np.random.default_rng(3)
    page_mb = 4096 / BYTES_PER_MB
    rss = 900.0 + page_mb * rng.integers(0, 3, 100)  # RSS moves by whole pages, ties everywhere
    slope, low, high, _ = theil_sen(np.arange(100), rss)
    assert slope == 0.0
    assert low <= 0.0 <= high


def test_kendall_variance_without_ties_is_the_textbook_formula():
    n = 30
    x, y = np.arange(n, dtype=float), np.random.default_rng(4).permutation(n).astype(float)
    assert kendall_s_variance(x, y) == pytest.approx(n * (n - 1) * (2 * n + 5) / 18)


def test_kendall_variance_shrinks_with_ties():
    x = np.arange(20, dtype=float)
    tied = np.repeat(np.arange(5, dtype=float), 4)
    assert kendall_s_variance(x, tied) < kendall_s_variance(x, x)


@pytest.mark.parametrize(
    "x, y, match",
    [([1, 2, 3], [1, 2], "equal length"), ([2, 2, 2], [1, 2, 3], "distinct x")],
)
def test_theil_sen_rejects_bad_input(x, y, match):
    with pytest.raises(ValueError, match=match):
        theil_sen(x, y)


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


def _wait_for(predicate, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.005)


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


# --- guard ---------------------------------------------------------------------------


def test_guard_does_nothing_below_the_clear_threshold():
    guard, sleep = _guard(_source_at(0.5, cache_mb=300.0))
    decision = guard.check(3, 8, 1)
    assert (decision.action, decision.batch_size, decision.grad_accumulation, decision.events) == ("none", 8, 1, [])
    assert guard.monitor.source.clear_count == 0 and sleep.calls == []


def test_guard_clears_cache_and_continues_when_that_is_enough():
    source = _source_at(0.75, cache_mb=1000.0)  # 75 % with 10 % of the machine in MLX's cache
    guard, sleep = _guard(source)
    decision = guard.check(4, 8, 1)
    assert decision.action == "clear_cache"
    assert source.clear_count == 1 and sleep.calls == []
    (event,) = decision.events
    assert event["event"] == "memory_clear_cache" and event["step"] == 4
    assert event["cache_mb"] == 1000.0 and event["used_fraction_after"] == pytest.approx(0.65)


def test_guard_pauses_with_backoff_then_resumes():
    source = _source_at([0.82, 0.82, 0.82, 0.82, 0.60])  # other programs release memory later
    guard, sleep = _guard(source)
    decision = guard.check(7, 8, 2)
    assert decision.action == "pause"
    assert (decision.batch_size, decision.grad_accumulation) == (8, 2)
    assert _names(decision) == ["memory_pause", "memory_resume"]
    assert sleep.calls == [PAUSE_FIRST_INTERVAL_S * 2**k for k in range(4)]
    assert decision.events[-1]["waited_s"] == pytest.approx(sum(sleep.calls))
    assert decision.used_fraction == pytest.approx(0.60)


def test_pause_is_bounded_then_escalates_to_shrink():
    config = dataclasses.replace(CONFIG, max_pause_s=20.0)
    guard, sleep = _guard(_source_at(0.82), config)
    decision = guard.check(9, 8, 1)
    assert sum(sleep.calls) == pytest.approx(20.0)
    assert max(sleep.calls) <= PAUSE_MAX_INTERVAL_S
    assert _names(decision) == ["memory_pause", "memory_pause_timeout", "memory_shrink"]
    assert (decision.action, decision.batch_size, decision.grad_accumulation) == ("shrink", 4, 2)


def test_shrink_halves_batch_and_keeps_effective_batch():
    guard, sleep = _guard(_source_at(0.87))
    decision = guard.check(11, 8, 2)
    assert (decision.action, decision.batch_size, decision.grad_accumulation) == ("shrink", 4, 4)
    assert sleep.calls == []
    (event,) = decision.events
    assert event["effective_batch_before"] == event["effective_batch"] == 16
    assert "8 -> 4" in decision.message


def test_no_second_shrink_during_cooldown_pause_instead():
    source = _source_at([0.87, 0.87, 0.87, 0.70])
    guard, _ = _guard(source, dataclasses.replace(CONFIG, shrink_cooldown_steps=2))
    assert guard.check(20, 8, 1).action == "shrink"
    second = guard.check(21, 4, 2)
    assert (second.action, second.batch_size, second.grad_accumulation) == ("pause", 4, 2)


def test_guard_aborts_when_critical_with_numbers_and_advice():
    guard, sleep = _guard(_source_at(0.95, cache_mb=100.0))
    decision = guard.check(30, 4, 2)
    assert decision.action == "abort"
    assert (decision.batch_size, decision.grad_accumulation) == (4, 2)
    assert _names(decision) == ["memory_clear_cache", "memory_abort"]
    assert "step 30" in decision.message and "10,000 MB" in decision.message
    assert "94.0 %" in decision.message  # 95 % minus the 1 % of cache cleared
    for advice in ("train.batch_size", "train.grad_checkpoint", "train.lora.num_layers", "smaller model", "run.hardware_profile"):
        assert advice in decision.message
    assert "other programs" in decision.message  # this process holds 15 % of a 94 %-full machine


def test_guard_aborts_at_batch_one_when_pause_does_not_help():
    guard, sleep = _guard(_source_at(0.83))
    decision = guard.check(40, 1, 16)
    assert _names(decision) == ["memory_pause", "memory_pause_timeout", "memory_abort"]
    assert decision.action == "abort" and sum(sleep.calls) == pytest.approx(CONFIG.max_pause_s)
    assert "pausing 4.0 s" in decision.message


def test_abort_message_mentions_a_detected_leak():
    source = SimulatedMemorySource(total_mb=TOTAL_MB, leak_mb_per_tick=5.0)
    guard, _ = _guard(source)
    for step in range(30):
        guard.monitor.record(step)
    source.other_used_mb = [0.95 * TOTAL_MB]
    decision = guard.check(30, 2, 1)
    assert decision.action == "abort" and "MB/step" in decision.message and "leak threshold" in decision.message


def test_guard_rejects_thresholds_out_of_order():
    bad = dataclasses.replace(CONFIG, pause_fraction=0.9, shrink_fraction=0.85)
    with pytest.raises(ValueError, match="memory.pause_fraction .* memory.shrink_fraction"):
        MemoryGuard(MemoryMonitor(SimulatedMemorySource()), bad)


@pytest.mark.parametrize(
    "batch, accumulation, expected",
    [(8, 1, (4, 2)), (8, 2, (4, 4)), (3, 1, (1, 3)), (5, 1, (2, 3)), (1, 4, (1, 4))],
)
def test_shrink_batch_examples(batch, accumulation, expected):
    assert shrink_batch(batch, accumulation) == expected


@given(st.integers(1, 1024), st.integers(1, 64))
def test_shrink_never_lowers_the_effective_batch(batch, accumulation):
    new_batch, new_accumulation = shrink_batch(batch, accumulation)
    before, after = batch * accumulation, new_batch * new_accumulation
    assert 1 <= new_batch <= max(1, batch // 2)
    assert before <= after < before + new_batch
    if batch % 2 == 0:
        assert after == before and new_accumulation == 2 * accumulation


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


def test_callback_merges_metrics_logs_leak_once_and_measures_its_overhead():
    source = SimulatedMemorySource(total_mb=TOTAL_MB, leak_mb_per_tick=3.0, noise_mb=1.0)
    monitor = MemoryMonitor(source, MemoryConfig(leak_warmup_steps=5))
    callback = MemoryCallback(monitor, MemoryGuard(monitor, monitor.config, sleep=FakeSleep()), leak_every_steps=5)
    events = []
    for step in range(1, 41):
        decision = callback.on_step_end(step, 8, 1)
        assert decision.action in ACTIONS
        events += decision.events
    assert [e["event"] for e in events] == ["memory_leak_suspected"]
    metrics = callback.metrics()
    for key in ("rss_mb", "mlx_active_mb", "mlx_cache_mb", "mlx_peak_mb", "leak_slope_mb_per_step", "memory_monitor_ms"):
        assert key in metrics
    assert metrics["leak_slope_mb_per_step"] == pytest.approx(3.0, abs=0.2)
    assert callback.overhead_s_total > 0 and monitor.record_count == 40
    assert monitor.record_seconds_total <= callback.overhead_s_total


def test_callback_without_guard_only_observes():
    monitor = MemoryMonitor(_source_at(0.99), dataclasses.replace(CONFIG, guard=False))
    callback = MemoryCallback(monitor, MemoryGuard(monitor, monitor.config, sleep=FakeSleep()))
    decision = callback.on_step_end(1, 8, 1)
    assert (decision.action, decision.batch_size) == ("none", 8)
    assert callback.metrics()["memory_used_fraction"] == pytest.approx(0.99)


def test_callback_begin_applies_cache_limit_and_runs_timer():
    source = SimulatedMemorySource(total_mb=TOTAL_MB)
    callback = MemoryCallback(MemoryMonitor(source, MemoryConfig(sample_interval_s=0.01, cache_limit_fraction=0.1)))
    (event,) = callback.on_train_begin()
    assert event["limit_mb"] == 1000.0 and source.cache_limit_mb == 1000.0
    _wait_for(lambda: len(callback.monitor.trace) >= 3)
    callback.on_train_end()


def test_mlx_source_sees_allocation_cache_and_clear():
    import mlx.core as mx

    source, size_mb = MlxMemorySource(), 64
    before = source.sample()
    assert 0 < before["system_available_mb"] <= before["system_total_mb"] and before["rss_mb"] > 0
    block = mx.ones((size_mb * BYTES_PER_MB // 4,), dtype=mx.float32)
    mx.eval(block)
    held = source.sample()
    assert held["mlx_active_mb"] - before["mlx_active_mb"] == pytest.approx(size_mb, abs=1)
    assert held["mlx_peak_mb"] >= held["mlx_active_mb"]
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
    kept, leak_mb = [], 1
    for step in range(40):
        kept.append(mx.zeros((leak_mb * BYTES_PER_MB // 4,), dtype=mx.float32) + step)  # a history holding arrays
        mx.eval(kept[-1])
        monitor.record(step)
    estimate = monitor.leak_estimate("mlx_active_mb")
    assert estimate.slope_mb_per_step == pytest.approx(leak_mb, abs=0.05) and estimate.leaking
    assert monitor.record_seconds_total > 0


def test_used_fraction_is_system_wide():
    sample = MemorySample(1, 0.0, 100.0, 0.0, 0.0, 0.0, 2500.0, 10_000.0)
    assert used_fraction(sample) == pytest.approx(0.75)
