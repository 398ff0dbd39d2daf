"""metrics.jsonl → TensorBoard scalars: the same numbers at the same steps; a re-export replaces only its own files."""

from __future__ import annotations

import json

import pytest

from yourai.runs.tensorboard import EXPORT_MANIFEST, export_metrics, scalars, tensorboard_available

LOG = [
    {"event": "train_begin", "step": 0, "steps": 2},
    {"step": 0, "val_loss": 4.5, "val_gap": -0.25},
    {"step": 1, "loss": 4.25, "ce": 4.5, "lr": 0.001, "skipped": False, "objective": "weighted"},
    {"step": 2, "loss": float("nan"), "ce": 4.0, "skipped": True},
    {"step": 2, "val_loss": 4.0, "val_gap": -0.5},
]


@pytest.fixture
def metrics_path(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps(record) + "\n" for record in LOG))
    return path


def test_scalars_are_the_logged_numbers_by_group(metrics_path):
    assert list(scalars(metrics_path)) == [
        ("valid/val_loss", 4.5, 0), ("valid/val_gap", -0.25, 0), ("train/loss", 4.25, 1), ("train/ce", 4.5, 1),
        ("train/lr", 0.001, 1), ("train/ce", 4.0, 2), ("valid/val_loss", 4.0, 2), ("valid/val_gap", -0.5, 2)]


def test_without_tensorboard_nothing_is_written(metrics_path, tmp_path, monkeypatch):
    monkeypatch.setattr("yourai.runs.tensorboard.tensorboard_available", lambda: False)
    assert export_metrics(metrics_path, tmp_path / "tb") is None and not (tmp_path / "tb").exists()


@pytest.mark.skipif(not tensorboard_available(), reason="the optional `tensorboard` extra is not installed")
def test_event_files_hold_the_jsonl_values(metrics_path, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.util import tensor_util

    logdir = tmp_path / "tb"
    (logdir).mkdir()
    (logdir / "mine.txt").write_text("a file the export did not write")
    export_metrics(metrics_path, logdir)
    export_metrics(metrics_path, logdir)  # again (as after a resume): replaces its own files, keeps others
    events = [p for p in logdir.iterdir() if p.name.startswith("events.out.tfevents")]
    assert len(events) == 1 and (logdir / "mine.txt").is_file() and (logdir / EXPORT_MANIFEST).is_file()
    accumulator = EventAccumulator(str(logdir), size_guidance={"tensors": 0})
    accumulator.Reload()
    read = {(tag, event.step): float(tensor_util.make_ndarray(event.tensor_proto))
            for tag in accumulator.Tags()["tensors"] for event in accumulator.Tensors(tag)}
    assert read == pytest.approx({(tag, step): value for tag, value, step in scalars(metrics_path)})
