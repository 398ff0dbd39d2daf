"""Memory profiling: peak sweep on the default model, the leaking loop, guard simulation, overhead meter."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import mlx.core as mx
import pandas as pd
import pytest

from yourai.config import MemoryConfig, load_config
from yourai.notebook.memory_profile import (
    MemoryOverheadMeter,
    PressureScenario,
    SimulatedClock,
    TimelineSource,
    checkpointing_savings,
    grad_checkpointing,
    leak_summary,
    leaked_mb_per_step,
    lora_model,
    measure_step_peak,
    peak_memory_sweep,
    plot_sweep,
    plot_trace,
    random_tokens,
    run_monitored_loop,
    simulate_guard,
)
from yourai.train import MemoryCallback
from yourai.train.memory import MemoryMonitor, SimulatedMemorySource


@pytest.fixture(scope="module")
def lm():
    model, _ = lora_model("default", seed=0)
    return model


# --- gradient checkpointing and the peak sweep ---------------------------------------


def test_grad_checkpointing_is_undone_on_exit_even_after_an_error(lm):
    block_class = type(lm.layers[0])
    original = block_class.__call__
    with pytest.raises(RuntimeError, match="inside"):
        with grad_checkpointing(lm.layers[0]):
            assert block_class.__call__ is not original
            raise RuntimeError("inside")
    assert block_class.__call__ is original
    with grad_checkpointing(lm.layers[0], enabled=False):
        assert block_class.__call__ is original


def test_checkpointing_leaves_the_gradient_unchanged(lm):
    """Recomputing activations must not change what is learned, only what is held."""
    import mlx.nn as nn

    tokens = random_tokens(lm.args.vocab_size, 2, 16, seed=3)

    def loss_fn(model, batch):
        return nn.losses.cross_entropy(model(batch[:, :-1]), batch[:, 1:], reduction="mean")

    plain = nn.value_and_grad(lm, loss_fn)(lm, tokens)[1]
    with grad_checkpointing(lm.layers[0]):
        checkpointed = nn.value_and_grad(lm, loss_fn)(lm, tokens)[1]
    from mlx.utils import tree_flatten

    for (name, a), (_, b) in zip(tree_flatten(plain), tree_flatten(checkpointed)):
        assert mx.allclose(a, b, atol=1e-6).item(), name


def test_random_tokens_are_seeded_and_shaped():
    first, second = random_tokens(100, 3, 8, seed=1), random_tokens(100, 3, 8, seed=1)
    assert first.shape == (3, 9) and mx.array_equal(first, second).item()
    assert not mx.array_equal(first, random_tokens(100, 3, 8, seed=2)).item()


def test_step_peak_grows_with_batch_and_checkpointing_lowers_it(lm):
    small = measure_step_peak(lm, 1, 32, grad_checkpoint=False, steps=1)
    large = measure_step_peak(lm, 4, 32, grad_checkpoint=False, steps=1)
    checkpointed = measure_step_peak(lm, 4, 32, grad_checkpoint=True, steps=1)
    assert large["step_peak_mb"] > 2 * small["step_peak_mb"] > 0
    assert checkpointed["step_peak_mb"] < large["step_peak_mb"]
    assert large["peak_mb"] == pytest.approx(large["resident_mb"] + large["step_peak_mb"])


def test_step_peak_rejects_empty_shapes(lm):
    with pytest.raises(ValueError, match="batch_size"):
        measure_step_peak(lm, 0, 32, grad_checkpoint=False)


def test_sweep_has_one_row_per_combination(lm):
    sweep = peak_memory_sweep(lm, [1, 2], [16], checkpointing=(False, True), steps=1)
    assert list(sweep.columns[:3]) == ["batch_size", "seq_len", "grad_checkpoint"]
    assert len(sweep) == 4 and set(map(tuple, sweep[["batch_size", "grad_checkpoint"]].values)) == {
        (1, False), (1, True), (2, False), (2, True)}


def test_checkpointing_savings_pairs_off_and_on():
    sweep = pd.DataFrame({"batch_size": [1, 1, 2, 2], "seq_len": [8] * 4, "grad_checkpoint": [False, True] * 2,
                          "step_peak_mb": [10.0, 6.0, 20.0, 15.0]})
    table = checkpointing_savings(sweep)
    assert table["off_mb"].tolist() == [10.0, 20.0] and table["on_mb"].tolist() == [6.0, 15.0]
    assert table["saved_fraction"].tolist() == pytest.approx([0.4, 0.25])


# --- the leaking loop ----------------------------------------------------------------


@pytest.mark.slow
def test_monitor_flags_the_logits_leak_and_not_the_clean_loop(lm):
    config = MemoryConfig(leak_warmup_steps=4, leak_threshold_mb_per_step=0.25)  # one step leaks 0.5 MB
    estimates = {}
    for leak in (False, True):
        monitor = MemoryMonitor(config=config)
        kept = run_monitored_loop(lm, monitor, 18, 2, 32, leak=leak)
        assert kept == (18 if leak else 0)
        estimates[leak] = monitor.leak_estimate("mlx_active_mb")
    expected_mb = leaked_mb_per_step(lm, 2, 32)
    assert expected_mb == pytest.approx(2 * 32 * lm.args.vocab_size * 4 / 2**20)
    assert estimates[True].leaking and estimates[True].slope_mb_per_step == pytest.approx(expected_mb, rel=0.05)
    assert not estimates[False].leaking and abs(estimates[False].slope_mb_per_step) < 0.05


def test_leak_summary_keeps_the_interval_and_handles_none():
    assert leak_summary(None) == {"slope_mb_per_step": None}
    monitor = MemoryMonitor(SimulatedMemorySource(leak_mb_per_tick=2.0), MemoryConfig(leak_warmup_steps=0))
    for step in range(12):
        monitor.record(step)
    summary = leak_summary(monitor.leak_estimate())
    assert summary["slope_mb_per_step"] == pytest.approx(2.0) and summary["low"] <= 2.0 <= summary["high"]
    assert summary["leaking"] and summary["n"] == 12 and summary["metric"] == "rss_mb"


# --- the guard under simulated pressure ----------------------------------------------


def test_timeline_source_follows_the_clock():
    clock = SimulatedClock()
    source = TimelineSource(clock, [(0.0, 100.0), (2.0, 500.0)], total_mb=1000.0, base_rss_mb=100.0, active_mb=0.0)
    assert source.sample()["system_available_mb"] == 800.0
    clock.sleep(2.0)
    assert source.other_mb_now() == 500.0 and source.sample()["system_available_mb"] == 400.0


@pytest.mark.parametrize("timeline", [[], [(1.0, 5.0)], [(0.0, 5.0), (0.0, 6.0)]])
def test_timeline_source_rejects_bad_timelines(timeline):
    with pytest.raises(ValueError, match="timeline"):
        TimelineSource(SimulatedClock(), timeline)


def test_default_scenario_walks_the_guard_through_every_action_in_order():
    simulation = simulate_guard()
    table = simulation.table
    first_seen = list(dict.fromkeys(table["action"]))
    assert first_seen == ["none", "clear_cache", "pause", "shrink", "abort"]
    pause = table[table["action"] == "pause"].iloc[0]
    assert pause["paused_s"] == pytest.approx(0.75) and "resume" in pause["events"]  # 0.25 + 0.5 s back-off
    shrink = table[table["action"] == "shrink"].iloc[0]
    assert (shrink["batch_size"], shrink["grad_accumulation"]) == (4, 2)
    after_shrink = table[table["step"] == shrink["step"] + 1].iloc[0]
    assert after_shrink["used_before"] < shrink["used_before"] - 0.05  # a smaller batch really relieved pressure
    assert table["action"].iloc[-1] == "abort" and len(table) < PressureScenario().steps
    assert "Memory guard stopped training" in simulation.decisions[-1].message


def test_simulation_is_deterministic():
    assert simulate_guard().table.equals(simulate_guard().table)


def test_calm_machine_gives_no_actions():
    calm = PressureScenario(timeline=((0.0, 1000.0),), steps=5)
    assert simulate_guard(calm).table["action"].tolist() == ["none"] * 5


# --- overhead meter ------------------------------------------------------------------


def test_overhead_meter_reads_the_memory_callbacks_own_time_against_step_time():
    memory = MemoryCallback.from_config(MemoryConfig(), SimulatedMemorySource())
    meter = MemoryOverheadMeter(memory)
    with pytest.raises(ValueError, match="no training step"):
        meter.overhead_fraction
    for step in range(1, 4):
        memory.on_step_end(step, {"micro_batch": 4, "micro_batches": 1})
        meter.on_step_end(step, {"step_time_s": 0.5})
    assert meter.steps == 3 and meter.step_s == pytest.approx(1.5)
    assert memory.monitor.record_count == 3 and memory.overhead_s_total > 0
    assert meter.overhead_fraction == pytest.approx(memory.overhead_s_total / 1.5)


@pytest.mark.slow
def test_overhead_meter_in_a_real_trainer_run(tmp_path):
    from yourai.notebook.experiments import resolve_data
    from yourai.train import Trainer

    overrides = ["train.steps=4", "train.batch_size=2", "train.max_seq_length=32", "train.eval_every=4",
                 "train.save_every=4", "train.val_batches=1"]
    config = load_config(None, overrides)
    memory = MemoryCallback.from_config(config.memory)
    meter = MemoryOverheadMeter(memory)
    trainer = Trainer(config, tmp_path / "run", data_dir=resolve_data(config, None, tmp_path),
                      callbacks=[meter, memory], progress=False)
    assert trainer.callbacks[0] is memory  # memory callbacks run first, whatever the order given
    result = trainer.fit()
    assert meter.steps == 4 and memory.monitor.record_count >= 4
    assert 0 < meter.overhead_fraction < 1
    assert "rss_mb" in result.last and "mlx_peak_mb" in result.last  # the trainer merged the monitor's numbers


# --- figures -------------------------------------------------------------------------


def test_plots_draw_every_series_and_the_fit():
    monitor = MemoryMonitor(SimulatedMemorySource(leak_mb_per_tick=1.0), MemoryConfig(leak_warmup_steps=2))
    for step in range(14):
        monitor.record(step)
    monitor.record(None)  # a timer sample has no step and must not break the plot
    figure, (rss_ax, mlx_ax) = plt.subplots(1, 2)
    plot_trace(rss_ax, mlx_ax, monitor.to_frame(), monitor.leak_estimate())
    assert len(rss_ax.lines) == 2 and len(mlx_ax.lines) == 3
    sweep = pd.DataFrame({"batch_size": [1, 2, 1, 2], "seq_len": [8] * 4, "grad_checkpoint": [False, False, True, True],
                          "step_peak_mb": [1.0, 2.0, 0.5, 1.0]})
    figure2, ax = plt.subplots()
    plot_sweep(ax, sweep)
    assert len(ax.lines) == 2
    plt.close(figure)
    plt.close(figure2)
