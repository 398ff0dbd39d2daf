"""One run per output directory: the lock, stale locks, fresh runs that must not wipe checkpoints, nothing to resume."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import yourai  # noqa: F401  (OpenBLAS before mlx)
import mlx.core as mx

from yourai.train import checkpoints as ckpt
from yourai.train import rundir
from yourai.train.rundir import LOCK_NAME, RunDirError, RunDirLock


def _checkpoint(root: Path, step: int, value: float = 1.0) -> Path:
    adapters = {"layers.0.lora_a": mx.full((2, 2), value)}
    return ckpt.save_checkpoint(root, step, adapters, {"fine_tune_type": "lora"}, {"step": mx.array(step)},
                                mx.array([0, step], dtype=mx.uint32), {"epoch": 0, "batch_index": step})


def _dead_pid() -> int:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(done.stdout)


def test_a_second_lock_on_the_same_directory_is_refused_naming_the_holder(tmp_path):
    first = RunDirLock(tmp_path).acquire()
    try:
        with pytest.raises(RunDirError, match=r"another training run \(this process\) is writing here"):
            RunDirLock(tmp_path).acquire()
        holder = subprocess.run([sys.executable, "-c", (
            "import sys; from yourai.train.rundir import RunDirLock, RunDirError\n"
            "try: RunDirLock(sys.argv[1]).acquire()\nexcept RunDirError as e: print(e)")
            , str(tmp_path)], capture_output=True, text=True, env={**os.environ})
        assert f"another training run (PID {os.getpid()}) is writing here" in holder.stdout
    finally:
        first.release()
    RunDirLock(tmp_path).acquire().release()  # released: free again
    assert (tmp_path / LOCK_NAME).read_text() == ""  # an empty lock file means a clean exit


def test_a_lock_left_by_a_dead_process_is_taken_over_and_reported(tmp_path):
    dead = _dead_pid()
    (tmp_path / LOCK_NAME).write_text(f"{dead}\n")
    lock = RunDirLock(tmp_path).acquire()
    try:
        assert lock.stale_pid == dead
        assert (tmp_path / LOCK_NAME).read_text() == f"{os.getpid()}\n"
    finally:
        lock.release()


def test_fresh_run_refuses_a_directory_with_checkpoints_unless_overwrite(tmp_path):
    root = tmp_path / "checkpoints"
    _checkpoint(root, 1), _checkpoint(root, 2)
    with pytest.raises(RunDirError, match=r"holds 2 checkpoint\(s\) of an earlier run \(step-00000001 … step-00000002\)"):
        rundir.prepare_fresh(tmp_path, overwrite=False, is_main=True)
    assert len(ckpt.list_checkpoints(root)) == 2  # refused: nothing touched
    (root / "notes.txt").write_text("mine")
    events = rundir.prepare_fresh(tmp_path, overwrite=True, is_main=True)
    assert events == [{"event": "removed_earlier_run_checkpoints", "names": ["step-00000001", "step-00000002"]}]
    assert sorted(p.name for p in root.iterdir()) == ["notes.txt"]


def test_overwrite_stops_before_deleting_when_a_checkpoint_folder_holds_a_foreign_file(tmp_path):
    root = tmp_path / "checkpoints"
    first, second = _checkpoint(root, 1), _checkpoint(root, 2)
    (second / "my_eval.csv").write_text("x")
    with pytest.raises(RunDirError, match=r"step-00000002: my_eval\.csv.*nothing was deleted"):
        rundir.prepare_fresh(tmp_path, overwrite=True, is_main=True)
    assert (first / ckpt.ADAPTERS).is_file() and (second / ckpt.ADAPTERS).is_file()


def test_resume_with_nothing_to_resume_is_an_error_and_partial_checkpoints_are_cleared(tmp_path):
    with pytest.raises(RunDirError, match="nothing to resume"):
        rundir.prepare_resume(tmp_path, is_main=True)
    partial = tmp_path / "checkpoints" / f"{ckpt.TMP_PREFIX}step-00000003-999"
    partial.mkdir(parents=True)
    (partial / ckpt.ADAPTERS).write_bytes(b"half")
    _checkpoint(tmp_path / "checkpoints", 2)
    events = rundir.prepare_resume(tmp_path, is_main=True)
    assert events == [{"event": "removed_partial_checkpoints", "names": [partial.name]}] and not partial.exists()


def test_newest_finite_checkpoint_skips_non_finite_adapters(tmp_path):
    root = tmp_path / "checkpoints"
    _checkpoint(root, 1), _checkpoint(root, 2), _checkpoint(root, 3, float("nan")), _checkpoint(root, 4, float("inf"))
    assert rundir.newest_finite_checkpoint(tmp_path) == root / "step-00000002"
    assert "newest checkpoint whose adapters are all finite is" in rundir.nonfinite_advice(tmp_path)
    assert rundir.newest_finite_checkpoint(tmp_path / "elsewhere") is None
