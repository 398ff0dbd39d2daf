"""Atomic, verified training checkpoints that resume a run bit for bit.

mlx-lm saves adapter weights only (no optimizer, step, RNG or data position) and writes them in
place, so a crash mid-write can leave a torn file. Here a checkpoint is a directory written under a
temporary name and renamed into place (a rename is atomic on POSIX), holding:

    adapters.safetensors, adapter_config.json   the mlx-lm adapter layout (the dir loads as adapters)
    trainer_state.safetensors                   optimizer state (incl. its step) and the MLX RNG key
    trainer_state.json                          step, data position, lambda, config, val loss
    manifest.json                               SHA-256 and size of every file above

Loading verifies the manifest first and refuses, naming the file, anything that does not match.
Retention keeps the last K checkpoints plus the one with the best validation loss.

Writing takes a `Snapshot`: host (numpy) copies of the arrays, taken on the training thread, so the
write itself touches no MLX state and can run on another thread (`saver.py`) while training goes on.
"""

from __future__ import annotations

import copy
import errno
import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import mlx.core as mx
import numpy as np
from safetensors import SafetensorError, TensorSpec, serialize_file

from yourai.paths import writing

MANIFEST = "manifest.json"
STATE_JSON = "trainer_state.json"
STATE_ARRAYS = "trainer_state.safetensors"
ADAPTERS = "adapters.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
PREFIX = "step-"
TMP_PREFIX = ".tmp-"
FORMAT_VERSION = 1
HASH_CHUNK_BYTES = 1 << 20
OPTIMIZER_PREFIX = "optimizer."
RNG_KEY = "rng.key"

# A host copy of one array: its safetensors dtype name and a C-contiguous numpy array of its bytes
# (bfloat16, which numpy lacks, travels as its uint16 bit pattern).
HostArray = tuple[str, np.ndarray]


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be trusted; the message names the file."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(HASH_CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _fsync_path(path: Path) -> None:
    """Flush a file or directory to disk so a rename never exposes unwritten data."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def checkpoint_name(step: int) -> str:
    return f"{PREFIX}{step:08d}"


def host_copy(arrays: Mapping[str, mx.array]) -> dict[str, HostArray]:
    """Copies a writer can use on any thread: numpy holds no MLX state, and the next update cannot change them."""
    mx.eval(list(arrays.values()))
    copies = {}
    for name, value in arrays.items():
        dtype = str(value.dtype).rsplit(".", 1)[-1]
        raw = value.view(mx.uint16) if value.dtype == mx.bfloat16 else value
        copies[name] = (dtype, np.array(raw, copy=True, order="C"))
    return copies


def write_safetensors(path: Path, arrays: Mapping[str, HostArray], metadata: Mapping[str, str] | None = None) -> None:
    """One safetensors file from host copies (mx.load and mlx-lm read it like one MLX wrote).

    At most one metadata key: the writer orders a map's keys arbitrarily, and the same run must
    write the same bytes (resume and the faithful-vs-plain check compare files byte for byte).
    """
    if metadata is not None and len(metadata) > 1:
        raise ValueError(f"{path}: one metadata key at most, got {sorted(metadata)}")
    specs = {name: TensorSpec(dtype=dtype, shape=data.shape, data_ptr=data.ctypes.data, data_len=data.nbytes)
             for name, (dtype, data) in arrays.items()}
    try:
        with writing(path):
            serialize_file(specs, str(path), metadata=dict(metadata) if metadata else None)
    except SafetensorError as err:  # the Rust writer reports a failed write (a full disk) as its own error type
        raise OSError(errno.EIO, f"{err} (is the disk full?)", str(path)) from err


def write_adapter_dir(directory: Path, adapters: Mapping[str, HostArray], adapter_config: Mapping[str, Any]) -> None:
    """adapters.safetensors + adapter_config.json in mlx-lm's layout."""
    write_safetensors(directory / ADAPTERS, adapters)
    with writing(directory / ADAPTER_CONFIG):
        (directory / ADAPTER_CONFIG).write_text(json.dumps(adapter_config, indent=4) + "\n")


