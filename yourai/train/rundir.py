"""A training run's output directory: one writer at a time, and nothing in it lost by accident.

* An exclusive lock per directory (``flock`` on ``.yourai-train.lock``, which holds the owner's PID):
  a second run into the same ``--out`` is refused with the first one's PID instead of both
  "succeeding" and clobbering each other. The kernel drops the lock when its process dies, so a
  lock file that still names a dead process is stale: it is taken over and reported.
* A fresh run into a directory that holds checkpoints refuses unless told to overwrite, because
  forgetting ``--resume`` after a crash must not wipe the checkpoints that resume needs.
* Overwriting deletes only the files our checkpoints consist of (the names a checkpoint writes);
  a checkpoint folder holding anything else stops the overwrite before a file is touched.
* ``--resume`` with nothing to resume is an error, not a silent fresh start.
"""

from __future__ import annotations

import os
from pathlib import Path

import mlx.core as mx

from yourai.train import checkpoints as ckpt

LOCK_NAME = ".yourai-train.lock"
CHECKPOINTS = "checkpoints"
CHECKPOINT_FILES = frozenset({ckpt.ADAPTERS, ckpt.ADAPTER_CONFIG, ckpt.STATE_ARRAYS, ckpt.STATE_JSON, ckpt.MANIFEST})

try:  # POSIX (macOS, Linux): what MLX runs on
    import fcntl
except ImportError:  # pragma: no cover - no flock: runs are not locked
    fcntl = None  # type: ignore[assignment]


