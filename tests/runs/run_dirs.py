"""Run directories made through the real record functions, with results files of known per-question scores."""

from __future__ import annotations

import json
from pathlib import Path

from yourai.config import load_config
from yourai.runs.record import recorded_stage


def make_run(root: Path, name: str, overrides: list[str], mc1: list[float], data_sha: str = "d" * 64,
             val_gap: float = -0.5) -> Path:
    """A run dir whose train stage recorded `val_gap` and whose eval results hold these per-question MC1 scores."""
    run_dir = root / name
    config = load_config(overrides=overrides)
    with recorded_stage(run_dir, "train", "train", config=config) as stage:
        stage["metrics"].update(val_gap=val_gap)
    results = {"evaluated": "adapter", "settings": {"data": {"path": "tqa.jsonl", "sha256": data_sha}},
               "questions": [{"id": i, "origin": f"tqa.jsonl:{i + 1}", "question": f"q{i}",
                              "scores": {"adapter": {"mc1": score, "mc1_lls": [0.0, -1.0]}}}
                             for i, score in enumerate(mc1)]}
    (run_dir / "truthfulqa.json").write_text(json.dumps(results))
    with recorded_stage(run_dir, "eval", "eval", config=config) as stage:
        stage["metrics"].update(mc1=sum(mc1) / len(mc1))
        stage["results"]["truthfulqa"] = run_dir / "truthfulqa.json"
    return run_dir
