"""run.json: what a run directory holds and how it came to be, so runs can be listed, filtered and compared.

Every run directory (`yourai train --out`, the folder of `yourai eval --out`, `runs/<name>/` of `yourai run`,
each sweep cell) gets one `run.json`:

    schema, name, kind (train | eval | pipeline | sweep-cell), status, started, ended, seconds, pid, host,
    command, config (resolved) + config_hash, overrides, git {commit, dirty}, packages, machine (the facts
    `yourai doctor` prints), model {id, path, weights_sha256}, data {role: {path, sha256}}, stages
    {stage: {status, started, ended, seconds, metrics, error}}, metrics (every stage's headline numbers),
    results {name: path of a results file, relative to the run directory}, sweep (for sweep cells).

Stages merge: `yourai train --out d` and then `yourai eval --out d/truthfulqa.json` leave one record with
both stages. A process that dies leaves status "running" with its pid; readers call that "interrupted"
once the pid is gone (`effective_status`).
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator, Mapping

from yourai.config import Config, to_dict
from yourai.paths import PROJECT_ROOT, default_model_dir
from yourai.train.checkpoints import sha256_file

RUN_RECORD = "run.json"
SCHEMA = "yourai.run/1"
PACKAGES = ("yourai", "mlx", "mlx-lm", "numpy", "transformers", "tokenizers", "pandas", "papermill")
GIT_TIMEOUT_S = 10
STATUS_ORDER = ("running", "failed", "interrupted", "aborted", "stopped", "ok")  # the first one present wins


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def config_hash(config: Mapping[str, Any]) -> str:
    """SHA-256 of the resolved config as canonical JSON: equal hashes ⇔ equal settings."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, separators=(",", ":"), default=str).encode()).hexdigest()


def git_state(root: Path = PROJECT_ROOT) -> dict[str, Any]:
    """The commit the code came from and whether the work tree differed from it (None outside a git checkout)."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                                timeout=GIT_TIMEOUT_S, check=True).stdout.strip()
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                                capture_output=True, text=True, timeout=GIT_TIMEOUT_S, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    return {"commit": commit, "dirty": bool(status.strip())}


def package_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in PACKAGES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "not installed"
    return found


def machine_facts() -> dict[str, Any]:
    """What `yourai doctor` reports about this machine and the profile it matches."""
    from yourai.hardware import doctor_report

    report = doctor_report()
    return {**report["machine"], "profile": report["profile"]}


def model_facts(model: str) -> dict[str, Any]:
    """The model id, the local directory it resolves to, and a hash of its weight files (None if not local)."""
    path = default_model_dir() if model in ("default", "", None) else Path(model)
    if not path.is_dir():
        return {"id": model, "path": None, "weights_sha256": None}
    files = sorted(path.glob("*.safetensors"))
    digest = hashlib.sha256()
    for file in files:
        digest.update(f"{file.name}:{sha256_file(file)}".encode())
    return {"id": model, "path": str(path.resolve()), "weights_sha256": digest.hexdigest() if files else None}


def file_facts(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    return {"path": str(path.resolve()), "sha256": sha256_file(path) if path.is_file() else None}


def read_record(run_dir: str | Path) -> dict[str, Any]:
    """The run.json of a directory ({} when there is none); a damaged file is an error naming it."""
    path = Path(run_dir) / RUN_RECORD
    if not path.is_file():
        return {}
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}:{error.lineno}: not valid JSON: {error.msg}") from error
    if not isinstance(record, dict) or record.get("schema") != SCHEMA:
        raise ValueError(f"{path}: not a yourai run record (schema {SCHEMA})")
    return record


def write_record(run_dir: str | Path, record: dict[str, Any]) -> Path:
    """Write run.json atomically (a reader never sees half a file), with status and metrics recomputed."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    stages = record.get("stages", {})
    statuses = [stage.get("status") for stage in stages.values()]
    record["status"] = next((s for s in STATUS_ORDER if s in statuses), record.get("status", "running"))
    record["metrics"] = {key: value for stage in stages.values() for key, value in (stage.get("metrics") or {}).items()}
    path = run_dir / RUN_RECORD
    staging = path.with_suffix(f".json.{os.getpid()}.tmp")  # per writer: two processes never share one
    staging.write_text(json.dumps(record, indent=1, default=str) + "\n", encoding="utf-8")
    os.replace(staging, path)
    return path