class RunDirError(RuntimeError):
    """The run directory cannot be used as asked; the message says why and what to do."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


def _read_pid(fd: int) -> int | None:
    os.lseek(fd, 0, os.SEEK_SET)
    text = os.read(fd, 64).decode("ascii", "replace").strip()
    return int(text) if text.isdigit() else None


class RunDirLock:
    """Exclusive use of one run directory by one process; `release()` (or process exit) frees it."""

    def __init__(self, out_dir: Path) -> None:
        self.path = Path(out_dir) / LOCK_NAME
        self.fd: int | None = None
        self.stale_pid: int | None = None  # a dead process whose lock this one took over

    def acquire(self) -> RunDirLock:
        if fcntl is None:
            return self
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(fd)
            os.close(fd)
            who = "this process" if holder == os.getpid() else f"PID {holder}" if holder else "another process"
            raise RunDirError(f"{self.path.parent}: another training run ({who}) is writing here "
                              f"(lock {self.path}); wait for it to finish or choose another --out") from None
        previous = _read_pid(fd)
        if previous is not None and previous != os.getpid() and not _pid_alive(previous):
            self.stale_pid = previous
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd = fd
        return self

    def release(self) -> None:
        """Empty the PID (a lock file with a PID in it means its owner died) and unlock."""
        if self.fd is None:
            return
        fd, self.fd = self.fd, None
        try:
            os.ftruncate(fd, 0)
        finally:
            os.close(fd)  # closing the descriptor releases the flock


def checkpoint_root(out_dir: Path) -> Path:
    return Path(out_dir) / CHECKPOINTS


def _staging_dirs(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith(ckpt.TMP_PREFIX)) if root.is_dir() else []


def remove_checkpoint_dir(directory: Path) -> list[str]:
    """Delete the files a checkpoint consists of, then the folder if that emptied it; returns what was left."""
    for path in directory.iterdir():
        if path.is_file() and path.name in CHECKPOINT_FILES:
            path.unlink()
    left = sorted(p.name for p in directory.iterdir())
    if not left:
        directory.rmdir()
    return left


def _foreign_files(directories: list[Path]) -> dict[str, list[str]]:
    """{folder: entries a checkpoint never writes} for the folders that have any."""
    found = {}
    for directory in directories:
        foreign = sorted(p.name for p in directory.iterdir() if not (p.is_file() and p.name in CHECKPOINT_FILES))
        if foreign:
            found[str(directory)] = foreign
    return found


def prepare_fresh(out_dir: Path, overwrite: bool, is_main: bool) -> list[dict]:
    """A fresh run: refuse a directory holding checkpoints unless `overwrite`; then delete only our files."""
    root = checkpoint_root(out_dir)
    earlier = ckpt.list_checkpoints(root)
    if earlier and not overwrite:
        names = earlier[0].name + (f" … {earlier[-1].name}" if len(earlier) > 1 else "")
        raise RunDirError(f"{root}: holds {len(earlier)} checkpoint(s) of an earlier run ({names}). "
                          "Continue that run with --resume, or start over with --overwrite "
                          "(it deletes only the checkpoint files yourai wrote).")
    ours = earlier + _staging_dirs(root)
    foreign = _foreign_files(ours)
    if foreign:
        listed = "; ".join(f"{folder}: {', '.join(names[:5])}" for folder, names in foreign.items())
        raise RunDirError(f"{root}: checkpoint folders hold files yourai did not write ({listed}); "
                          "move them elsewhere, then run again (nothing was deleted)")
    if not is_main or not ours:
        return []
    for directory in ours:
        remove_checkpoint_dir(directory)
    return [{"event": "removed_earlier_run_checkpoints", "names": [d.name for d in ours]}]


def prepare_resume(out_dir: Path, is_main: bool) -> list[dict]:
    """A resume: clear half-written checkpoints a killed run left; refuse when nothing is left to resume."""
    root = checkpoint_root(out_dir)
    events = []
    if is_main:
        staging = _staging_dirs(root)
        kept = {str(d): left for d in staging if (left := remove_checkpoint_dir(d))}
        if staging:
            events.append({"event": "removed_partial_checkpoints", "names": [d.name for d in staging if str(d) not in kept]})
        if kept:
            events.append({"event": "kept_files_not_ours", "files": kept})
    require_checkpoint(out_dir)
    return events


def require_checkpoint(out_dir: Path) -> Path:
    """The checkpoint a resume starts from; RunDirError when there is none (read-only, safe to ask early)."""
    latest = ckpt.latest_checkpoint(checkpoint_root(out_dir))
    if latest is None:
        raise RunDirError(f"{checkpoint_root(out_dir)}: nothing to resume (no checkpoint in it); run without "
                          "--resume to start a fresh run")
    return latest


def claim(out_dir: Path, *, resume: bool, overwrite: bool, is_main: bool) -> tuple[RunDirLock, list[dict]]:
    """Lock the directory (rank 0) and ready it for a resume or a fresh run; (lock, events for metrics.jsonl)."""
    lock = RunDirLock(out_dir)
    if is_main:
        lock.acquire()
    try:
        events = [{"event": "stale_lock_taken_over", "pid": lock.stale_pid}] if lock.stale_pid else []
        events += prepare_resume(out_dir, is_main) if resume else prepare_fresh(out_dir, overwrite, is_main)
    except BaseException:
        lock.release()
        raise
    return lock, events


def adapters_finite(checkpoint: Path) -> bool:
    """Whether every adapter tensor of a checkpoint is finite (an unreadable one counts as not)."""
    try:
        tensors = mx.load(str(checkpoint / ckpt.ADAPTERS))
    except (OSError, RuntimeError, ValueError):
        return False
    return all(bool(mx.all(mx.isfinite(t)).item()) for t in tensors.values())


def newest_finite_checkpoint(out_dir: Path) -> Path | None:
    """The newest checkpoint whose adapters hold no NaN or inf: the one to resume from after a blow-up."""
    for path in reversed(ckpt.list_checkpoints(checkpoint_root(out_dir))):
        if adapters_finite(path):
            return path
    return None


def nonfinite_advice(out_dir: Path) -> str:
    """Where a user can go back to after training turned non-finite."""
    good = newest_finite_checkpoint(out_dir)
    if good is None:
        return f"no checkpoint in {checkpoint_root(out_dir)} has finite adapters, so there is none to go back to"
    return f"the newest checkpoint whose adapters are all finite is {good}"
