"""metrics.jsonl: the run's log, one JSON object per line, kept consistent across resumes."""

from __future__ import annotations

import json
from pathlib import Path

from yourai.paths import writing


class MetricsWriter:
    """metrics.jsonl: one JSON object per line, flushed so a killed run keeps what it logged."""

    def __init__(self, path: Path, enabled: bool, keep_until_step: int | None = None) -> None:
        self.path, self.enabled = path, enabled
        self.history: list[dict] = []  # the lines a resume kept
        if not enabled:
            return
        dropped = self._truncate_after(keep_until_step) if keep_until_step is not None else 0
        if keep_until_step is None and path.exists():
            path.unlink()
        self.handle = open(path, "a", encoding="utf-8")
        if keep_until_step is not None:
            self.write({"event": "resume", "step": keep_until_step, "dropped_lines": dropped})

    def _truncate_after(self, step: int) -> int:
        """Drop lines after the resumed step: the resumed run writes them again, identically."""
        if not self.path.exists():
            return 0
        lines = self.path.read_text(encoding="utf-8").splitlines()
        kept = [line for line in lines if line.strip() and json.loads(line).get("step", 0) <= step]
        self.path.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
        self.history = [json.loads(line) for line in kept]
        return len(lines) - len(kept)

    def earlier(self, key: str) -> list[dict]:
        """The kept step lines (key "loss") or validations ("val_loss"): a resumed run reports the whole run."""
        return [record for record in self.history if key in record and "event" not in record]

    def write(self, record: dict) -> None:
        if self.enabled:
            with writing(self.path):
                self.handle.write(json.dumps(record, allow_nan=True) + "\n")
                self.handle.flush()

    def close(self) -> None:
        if self.enabled:
            with writing(self.path):
                self.handle.close()