def begin_record(run_dir: str | Path, kind: str, *, config: Config | None = None, overrides: Mapping | None = None,
                 model: str | None = None, settings: Mapping[str, Any] | None = None,
                 extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The run's record with this process's facts, merged into an existing run.json (its stages are kept)."""
    run_dir = Path(run_dir)
    record = read_record(run_dir) or {"schema": SCHEMA, "name": run_dir.name, "kind": kind, "started": utc_now(),
                                      "stages": {}, "data": {}, "results": {}}
    resolved = to_dict(config) if config is not None else record.get("config") or dict(settings or {})
    record.update({"pid": os.getpid(), "host": socket.gethostname(), "command": list(sys.argv),
                   "config": resolved, "config_hash": config_hash(resolved), "git": git_state(),
                   "packages": package_versions(), "machine": machine_facts(), **dict(extra or {})})
    if overrides:
        record["overrides"] = {**record.get("overrides", {}), **dict(overrides)}
    model_id = model or (config.model.path if config is not None else None)
    if model_id is not None and (record.get("model") or {}).get("id") != model_id:
        record["model"] = model_facts(model_id)
    return record


@contextmanager
def recorded_stage(run_dir: str | Path, stage: str, kind: str, **facts: Any) -> Iterator[dict[str, Any]]:
    """Record one stage in run.json: "running" while it runs, then ok / failed / interrupted with its metrics.

    The caller fills the yielded dict: `metrics` (headline numbers), `data` ({role: path}), `results`
    ({name: file}); the exception of a failing stage is recorded and re-raised.
    """
    run_dir = Path(run_dir)
    record = begin_record(run_dir, kind, **facts)
    entry: dict[str, Any] = {"status": "running", "started": utc_now(), "metrics": {}, "data": {}, "results": {}}
    record["stages"][stage] = {"status": "running", "started": entry["started"]}
    write_record(run_dir, record)
    started = time.perf_counter()
    try:
        yield entry
    except BaseException as error:
        entry.update(status=_status_of(error), error=f"{type(error).__name__}: {error}")
        raise
    else:
        entry["status"] = "ok"
    finally:
        _finish_stage(run_dir, record, stage, entry, time.perf_counter() - started)


def _status_of(error: BaseException) -> str:
    from yourai.stopping import StopAborted
    from yourai.train.callbacks import TrainingAbort
    from yourai.train.signals import TrainingStopped

    if isinstance(error, TrainingStopped):
        return "stopped"  # a stop signal, answered with a checkpoint of the last finished step: resumable
    if isinstance(error, TrainingAbort):
        return "aborted"  # the memory guard or non-finite steps stopped it, with a checkpoint saved
    return "interrupted" if isinstance(error, (KeyboardInterrupt, SystemExit, StopAborted)) else "failed"


def _finish_stage(run_dir: Path, record: dict, stage: str, entry: dict, seconds: float) -> None:
    for role, path in entry.pop("data").items():
        record["data"][role] = file_facts(path)
    for name, path in entry.pop("results").items():
        record["results"][name] = os.path.relpath(Path(path).resolve(), run_dir.resolve())
    record["stages"][stage] = {**entry, "ended": utc_now(), "seconds": round(seconds, 2)}
    record["ended"] = record["stages"][stage]["ended"]
    write_record(run_dir, record)


def effective_status(record: Mapping[str, Any]) -> str:
    """The recorded status, except that a "running" run whose process is gone (same host) was interrupted."""
    status = record.get("status", "unknown")
    if status == "running" and record.get("host") == socket.gethostname() and record.get("pid"):
        import psutil

        if not psutil.pid_exists(int(record["pid"])):
            return "interrupted"
    return status