def write_manifest(directory: Path) -> dict:
    """SHA-256 and size of every file in the directory except the manifest itself."""
    files = {
        p.name: {"sha256": sha256_file(p), "bytes": p.stat().st_size}
        for p in sorted(directory.iterdir())
        if p.is_file() and p.name != MANIFEST
    }
    manifest = {"format": FORMAT_VERSION, "files": files}
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def publish(staging: Path, target: Path) -> Path:
    """fsync every file, then rename the staging dir into place (replacing an older copy)."""
    for path in staging.iterdir():
        _fsync_path(path)
    _fsync_path(staging)
    if target.exists():
        retired = target.with_name(f"{TMP_PREFIX}old-{target.name}-{os.getpid()}")
        target.rename(retired)
        shutil.rmtree(retired)
    staging.rename(target)
    _fsync_path(target.parent)
    return target


def publish_adapters(target: Path, adapters: Mapping[str, HostArray], adapter_config: Mapping[str, Any]) -> Path:
    """An mlx-lm adapter directory written under a staging name, then renamed over `target`."""
    staging = target.with_name(f"{TMP_PREFIX}{target.name}-{os.getpid()}")
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir()
    write_adapter_dir(staging, adapters, adapter_config)
    return publish(staging, target)


@dataclass(frozen=True)
class Snapshot:
    """Everything one checkpoint holds, as host copies: cheap to take, safe to write on another thread."""

    step: int
    adapters: dict[str, HostArray]
    adapter_config: dict
    optimizer: dict[str, HostArray]  # tree_flatten(optimizer.state), without the prefix
    rng_key: HostArray
    state: dict  # trainer_state.json, less the step


def snapshot(step: int, adapters: Mapping[str, mx.array], adapter_config: Mapping[str, Any],
             optimizer_state: Mapping[str, mx.array], rng_key: mx.array, state: Mapping[str, Any]) -> Snapshot:
    """Host copies of a run's arrays; `optimizer_state` is tree_flatten(optimizer.state) as a dict."""
    return Snapshot(step, host_copy(adapters), copy.deepcopy(dict(adapter_config)), host_copy(optimizer_state),
                    host_copy({RNG_KEY: rng_key})[RNG_KEY], copy.deepcopy(dict(state)))


def write_checkpoint(root: Path, snap: Snapshot) -> Path:
    """Write one checkpoint atomically; a failed write removes its staging dir and touches no published one."""
    root.mkdir(parents=True, exist_ok=True)
    staging = root / f"{TMP_PREFIX}{checkpoint_name(snap.step)}-{os.getpid()}"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir()
    try:
        write_adapter_dir(staging, snap.adapters, snap.adapter_config)
        arrays = {**{OPTIMIZER_PREFIX + k: v for k, v in snap.optimizer.items()}, RNG_KEY: snap.rng_key}
        write_safetensors(staging / STATE_ARRAYS, arrays, metadata={"step": str(snap.step)})
        state = {"step": snap.step, **snap.state}
        with writing(staging / STATE_JSON):
            (staging / STATE_JSON).write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")
        write_manifest(staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return publish(staging, root / checkpoint_name(snap.step))


def save_checkpoint(
    root: Path,
    step: int,
    adapters: Mapping[str, mx.array],
    adapter_config: Mapping[str, Any],
    optimizer_state: Mapping[str, mx.array],
    rng_key: mx.array,
    state: Mapping[str, Any],
) -> Path:
    """Snapshot and write in one call, on this thread; `optimizer_state` is tree_flatten(optimizer.state) as a dict."""
    return write_checkpoint(root, snapshot(step, adapters, adapter_config, optimizer_state, rng_key, state))


def remove_stale_staging(root: Path) -> list[str]:
    """Delete half-written checkpoints left by a killed run; returns their names for the log."""
    if not root.is_dir():
        return []
    stale = [p for p in root.iterdir() if p.is_dir() and p.name.startswith(TMP_PREFIX)]
    for path in stale:
        shutil.rmtree(path)
    return [p.name for p in stale]


def list_checkpoints(root: Path) -> list[Path]:
    """Published checkpoints, oldest first."""
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and p.name.startswith(PREFIX) and p.name[len(PREFIX):].isdigit()]
    return sorted(found, key=lambda p: int(p.name[len(PREFIX):]))


def latest_checkpoint(root: Path) -> Path | None:
    found = list_checkpoints(root)
    return found[-1] if found else None


