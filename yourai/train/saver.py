"""Checkpoints written off the training thread, so a save no longer stalls training for its whole write.

The training thread only takes a `Snapshot` (host copies of the adapters, optimizer state and RNG
key, which the next update cannot change); a background thread then writes the files, fsyncs,
hashes them into the manifest, renames the directory into place, verifies it and prunes old ones.
Nothing about a checkpoint changes: it is published by one atomic rename, so a crash or an abort
mid-write leaves only a staging directory and every earlier checkpoint intact, and pruning runs
only after the new one is verified. One save is in flight at a time (a new one first waits for
the last), so checkpoints are published in step order and retention sees them as before.

`train.async_save: false` writes on the training thread instead (the old behaviour, and the
benchmark's "before"). Either way a save's `stall_s` is what it cost the training thread, logged
with its `checkpoint` event once the training thread sees it finished.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from yourai.train import checkpoints as ckpt


@dataclass
class SaveJob:
    """One checkpoint on its way to disk, and what its write found."""

    step: int
    path: Path
    snapshot: ckpt.Snapshot | None  # dropped once written
    stall_s: float = 0.0
    write_s: float = 0.0
    removed: list[Path] = field(default_factory=list)
    error: BaseException | None = None
    thread: threading.Thread | None = None

    def as_event(self) -> dict:
        return {"event": "checkpoint", "step": self.step, "path": str(self.path),
                "removed": [p.name for p in self.removed], "stall_s": round(self.stall_s, 6),
                "write_s": round(self.write_s, 6)}


class CheckpointSaver:
    """Writes snapshots into `root` one at a time, in the background unless `background` is False."""

    def __init__(self, root: Path, keep_last: int, background: bool = True,
                 log: Callable[[dict], None] = lambda event: None) -> None:
        self.root, self.keep_last, self.background, self.log = root, keep_last, background, log
        self._jobs: list[SaveJob] = []

    def submit(self, take_snapshot: Callable[[], ckpt.Snapshot]) -> Path:
        """Wait for the previous save, snapshot, start writing; returns where the checkpoint will appear."""
        started = time.perf_counter()
        for job in self._jobs:
            if job.thread is not None:
                job.thread.join()
        snap = take_snapshot()
        job = SaveJob(snap.step, self.root / ckpt.checkpoint_name(snap.step), snap)
        self._jobs.append(job)
        if self.background:
            job.thread = threading.Thread(target=self._write, args=(job,), name="yourai-checkpoint", daemon=True)
            job.thread.start()
        else:
            self._write(job)
        job.stall_s = time.perf_counter() - started
        return job.path

    def _write(self, job: SaveJob) -> None:
        began = time.perf_counter()
        try:
            ckpt.write_checkpoint(self.root, job.snapshot)
            ckpt.verify(job.path)
            job.removed = ckpt.prune(self.root, self.keep_last)
        except Exception as error:  # handed to the training thread by collect()
            job.error = error
        finally:
            job.snapshot = None  # the host copies can go
            job.write_s = time.perf_counter() - began

    def collect(self) -> list[SaveJob]:
        """Log the saves finished since the last call, oldest first; a failed one raises its error here."""
        finished = []
        while self._jobs and (self._jobs[0].thread is None or not self._jobs[0].thread.is_alive()):
            job = self._jobs.pop(0)
            if job.error is not None:
                raise job.error
            self.log(job.as_event())
            finished.append(job)
        return finished

    def wait(self) -> list[SaveJob]:
        """Block until every submitted save is published and verified (a second stop signal interrupts this)."""
        for job in self._jobs:
            while job.thread is not None and job.thread.is_alive():
                job.thread.join(0.05)
        return self.collect()

    def close(self) -> None:
        """On the way out of a failing run, let a save under way finish so the process never exits mid-write.

        A failed save is not raised here: the error already on its way out says more.
        """
        try:
            self.wait()
        except Exception:  # noqa: BLE001 - the caller's error wins; the failed save left only its staging dir
            pass
