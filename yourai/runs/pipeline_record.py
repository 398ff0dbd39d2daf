"""The record and report card of a `yourai run`: run.json before and after the stages, then report.html.

Called by yourai.pipeline with its stage results (objects with stage, status, seconds, error, summary,
notebook, figures). Each stage's headline numbers become metrics named "<stage> <headline key>" (the
estimate of an [estimate, low, high] triple), the curated splits and the TruthfulQA data are hashed,
and notebook 06's results file is registered so `yourai compare` can pair two runs question by question.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

from yourai.config import Config
from yourai.paths import PROJECT_ROOT
from yourai.runs.record import begin_record, file_facts, read_record, utc_now, write_record
from yourai.runs.report import write_report
from yourai.runs.tensorboard import export_metrics

STAGE_FILES = {"01": ("train.jsonl", "valid.jsonl")}  # data a stage wrote that later stages read
TRUTHFULQA_RESULTS = Path("06") / "results.json"
TRAINING_METRICS = Path("04") / "metrics.jsonl"


def begin_pipeline_record(run_dir: Path, config: Config, overrides: Mapping[str, Any] | None) -> None:
    """run.json with status running (a killed run reads as interrupted later) before the first stage."""
    record = begin_record(run_dir, "pipeline", config=config, overrides=overrides)
    record["stages"] = {}
    record["started"] = utc_now()
    for source in config.curate.sources:
        path = Path(source) if Path(source).is_absolute() or Path(source).exists() else PROJECT_ROOT / source
        if path.is_file():
            record["data"][f"source {source}"] = file_facts(path)
    write_record(run_dir, {**record, "status": "running"})


def _headline_metrics(stage: str, summary: Mapping[str, Any]) -> dict[str, Any]:
    metrics = {}
    for key, value in (summary.get("headline") or {}).items():
        estimate = value[0] if isinstance(value, list) and value else value
        if isinstance(estimate, (int, float)) and not isinstance(estimate, bool):
            metrics[f"{stage} {key}"] = estimate
    return metrics


def finish_pipeline_record(run_dir: Path, results: Sequence[Any]) -> Path:
    """Stages, metrics, data hashes and results files into run.json; TensorBoard export; report.html."""
    record = read_record(run_dir)
    for result in results:
        record["stages"][result.stage] = {"status": result.status, "seconds": round(result.seconds, 1),
                                          "error": result.error, "notebook": result.notebook,
                                          "metrics": _headline_metrics(result.stage, result.summary)}
        for name in STAGE_FILES.get(result.stage, ()):
            if (run_dir / result.stage / name).is_file():
                record["data"][f"{result.stage}/{name}"] = file_facts(run_dir / result.stage / name)
    if (run_dir / TRUTHFULQA_RESULTS).is_file():
        record["results"]["truthfulqa"] = str(TRUTHFULQA_RESULTS)
    record["ended"] = utc_now()
    write_record(run_dir, record)
    if (run_dir / TRAINING_METRICS).is_file():
        export_metrics(run_dir / TRAINING_METRICS, run_dir / "tensorboard" / "04")
    return write_report(run_dir)
