"""Checkpoints off the training thread: the same bytes as a synchronous save, published in order, verified,
pruned as before; a failed background write reaches the training thread and leaves earlier checkpoints alone."""

from __future__ import annotations

import errno
import json
import threading
from pathlib import Path

import yourai  # noqa: F401  (OpenBLAS before mlx)
import mlx.core as mx
import numpy as np
import pytest

from yourai.config import load_config
from yourai.train import Trainer, train
from yourai.train import checkpoints as ckpt
from yourai.train.saver import CheckpointSaver

SMALL = ["train.batch_size=4", "train.max_seq_length=64", "train.warmup_steps=2", "train.val_batches=2",
         "train.eval_every=4", "train.save_every=2", "train.steps=6"]
ADAPTER_CONFIG = {"fine_tune_type": "lora", "num_layers": 1, "lora_parameters": {"rank": 2, "scale": 20.0, "dropout": 0.0}}


def snapshot(step: int, val_loss: float | None = None) -> ckpt.Snapshot:
    adapters = {"layers.0.q.lora_a": mx.full((4, 2), float(step)), "layers.0.q.lora_b": mx.zeros((2, 4))}
    optimizer = {"step": mx.array(step, dtype=mx.uint64), "layers.0.q.lora_a.m": mx.ones((4, 2))}
    state = {"epoch": 0, "batch_index": step, "val_loss": val_loss, "fingerprint": {"model": "m"}}
    return ckpt.snapshot(step, adapters, ADAPTER_CONFIG, optimizer, mx.array([1, 2], dtype=mx.uint32), state)


def record_writer_threads(monkeypatch) -> list[bool]:
    """Whether each checkpoint write ran on the main (training) thread."""
    on_main, original = [], ckpt.write_checkpoint

    def recording(root: Path, snap: ckpt.Snapshot) -> Path:
        on_main.append(threading.current_thread() is threading.main_thread())
        return original(root, snap)

    monkeypatch.setattr(ckpt, "write_checkpoint", recording)
    return on_main


@pytest.mark.parametrize("async_save, on_main", [(True, False), (False, True)], ids=["async", "sync"])
def test_train_async_save_chooses_the_thread_that_writes(curated_sample, tmp_path, monkeypatch, async_save, on_main):
    threads = record_writer_threads(monkeypatch)
    train(load_config(None, SMALL + [f"train.async_save={str(async_save).lower()}"]), tmp_path, data_dir=curated_sample,
          progress=False)
    assert threads == [on_main] * 3  # steps 2, 4, 6
    events = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines() if '"checkpoint"' in line]
    assert [e["step"] for e in events] == [2, 4, 6] and all(e["stall_s"] >= 0 and e["write_s"] > 0 for e in events)


def test_background_and_synchronous_saves_write_the_same_bytes(curated_sample, tmp_path):
    for mode in ("true", "false"):
        train(load_config(None, SMALL + [f"train.async_save={mode}"]), tmp_path / mode, data_dir=curated_sample,
              progress=False)
    for step in (4, 6):
        for name in (ckpt.ADAPTERS, ckpt.STATE_ARRAYS):
            first, second = (tmp_path / mode / "checkpoints" / ckpt.checkpoint_name(step) / name for mode in ("true", "false"))
            assert first.read_bytes() == second.read_bytes()


def test_saves_publish_in_order_verified_and_pruned_like_before(tmp_path):
    logged = []
    saver = CheckpointSaver(tmp_path, keep_last=2, log=logged.append)
    for step, loss in [(2, 3.0), (4, 1.0), (6, 2.0), (8, None)]:
        saver.submit(lambda step=step, loss=loss: snapshot(step, loss))
    saver.wait()
    assert [e["step"] for e in logged] == [2, 4, 6, 8]
    assert [e["removed"] for e in logged] == [[], [], ["step-00000002"], []]  # step 4 is the best: kept
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["step-00000004", "step-00000006", "step-00000008"]
    assert all(ckpt.verify(p) for p in ckpt.list_checkpoints(tmp_path))


def test_a_failed_background_write_reaches_the_training_thread_and_keeps_the_earlier_checkpoints(tmp_path, monkeypatch):
    saver = CheckpointSaver(tmp_path, keep_last=1)
    saver.submit(lambda: snapshot(2))
    saver.wait()
    original = ckpt.write_safetensors

    def disk_full(path: Path, arrays, metadata=None) -> None:
        if path.name == ckpt.STATE_ARRAYS:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        original(path, arrays, metadata)

    monkeypatch.setattr(ckpt, "write_safetensors", disk_full)
    saver.submit(lambda: snapshot(4))
    with pytest.raises(OSError, match="No space left on device") as failed:
        saver.wait()
    assert failed.value.filename.endswith(ckpt.STATE_ARRAYS)
    assert [p.name for p in tmp_path.iterdir()] == ["step-00000002"]  # no staging dir, nothing pruned
    ckpt.verify(tmp_path / "step-00000002")


def test_a_failed_save_surfaces_from_fit(curated_sample, tmp_path, monkeypatch):
    def disk_full(root: Path, snap: ckpt.Snapshot) -> Path:
        raise OSError(errno.ENOSPC, "No space left on device", str(root))

    monkeypatch.setattr(ckpt, "write_checkpoint", disk_full)
    with pytest.raises(OSError, match="No space left on device"):
        Trainer(load_config(None, SMALL), tmp_path, data_dir=curated_sample, progress=False).fit()
    assert not (tmp_path / "adapters").exists()


def test_a_snapshot_holds_host_copies_and_round_trips_bfloat16_exactly(tmp_path):
    weights = {"w": mx.array([1.0, -2.5, 3.0e-3], dtype=mx.bfloat16)}
    snap = ckpt.snapshot(1, weights, ADAPTER_CONFIG, {"step": mx.array(1, dtype=mx.uint64)}, mx.array([3, 4], dtype=mx.uint32),
                         {"fingerprint": {"model": "m"}})
    assert all(isinstance(data, np.ndarray) for _, data in [*snap.adapters.values(), *snap.optimizer.values()])
    loaded = ckpt.load_checkpoint(ckpt.write_checkpoint(tmp_path, snap))
    assert loaded["adapters"]["w"].dtype == mx.bfloat16
    assert np.array_equal(np.array(loaded["adapters"]["w"].view(mx.uint16)), np.array(weights["w"].view(mx.uint16)))
    assert loaded["optimizer"]["step"].dtype == mx.uint64 and loaded["rng_key"].tolist() == [3, 4]


@pytest.mark.parametrize("override, on_main", [([], False), (["train.async_save=false"], True)], ids=["default", "false"])
def test_yourai_train_async_save_override_reaches_the_saver(curated_sample, tmp_path, monkeypatch, override, on_main):
    """The path users take: `yourai train ... train.async_save=false` writes checkpoints on the training thread."""
    from yourai.cli.train import cli_main

    threads = record_writer_threads(monkeypatch)
    assert cli_main(["--data", str(curated_sample), "--out", str(tmp_path / "run"), "--no-progress", *SMALL, *override]) == 0
    assert threads == [on_main] * 3