def verify(directory: Path) -> dict:
    """Check the manifest against the files; raise CheckpointError naming the first bad file."""
    manifest_path = directory / MANIFEST
    if not manifest_path.is_file():
        raise CheckpointError(f"{manifest_path}: missing (the checkpoint is incomplete or not ours)")
    try:
        manifest = json.loads(manifest_path.read_text())
        files = manifest["files"]
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise CheckpointError(f"{manifest_path}: unreadable manifest: {err}") from err
    for name in (ADAPTERS, ADAPTER_CONFIG, STATE_ARRAYS, STATE_JSON):
        if name not in files:
            raise CheckpointError(f"{manifest_path}: does not list {name}")
    for name, entry in files.items():
        path = directory / name
        if not path.is_file():
            raise CheckpointError(f"{path}: listed in the manifest but missing")
        if path.stat().st_size != entry["bytes"] or sha256_file(path) != entry["sha256"]:
            raise CheckpointError(f"{path}: SHA-256 does not match the manifest (the file is corrupted or was edited)")
    return manifest


def load_checkpoint(directory: Path) -> dict:
    """Verified contents: adapters, optimizer (flat dict), rng_key, state (json), adapter_config."""
    verify(directory)
    arrays = mx.load(str(directory / STATE_ARRAYS))
    if RNG_KEY not in arrays:
        raise CheckpointError(f"{directory / STATE_ARRAYS}: no RNG key")
    return {
        "path": directory,
        "adapters": mx.load(str(directory / ADAPTERS)),
        "optimizer": {k[len(OPTIMIZER_PREFIX):]: v for k, v in arrays.items() if k.startswith(OPTIMIZER_PREFIX)},
        "rng_key": arrays[RNG_KEY],
        "state": json.loads((directory / STATE_JSON).read_text()),
        "adapter_config": json.loads((directory / ADAPTER_CONFIG).read_text()),
    }


def config_mismatch(saved: Mapping[str, Any], current: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two nested dicts (what makes a resume unsafe)."""
    keys = sorted(set(saved) | set(current))
    diffs = []
    for key in keys:
        a, b = saved.get(key), current.get(key)
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            diffs.extend(config_mismatch(a, b, f"{prefix}{key}."))
        elif a != b:
            diffs.append(f"{prefix}{key}: checkpoint {a!r} vs now {b!r}")
    return diffs


def check_compatible(checkpoint: Mapping[str, Any], fingerprint: Mapping[str, Any],
                     adapter_shapes: Mapping[str, tuple]) -> None:
    """Refuse to resume a run whose settings, data or adapter shapes differ from this one."""
    directory = checkpoint["path"]
    diffs = config_mismatch(checkpoint["state"].get("fingerprint", {}), fingerprint)
    if diffs:
        raise CheckpointError(f"{directory / STATE_JSON}: made by a different run setup: " + "; ".join(diffs))
    saved = checkpoint["adapters"]
    for name, shape in adapter_shapes.items():
        if name not in saved:
            raise CheckpointError(f"{directory / ADAPTERS}: lacks adapter tensor {name}")
        if tuple(saved[name].shape) != tuple(shape):
            raise CheckpointError(f"{directory / ADAPTERS}: {name} has shape {tuple(saved[name].shape)}, the model needs {tuple(shape)}")
    extra = sorted(set(saved) - set(adapter_shapes))
    if extra:
        raise CheckpointError(f"{directory / ADAPTERS}: tensors the model does not have: {extra[:3]}")


def prune(root: Path, keep_last: int) -> list[Path]:
    """Keep the newest `keep_last` checkpoints plus the best by validation loss; return what was removed."""
    found = list_checkpoints(root)
    keep = set(found[-keep_last:])
    best = best_checkpoint(root)
    if best is not None:
        keep.add(best)
    removed = [p for p in found if p not in keep]
    for path in removed:
        shutil.rmtree(path)
    return removed


def best_checkpoint(root: Path) -> Path | None:
    """The checkpoint with the lowest recorded validation loss (None if none recorded one)."""
    best, best_loss = None, float("inf")
    for path in list_checkpoints(root):
        try:
            loss = json.loads((path / STATE_JSON).read_text()).get("val_loss")
        except (OSError, json.JSONDecodeError):
            continue  # a damaged one is refused when loaded; it just cannot be "best"
        if loss is not None and loss < best_loss:
            best, best_loss = path, loss
    return best
