"""metrics.jsonl → TensorBoard event files, when the optional `tensorboard` extra is installed.

The JSONL stays the source of truth: the event files are derived from it after each training (and
again after a resume, replacing the previous export), so TensorBoard users see exactly what the log
holds. Step records become `train/<key>` scalars, validation records `valid/<key>`; events (checkpoints,
guard actions) stay in the JSONL.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Iterator

from yourai.records import iter_jsonl

EXPORT_MANIFEST = "yourai_export.json"  # the event files we wrote, so a re-export removes only those
SKIPPED_KEYS = {"step", "epoch", "batch", "skipped"}


def tensorboard_available() -> bool:
    try:
        import tensorboard.summary  # noqa: F401
    except ImportError:
        return False
    return True


def scalars(metrics_path: str | Path) -> Iterator[tuple[str, float, int]]:
    """(tag, value, step) for every finite number of every step and validation record."""
    for _, record in iter_jsonl(metrics_path):
        if "event" in record or "step" not in record:
            continue
        group = "valid" if "val_loss" in record else "train"
        for key, value in record.items():
            if key in SKIPPED_KEYS or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            if math.isfinite(value):
                yield f"{group}/{key}", float(value), int(record["step"])


def export_metrics(metrics_path: str | Path, logdir: str | Path) -> Path | None:
    """Write the log as TensorBoard scalars under `logdir`; None (and nothing written) without tensorboard."""
    if not tensorboard_available() or not Path(metrics_path).is_file():
        return None
    from tensorboard.summary import Writer

    logdir = Path(logdir)
    _remove_previous_export(logdir)
    logdir.mkdir(parents=True, exist_ok=True)
    before = set(logdir.iterdir())
    writer = Writer(str(logdir))
    for tag, value, step in scalars(metrics_path):
        writer.add_scalar(tag, value, step)
    writer.close()
    written = sorted(path.name for path in set(logdir.iterdir()) - before)
    (logdir / EXPORT_MANIFEST).write_text(json.dumps({"source": str(metrics_path), "files": written}) + "\n")
    return logdir


def _remove_previous_export(logdir: Path) -> None:
    manifest = logdir / EXPORT_MANIFEST
    if not manifest.is_file():
        return
    previous: dict[str, Any] = json.loads(manifest.read_text())
    for name in previous.get("files", []):
        (logdir / name).unlink(missing_ok=True)
    manifest.unlink()
