"""Training and evaluation as recorded stages: the one code path of `yourai train`, `yourai eval` and sweep cells.

Each function runs its stage, writes the stage's files as before, and records it in the run directory's
run.json (yourai.runs.record) with its headline numbers, the hashes of the data it read and the results
files a comparison can pair.
"""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from typing import Any, Mapping, Sequence

import mlx.core as mx

from yourai.config import Config
from yourai.eval.results import evaluate, result_keys, write_results
from yourai.eval.task_eval import evaluate_task, write_task_results
from yourai.eval.tasks import load_task_spec
from yourai.eval.truthfulqa import EvalOptions
from yourai.notebook.experiments import resolve_data
from yourai.runs.record import recorded_stage
from yourai.runs.tensorboard import export_metrics
from yourai.train import TrainResult, train

TRAIN_HEADLINE = ("val_loss", "val_loss_primary", "val_loss_middle", "val_loss_consensus", "val_gap")


def train_headline(result: TrainResult) -> dict[str, Any]:
    """The numbers a run is compared by: final train loss, final validation per tier, throughput."""
    final = result.evals[-1] if result.evals else {}
    return {"train_loss": result.last.get("loss"), "train_ce": result.last.get("ce"), "steps": result.steps,
            **{key: final[key] for key in TRAIN_HEADLINE if final.get(key) is not None},
            "tokens_per_s": round(result.tokens_per_s, 1)}


def run_training(config: Config, out_dir: str | Path, *, data_dir: str | Path | None = None, resume: bool = False,
                 overwrite: bool = False, progress: bool = True, kind: str = "train",
                 extra: Mapping[str, Any] | None = None) -> TrainResult:
    """Resolve the data, train, record the stage; metrics also go to TensorBoard when it is installed.

    Under mlx.launch every rank runs this with the same --out; only rank 0 writes run.json and TensorBoard
    (as only it writes metrics.jsonl and checkpoints): two writers of one record race and lose stages.
    """
    out_dir = Path(out_dir)
    records = records_this_process()
    unrecorded = nullcontext({"metrics": {}, "data": {}, "results": {}})
    with recorded_stage(out_dir, "train", kind, config=config, extra=extra) if records else unrecorded as stage:
        data = resolve_data(config, data_dir, out_dir)
        stage["data"].update({"train": data / "train.jsonl", **({"valid": data / "valid.jsonl"}
                                                                if (data / "valid.jsonl").is_file() else {})})
        result = train(config, out_dir, data_dir=data, resume=resume, overwrite=overwrite, progress=progress)
        stage["metrics"].update(train_headline(result))
        stage["results"]["metrics"] = result.metrics_path
    if records:
        export_metrics(result.metrics_path, out_dir / "tensorboard")
    return result


def records_this_process() -> bool:
    """True on a single process and on rank 0 of a distributed group: the one writer of a run's record."""
    return mx.distributed.init().rank() == 0


def eval_headline(results: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """The evaluated model's mean per metric, its MC1 calibration, and the adapter − base deltas."""
    evaluated = results["models"][results["evaluated"]]
    keys = results["spec"]["metrics"] if "spec" in results else result_keys(results)
    headline = {f"{prefix}{key}": evaluated[key]["mean"] for key in keys}
    if "calibration" in evaluated:
        headline[f"{prefix}ece"] = evaluated["calibration"]["ece"]
        headline[f"{prefix}brier"] = evaluated["calibration"]["brier"]
    for key, block in (results.get("comparison") or {}).items():
        headline[f"{prefix}delta_{key}"] = block["delta"]
    return headline


def run_evaluation(out_json: str | Path, *, model: str = "default", adapter: str | None = None, data: str = "auto",
                   limit: int | None = None, categories: Sequence[str] | None = None,
                   options: EvalOptions = EvalOptions(), task: str | None = None, include_base: bool = True,
                   kind: str = "eval", config: Config | None = None, csv_path: str | Path | None = None,
                   extra: Mapping[str, Any] | None = None, dequantize: str | None = None) -> dict[str, Any]:
    """TruthfulQA (or a task spec) for model [+ adapter], written to out_json and recorded in its folder's run.json.

    `dequantize` (model.dequantize) defaults to the config's, else "auto".
    """
    dequantize = dequantize or (config.model.dequantize if config is not None else "auto")
    out_json = Path(out_json)
    stage_name = f"eval:{task}" if task else "eval"
    settings = {"eval": {"model": model, "adapter": adapter, "data": data, "limit": limit, "task": task}}
    with recorded_stage(out_json.parent, stage_name, kind, config=config, model=model, settings=settings,
                        extra=extra) as stage:
        if task:
            spec = load_task_spec(task)
            results = evaluate_task(spec, model, adapter, None if data == "auto" else data, limit, options, include_base,
                                    dequantize=dequantize)
            write_task_results(results, out_json, csv_path)
        else:
            results = evaluate(model, adapter, data, limit, categories, options, include_base=include_base,
                               dequantize=dequantize)
            write_results(results, out_json, csv_path)
        stage["metrics"].update(eval_headline(results, f"{task}:" if task else ""))
        stage["data"][f"eval:{task}" if task else "eval"] = results["settings"]["data"]["path"]
        stage["results"][task or "truthfulqa"] = out_json
    return results
