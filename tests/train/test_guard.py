"""The memory guard's escalation (clear, pause, shrink, abort) and the callback that runs it in training."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st
from memory_scenarios import CONFIG, TOTAL_MB, FakeSleep, _guard, _names, _source_at, _wait_for

from yourai.config import MemoryConfig
from yourai.train.guard import (PAUSE_FIRST_INTERVAL_S, PAUSE_MAX_INTERVAL_S, MemoryAbort, MemoryCallback, MemoryGuard,
                                shrink_batch)
from yourai.train.memory import MemoryMonitor, SimulatedMemorySource


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


def test_callback_merges_metrics_logs_leak_once_and_measures_its_overhead():
    source = SimulatedMemorySource(total_mb=TOTAL_MB, leak_mb_per_tick=3.0, noise_mb=1.0)
    monitor = MemoryMonitor(source, MemoryConfig(leak_warmup_steps=5))
    callback = MemoryCallback(monitor, MemoryGuard(monitor, monitor.config, sleep=FakeSleep()), leak_every_steps=5)
    events = []
    for step in range(1, 41):
        metrics = {"micro_batch": 8, "micro_batches": 1}
        control = callback.on_step_end(step, metrics)
        assert control.abort is None and control.micro_batch is None
        events += control.events
    assert [e["event"] for e in events] == ["memory_leak_suspected"]
    for key in ("rss_mb", "mlx_active_mb", "mlx_cache_mb", "mlx_peak_mb", "leak_slope_mb_per_step", "memory_monitor_ms"):
        assert key in metrics
    assert metrics["leak_slope_mb_per_step"] == pytest.approx(3.0, abs=0.2)
    assert callback.overhead_s_total > 0 and monitor.record_count == 40
    assert monitor.record_seconds_total <= callback.overhead_s_total


def test_callback_without_guard_only_observes():
    monitor = MemoryMonitor(_source_at(0.99), dataclasses.replace(CONFIG, guard=False))
    callback = MemoryCallback(monitor, MemoryGuard(monitor, monitor.config, sleep=FakeSleep()))
    metrics = {"micro_batch": 8, "micro_batches": 1}
    control = callback.on_step_end(1, metrics)
    assert (control.abort, control.micro_batch, control.events) == (None, None, [])
    assert metrics["memory_used_fraction"] == pytest.approx(0.99)


def test_callback_begin_applies_cache_limit_and_runs_timer():
    source = SimulatedMemorySource(total_mb=TOTAL_MB)
    callback = MemoryCallback(MemoryMonitor(source, MemoryConfig(sample_interval_s=0.01, cache_limit_fraction=0.1)))
    (event,) = callback.on_train_begin({}).events
    assert event["limit_mb"] == 1000.0 and source.cache_limit_mb == 1000.0
    _wait_for(lambda: len(callback.monitor.trace) >= 3)
    callback.on_train_end({"status": "ok"})


def test_callback_turns_shrink_and_abort_into_controls():
    monitor = MemoryMonitor(_source_at([0.86, 0.95]), CONFIG)  # shrink zone, then past the abort threshold
    callback = MemoryCallback(monitor, MemoryGuard(monitor, CONFIG, sleep=FakeSleep()), start_timer=False)
    shrink = callback.on_step_end(1, {"micro_batch": 8, "micro_batches": 1})
    assert shrink.micro_batch == 4 and shrink.abort is None
    assert "memory_shrink" in [e["event"] for e in shrink.events]
    abort = callback.on_step_end(2, {"micro_batch": 4, "micro_batches": 2}).abort
    assert isinstance(abort, MemoryAbort) and abort.decision.action == "abort"


def test_memory_callback_from_config_uses_the_given_source_without_a_timer():
    source = SimulatedMemorySource(total_mb=TOTAL_MB)
    callback = MemoryCallback.from_config(MemoryConfig(), source)
    assert callback.monitor.source is source and callback.start_timer is False
    assert callback.guard is not None
