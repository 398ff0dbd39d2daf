"""Atomic, verified checkpoints: the manifest catches every change, retention keeps last K + best."""

from __future__ import annotations

import json
from pathlib import Path

import yourai  # noqa: F401
import mlx.core as mx
import numpy as np
import pytest

from yourai.train import checkpoints as ckpt

ADAPTER_CONFIG = {"fine_tune_type": "lora", "num_layers": 2, "lora_parameters": {"rank": 2, "scale": 20.0, "dropout": 0.0}}


def save(root: Path, step: int, val_loss: float | None = None, fingerprint: dict | None = None) -> Path:
    adapters = {"layers.0.q.lora_a": mx.full((4, 2), float(step)), "layers.0.q.lora_b": mx.zeros((2, 4))}
    optimizer = {"step": mx.array(step, dtype=mx.uint64), "layers.0.q.lora_a.m": mx.ones((4, 2))}
    state = {"epoch": 0, "batch_index": step, "val_loss": val_loss, "fingerprint": fingerprint or {"model": "m"}}
    return ckpt.save_checkpoint(root, step, adapters, ADAPTER_CONFIG, optimizer, mx.array([1, 2], dtype=mx.uint32), state)


def test_round_trip_restores_every_array_and_the_state(tmp_path):
    path = save(tmp_path, 7, val_loss=1.5)
    loaded = ckpt.load_checkpoint(path)
    assert path.name == "step-00000007" and loaded["state"]["step"] == 7 and loaded["state"]["val_loss"] == 1.5
    assert int(loaded["optimizer"]["step"]) == 7 and loaded["optimizer"]["step"].dtype == mx.uint64
    np.testing.assert_array_equal(np.array(loaded["adapters"]["layers.0.q.lora_a"]), np.full((4, 2), 7.0))
    assert loaded["rng_key"].tolist() == [1, 2]
    assert json.loads((path / "adapter_config.json").read_text()) == ADAPTER_CONFIG  # an mlx-lm adapter dir
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(ckpt.TMP_PREFIX)]


@pytest.mark.parametrize("name", ["adapters.safetensors", "trainer_state.safetensors", "trainer_state.json", "adapter_config.json"])
def test_a_flipped_byte_is_refused_naming_the_file(tmp_path, name):
    path = save(tmp_path, 3)
    target = path / name
    raw = bytearray(target.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    target.write_bytes(bytes(raw))
    with pytest.raises(ckpt.CheckpointError, match=name.replace(".", r"\.")):
        ckpt.load_checkpoint(path)


def test_missing_manifest_or_file_is_refused(tmp_path):
    path = save(tmp_path, 3)
    (path / "adapters.safetensors").unlink()
    with pytest.raises(ckpt.CheckpointError, match="adapters.safetensors: listed in the manifest but missing"):
        ckpt.load_checkpoint(path)
    (path / "manifest.json").unlink()
    with pytest.raises(ckpt.CheckpointError, match="manifest.json: missing"):
        ckpt.load_checkpoint(path)


def test_mismatched_setup_or_shapes_are_refused(tmp_path):
    loaded = ckpt.load_checkpoint(save(tmp_path, 3, fingerprint={"model": "m", "train": {"seed": 0}}))
    shapes = {"layers.0.q.lora_a": (4, 2), "layers.0.q.lora_b": (2, 4)}
    ckpt.check_compatible(loaded, {"model": "m", "train": {"seed": 0}}, shapes)
    with pytest.raises(ckpt.CheckpointError, match=r"trainer_state\.json.*train\.seed: checkpoint 0 vs now 1"):
        ckpt.check_compatible(loaded, {"model": "m", "train": {"seed": 1}}, shapes)
    with pytest.raises(ckpt.CheckpointError, match=r"adapters\.safetensors.*lora_a has shape \(4, 2\)"):
        ckpt.check_compatible(loaded, {"model": "m", "train": {"seed": 0}}, {**shapes, "layers.0.q.lora_a": (8, 2)})


def test_prune_keeps_the_last_k_and_the_best(tmp_path):
    for step, loss in [(2, 3.0), (4, 1.0), (6, 2.0), (8, 2.5), (10, None)]:
        save(tmp_path, step, val_loss=loss)
    removed = ckpt.prune(tmp_path, keep_last=2)
    assert [p.name for p in removed] == ["step-00000002", "step-00000006"]
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["step-00000004", "step-00000008", "step-00000010"]
    assert ckpt.best_checkpoint(tmp_path).name == "step-00000004"
    assert ckpt.latest_checkpoint(tmp_path).name == "step-00000010"


def test_half_written_staging_dirs_are_ignored_and_removed(tmp_path):
    save(tmp_path, 4)
    (tmp_path / f"{ckpt.TMP_PREFIX}step-00000008-999").mkdir()
    assert ckpt.latest_checkpoint(tmp_path).name == "step-00000004"
    assert ckpt.remove_stale_staging(tmp_path) == [f"{ckpt.TMP_PREFIX}step-00000008-999"]


def test_saving_a_step_again_replaces_it_whole(tmp_path):
    save(tmp_path, 4, val_loss=2.0)
    path = save(tmp_path, 4, val_loss=1.0)
    assert ckpt.load_checkpoint(path)["state"]["val_loss"] == 1.0
