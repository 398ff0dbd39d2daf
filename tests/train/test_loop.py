"""Trainer behaviour on the embedded default model with tiny budgets (batch 4, 64 tokens, <= 12 steps)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yourai  # noqa: F401  (OpenBLAS before mlx)
import mlx.core as mx
from mlx.utils import tree_flatten, tree_map
import numpy as np
import pytest

from yourai.train import checkpoints as ckpt
from yourai.config import load_config
from yourai.cli.train import cli_main
from yourai.runs.record import read_record
from yourai.models import ensure_default_model
from yourai.train import (Control, MemoryAbort, MemoryCallback, NonFiniteAbort, Trainer, TrainingAbort,
                          TrainingCallback, train)
from yourai.train.memory import SimulatedMemorySource

SMALL = ["train.batch_size=4", "train.max_seq_length=64", "train.warmup_steps=2", "train.val_batches=2",
         "train.eval_every=4", "train.save_every=4"]


@pytest.fixture(scope="session")
def curated(tmp_path_factory) -> Path:
    """The sample corpus curated once (under a second)."""
    from yourai.data.curate import curate

    out = tmp_path_factory.mktemp("curated")
    curate(None, out, load_config().curate)
    return out


def config(*extra: str):
    return load_config(None, SMALL + list(extra))


def read_metrics(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def step_lines(path: Path) -> list[dict]:
    return [m for m in read_metrics(path) if "loss" in m]


def adapters(out: Path) -> dict:
    return mx.load(str(out / "adapters" / "adapters.safetensors"))


def test_faithful_adapters_bit_identical_to_plain_while_weighted_differs(curated, tmp_path):
    runs = {mode: train(config(f"loss.objective={mode}", "train.steps=6"), tmp_path / mode, data_dir=curated,
                        progress=False) for mode in ("plain", "faithful", "weighted")}
    plain, faithful, weighted = (adapters(tmp_path / m) for m in ("plain", "faithful", "weighted"))
    assert all(np.array_equal(np.array(plain[k]), np.array(faithful[k])) for k in plain)
    assert (tmp_path / "plain/adapters/adapters.safetensors").read_bytes() == (tmp_path / "faithful/adapters/adapters.safetensors").read_bytes()
    assert any(not np.array_equal(np.array(plain[k]), np.array(weighted[k])) for k in plain)
    # the faithful run really optimised a different number: CE + lambda * L_emp
    last_plain, last_faithful = runs["plain"].last, runs["faithful"].last
    assert last_faithful["loss"] == pytest.approx(last_plain["ce"] + 0.6 * last_faithful["distrust_term"], rel=1e-6)
    assert last_faithful["loss"] > last_plain["loss"] + 1.0
    assert 0.0 <= last_plain["padding_fraction"] < 0.5  # length bucketing keeps padding small; tokens count real ones


def test_validation_reports_every_tier_and_the_gap(curated, tmp_path):
    result = train(config("train.steps=4", "train.val_batches=-1"), tmp_path, data_dir=curated, progress=False)
    evals = [m for m in read_metrics(tmp_path / "metrics.jsonl") if "val_loss" in m]
    assert [e["step"] for e in evals] == [0, 4]
    valid = [json.loads(line) for line in (curated / "valid.jsonl").read_text().splitlines()]
    assert {r["tier"] for r in valid} == {"primary", "middle", "consensus"}
    for e in evals:
        assert e["val_gap"] == pytest.approx(e["val_loss_primary"] - e["val_loss_consensus"])
        low, high = sorted([e[f"val_loss_{t}"] for t in ("primary", "middle", "consensus")])[::2]
        assert low <= e["val_loss"] <= high  # a token-weighted mean of the tiers
    assert result.evals[-1]["val_loss"] == evals[-1]["val_loss"]


class Poison(TrainingCallback):
    """Puts inf into a frozen embedding row (so logits go non-finite) during chosen steps."""

    def __init__(self, trainer: Trainer, poison_after: set[int], heal_after: set[int]) -> None:
        self.trainer, self.poison_after, self.heal_after = trainer, poison_after, heal_after
        self.clean = trainer.model.model.embed_tokens.weight

    def on_train_begin(self, info: dict) -> None:
        if 0 in self.poison_after:
            self.on_step_end(0, {})

    def on_step_end(self, step: int, metrics: dict) -> None:
        embed = self.trainer.model.model.embed_tokens
        if step in self.poison_after:
            embed.weight = mx.full(self.clean.shape, float("inf"))
        if step in self.heal_after:
            embed.weight = self.clean


@pytest.mark.parametrize("micro_batch", [4, 2], ids=["fused", "accumulated"])
def test_nonfinite_step_is_skipped_and_counted(curated, tmp_path, micro_batch):
    trainer = Trainer(config("train.steps=5"), tmp_path, data_dir=curated, progress=False)
    trainer.state.micro_batch = micro_batch
    trainer.callbacks.append(Poison(trainer, poison_after={2}, heal_after={3}))
    trainer.fit()
    lines = step_lines(tmp_path / "metrics.jsonl")
    assert [m["skipped"] for m in lines] == [False, False, True, False, False]
    assert lines[2]["loss"] is None and lines[-1]["skipped_total"] == 1
    assert int(trainer.optimizer.state["step"]) == 4  # the schedule did not advance on the skipped step
    assert all(np.isfinite(np.array(v)).all() for v in adapters(tmp_path).values())


def test_nonfinite_steps_in_a_row_abort_with_a_loadable_checkpoint(curated, tmp_path):
    trainer = Trainer(config("train.steps=10", "train.max_bad_steps=3"), tmp_path, data_dir=curated, progress=False)
    trainer.callbacks.append(Poison(trainer, poison_after={1}, heal_after=set()))
    with pytest.raises(NonFiniteAbort, match="3 non-finite steps in a row"):
        trainer.fit()
    latest = ckpt.latest_checkpoint(tmp_path / "checkpoints")
    loaded = ckpt.load_checkpoint(latest)
    assert loaded["state"]["step"] == 4 and loaded["state"]["skipped_total"] == 3
    assert all(np.isfinite(np.array(v)).all() for v in loaded["adapters"].values())


class PoisonAdapters(TrainingCallback):
    """Writes NaN into the trainable LoRA weights at the end of one step: later checkpoints hold non-finite adapters."""

    def __init__(self, trainer: Trainer, at_step: int) -> None:
        self.trainer, self.at_step = trainer, at_step

    def on_train_begin(self, info: dict) -> None:
        if self.at_step == 0:
            self.on_step_end(0, {})

    def on_step_end(self, step: int, metrics: dict) -> None:
        if step == self.at_step:
            model = self.trainer.model
            model.update(tree_map(lambda p: mx.full(p.shape, float("nan")), model.trainable_parameters()))


def test_nonfinite_abort_points_at_the_newest_checkpoint_with_finite_adapters(curated, tmp_path):
    settings = config("train.steps=10", "train.max_bad_steps=2", "train.save_every=1", "train.keep_last=10")
    trainer = Trainer(settings, tmp_path, data_dir=curated, progress=False)
    trainer.callbacks.append(PoisonAdapters(trainer, at_step=2))  # step 2's checkpoint already holds NaN
    with pytest.raises(NonFiniteAbort) as aborted:
        trainer.fit()
    good = tmp_path / "checkpoints" / "step-00000001"
    assert f"the newest checkpoint whose adapters are all finite is {good}" in str(aborted.value)
    assert [p.name for p in ckpt.list_checkpoints(tmp_path / "checkpoints")][-1] == "step-00000004"


def test_nonfinite_abort_says_when_no_checkpoint_is_finite(curated, tmp_path):
    settings = config("train.steps=10", "train.max_bad_steps=2", "train.save_every=1")
    trainer = Trainer(settings, tmp_path, data_dir=curated, progress=False)
    trainer.callbacks.append(PoisonAdapters(trainer, at_step=0))
    with pytest.raises(NonFiniteAbort, match=r"no checkpoint in .*checkpoints has finite adapters"):
        trainer.fit()


def test_memory_abort_leaves_a_loadable_checkpoint(curated, tmp_path):
    total_mb = 10_000.0
    other = [0.0] * 4 + [0.97 * total_mb]  # other programs take the machine from the 5th sample on
    source = SimulatedMemorySource(total_mb=total_mb, base_rss_mb=100.0, active_mb=10.0, other_used_mb=other)
    memory_config = config("train.steps=10", "memory.max_pause_s=0.0")
    trainer = Trainer(memory_config, tmp_path, data_dir=curated, progress=False,
                      callbacks=[MemoryCallback.from_config(memory_config.memory, source)])
    with pytest.raises(MemoryAbort) as raised:
        trainer.fit()
    assert raised.value.decision.action == "abort"
    latest = ckpt.latest_checkpoint(tmp_path / "checkpoints")
    assert latest is not None
    loaded = ckpt.load_checkpoint(latest)
    assert loaded["state"]["step"] == trainer.step
    events = [m["event"] for m in read_metrics(tmp_path / "metrics.jsonl") if "event" in m]
    assert "memory_abort" in events and "checkpoint" in events
    resumed = Trainer(config("train.steps=10", "memory.max_pause_s=0.0"), tmp_path, data_dir=curated,
                      progress=False, resume=True)
    assert resumed.step == trainer.step


def test_micro_batches_give_the_same_update_as_one_batch(curated, tmp_path):
    """The scaling behind accumulation, shrinking and DDP: a split batch is the same objective."""
    losses = {}
    for micro in (4, 2, 1):
        trainer = Trainer(config("train.steps=3", "loss.objective=both"), tmp_path / str(micro), data_dir=curated,
                          progress=False)
        trainer.state.micro_batch = micro
        trainer.fit()
        losses[micro] = [m["loss"] for m in step_lines(tmp_path / str(micro) / "metrics.jsonl")]
    np.testing.assert_allclose(losses[2], losses[4], rtol=1e-5)
    np.testing.assert_allclose(losses[1], losses[4], rtol=1e-5)


class CallCounter(TrainingCallback):
    """Counts calls of each compiled step function once the trainer has built them."""

    def __init__(self, trainer: Trainer) -> None:
        self.trainer, self.calls = trainer, {"fused": 0, "grad_step": 0, "apply": 0}

    def on_train_begin(self, info: dict) -> None:
        for name in self.calls:
            setattr(self.trainer.fns, name, self._counted(name, getattr(self.trainer.fns, name)))

    def _counted(self, name, fn):
        def counted(*args):
            self.calls[name] += 1
            return fn(*args)

        return counted


@pytest.mark.parametrize("micro_batch, expected", [(4, {"fused": 3, "grad_step": 0, "apply": 0}),
                                                   (2, {"fused": 0, "grad_step": 6, "apply": 3})])
def test_one_micro_batch_is_one_compiled_call_per_update(curated, tmp_path, micro_batch, expected):
    trainer = Trainer(config("train.steps=3"), tmp_path, data_dir=curated, progress=False)
    trainer.state.micro_batch = micro_batch
    counter = CallCounter(trainer)
    trainer.callbacks.append(counter)
    trainer.fit()
    assert counter.calls == expected


class CallSpy(TrainingCallback):
    """Records, at every step, whether the decoder layer class still has its original __call__."""

    def __init__(self, trainer: Trainer, original) -> None:
        self.cls, self.original, self.patched = type(trainer.model.layers[0]), original, []

    def on_step_end(self, step: int, metrics: dict) -> None:
        self.patched.append(self.cls.__call__ is not self.original)


def test_grad_checkpointing_is_scoped_to_the_fit(curated, tmp_path):
    first = Trainer(config("train.steps=2", "train.grad_checkpoint=true"), tmp_path / "on", data_dir=curated,
                    progress=False)
    cls = type(first.model.layers[0])
    original = cls.__call__
    spy_on = CallSpy(first, original)
    first.callbacks.append(spy_on)
    first.fit()
    assert spy_on.patched == [True, True] and cls.__call__ is original
    second = Trainer(config("train.steps=2"), tmp_path / "off", data_dir=curated, progress=False)
    spy_off = CallSpy(second, original)
    second.callbacks.append(spy_off)
    second.fit()
    assert spy_off.patched == [False, False] and type(second.model.layers[0]).__call__ is original


def test_resume_refuses_a_different_setup_naming_the_file(curated, tmp_path):
    train(config("train.steps=4"), tmp_path, data_dir=curated, progress=False)
    with pytest.raises(ckpt.CheckpointError, match=r"trainer_state\.json.*train\.lora\.rank"):
        Trainer(config("train.steps=4", "train.lora.rank=4"), tmp_path, data_dir=curated, progress=False, resume=True)


def test_resume_refuses_a_corrupted_checkpoint_naming_the_file(curated, tmp_path):
    train(config("train.steps=4"), tmp_path, data_dir=curated, progress=False)
    state = ckpt.latest_checkpoint(tmp_path / "checkpoints") / "trainer_state.safetensors"
    raw = bytearray(state.read_bytes())
    raw[-1] ^= 0xFF
    state.write_bytes(bytes(raw))
    assert cli_main(["--out", str(tmp_path), "--data", str(curated), "--resume", "--no-progress", *SMALL,
                     "train.steps=4"]) == 1
    with pytest.raises(ckpt.CheckpointError, match="trainer_state.safetensors"):
        Trainer(config("train.steps=4"), tmp_path, data_dir=curated, progress=False, resume=True)


def test_cli_without_data_curates_the_sample_corpus(tmp_path, capsys):
    assert cli_main(["--out", str(tmp_path), "--steps", "2", "--objective", "plain", "--no-progress", *SMALL]) == 0
    assert (tmp_path / "data" / "train.jsonl").is_file()
    assert json.loads((tmp_path / "adapters" / "adapter_config.json").read_text())["fine_tune_type"] == "lora"
    assert "trained 2 steps" in capsys.readouterr().out


@pytest.mark.slow
def test_adapters_work_with_mlx_lm_generate_and_fuse(curated, tmp_path):
    from mlx_lm import load

    train(config("train.steps=4"), tmp_path, data_dir=curated, progress=False)
    base = ensure_default_model()
    run = subprocess.run([sys.executable, "-m", "mlx_lm", "generate", "--model", str(base), "--adapter-path",
                          str(tmp_path / "adapters"), "--prompt", "The archive", "--max-tokens", "4"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    fused = tmp_path / "fused"
    run = subprocess.run([sys.executable, "-m", "mlx_lm", "fuse", "--model", str(base), "--adapter-path",
                          str(tmp_path / "adapters"), "--save-path", str(fused)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    tokens = mx.array([[5, 17, 99, 256, 1024]])
    with_adapters, _ = load(str(base), adapter_path=str(tmp_path / "adapters"))
    fused_model, _ = load(str(fused))
    plain_model, _ = load(str(base))
    expected = with_adapters(tokens)
    np.testing.assert_allclose(np.array(fused_model(tokens)), np.array(expected), atol=1e-4)
    assert not np.allclose(np.array(plain_model(tokens)), np.array(expected), atol=1e-4)


def _cli(out: Path, data: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "yourai", "train", "--out", str(out), "--data", str(data), "--no-progress",
            *SMALL, *extra]


@pytest.mark.slow
def test_sigkill_and_resume_ends_bit_identical(curated, tmp_path):
    steps = "train.steps=40"  # long enough that the kill lands mid-run, with checkpoints every 4 steps
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    subprocess.run(_cli(tmp_path / "straight", curated, steps), check=True, env=env, capture_output=True, timeout=300)
    killed = subprocess.Popen(_cli(tmp_path / "killed", curated, steps), env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    root = tmp_path / "killed" / "checkpoints"
    deadline = time.monotonic() + 240
    while not (root / ckpt.checkpoint_name(8)).is_dir() and killed.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    killed.send_signal(signal.SIGKILL)
    assert killed.wait() == -signal.SIGKILL, "the run ended before it could be killed"
    assert not (tmp_path / "killed" / "adapters").exists()
    subprocess.run(_cli(tmp_path / "killed", curated, steps, "--resume"), check=True, env=env, capture_output=True,
                   timeout=300)
    straight = (tmp_path / "straight" / "adapters" / "adapters.safetensors").read_bytes()
    assert (tmp_path / "killed" / "adapters" / "adapters.safetensors").read_bytes() == straight
    resumed = [m for m in read_metrics(tmp_path / "killed" / "metrics.jsonl") if m.get("event") == "resume"]
    assert len(resumed) == 1 and 8 <= resumed[0]["step"] < 40
    same_losses = [m["loss"] for m in step_lines(tmp_path / "killed" / "metrics.jsonl")]
    assert same_losses == [m["loss"] for m in step_lines(tmp_path / "straight" / "metrics.jsonl")]


@pytest.mark.slow
@pytest.mark.distributed
def test_two_ring_processes_match_one_process_with_the_same_global_batch(curated, tmp_path):
    args = ["--data", str(curated), "--no-progress", *SMALL, "train.steps=4", "loss.objective=weighted"]
    single = tmp_path / "single"
    assert cli_main(["--out", str(single), *args]) == 0
    worker = Path(__file__).with_name("dist_train_worker.py").resolve()
    launcher = Path(sys.executable).with_name("mlx.launch")
    run = subprocess.run([str(launcher), "-n", "2", "--backend", "ring", "--python", sys.executable, str(worker),
                          "--out", str(tmp_path / "ring"), *args], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    begin = [m for m in read_metrics(tmp_path / "ring" / "metrics.jsonl") if m.get("event") == "train_begin"]
    assert begin[0]["world_size"] == 2
    record = read_record(tmp_path / "ring")  # written by rank 0 alone
    assert record["stages"]["train"]["status"] == "ok" and record["stages"]["train"]["metrics"]["steps"] == 4
    ring, one = step_lines(tmp_path / "ring" / "metrics.jsonl"), step_lines(single / "metrics.jsonl")
    assert [m["tokens"] for m in ring] == [m["tokens"] for m in one]  # the same global batches
    np.testing.assert_allclose([m["loss"] for m in ring], [m["loss"] for m in one], atol=1e-4)
    ring_evals = [m["val_loss"] for m in read_metrics(tmp_path / "ring" / "metrics.jsonl") if "val_loss" in m]
    np.testing.assert_allclose(ring_evals, [e["val_loss"] for e in read_metrics(single / "metrics.jsonl") if "val_loss" in e], atol=1e-4)
    ring_adapters, one_adapters = adapters(tmp_path / "ring"), adapters(single)
    for name, value in one_adapters.items():
        np.testing.assert_allclose(np.array(ring_adapters[name]), np.array(value), atol=1e-4)


class Steer(TrainingCallback):
    """A callback that halves the micro-batch after step 1 and stops the run after step 3."""

    def on_step_end(self, step: int, metrics: dict) -> Control | None:
        if step == 1:
            return Control(events=[{"event": "steer", "step": step}], micro_batch=2)
        if step == 3:
            return Control(abort=TrainingAbort("stopped by a callback"))
        return None


def test_a_callbacks_control_is_carried_out(curated, tmp_path):
    trainer = Trainer(config("train.steps=6"), tmp_path, data_dir=curated, progress=False, callbacks=[Steer()])
    with pytest.raises(TrainingAbort, match="stopped by a callback"):
        trainer.fit()
    lines = read_metrics(tmp_path / "metrics.jsonl")
    steps = [m for m in lines if "loss" in m]
    assert [(m["micro_batch"], m["micro_batches"]) for m in steps] == [(4, 1), (2, 2), (2, 2)]
    assert {"event": "steer", "step": 1} in lines and lines[-1]["event"] == "checkpoint"
    assert ckpt.load_checkpoint(ckpt.latest_checkpoint(tmp_path / "checkpoints"))["state"]["step"] == 3


def test_first_run_on_a_fresh_cache_starts_from_the_seeded_adapters(curated, tmp_path, monkeypatch):
    """Building the default model on first use reseeds mx.random; the run's seed must come after it."""
    import shutil

    from yourai.models import ensure_default_model

    built = ensure_default_model()

    def fake_build(out_dir, corpus, seed=0):  # what a build does to the global RNG, without the minute it takes
        shutil.copytree(built, out_dir)
        mx.random.seed(seed)
        mx.random.normal((16,))

    def initial_adapters(out: Path) -> dict:
        trainer = Trainer(config("train.seed=3"), out, data_dir=curated, progress=False)
        return dict(tree_flatten(trainer.model.trainable_parameters()))

    monkeypatch.setenv("YOURAI_CACHE", str(tmp_path / "fresh_cache"))
    monkeypatch.setattr("yourai.models.tiny.build_tiny_model", fake_build)
    first = initial_adapters(tmp_path / "first")  # builds the (fake) default model on the way
    second = initial_adapters(tmp_path / "second")  # the model is there now
    assert first.keys() == second.keys()
    assert all(mx.array_equal(first[name], second[name]).item() for name in first)
