"""Score a multiple-choice task spec (yourai.eval.tasks) with the fast TruthfulQA scorer, base vs adapter.

Metrics (per question, from the summed log-likelihood ll of `target_delimiter + choice` given the prompt):
- acc: 1 if the highest-ll choice is a true one (first maximum wins) — MC1's rule;
- acc_norm: the same on ll / len(choice) in characters (lm-eval's length normalisation);
- mc2: softmax(ll) mass on the true choices — MC2's rule.
Single-answer tasks also report calibration (ECE with bins, Brier) of the acc answers.
"""

from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from yourai.eval.calibration import calibration
from yourai.eval.results import per_category, summarise
from yourai.eval.tasks import MCItem, TaskSpec, load_task_items, spec_dict
from yourai.eval.truthfulqa import EvalOptions, encode_pair, mc2_score, score_with_options
from yourai.stats import paired_comparison

TASK_SCHEMA = "yourai.task/1"


def question_scores(lls: Sequence[float], item: MCItem, metrics: Sequence[str]) -> dict[str, Any]:
    """The requested metrics of one question from its choices' log-likelihoods."""
    row: dict[str, Any] = {"lls": [float(ll) for ll in lls]}
    for metric in metrics:
        if metric == "acc":
            row["acc"] = float(item.labels[int(np.argmax(lls))] == 1)
        elif metric == "acc_norm":
            normed = np.asarray(lls, dtype=np.float64) / np.array([len(choice) for choice in item.choices])
            row["acc_norm"] = float(item.labels[int(np.argmax(normed))] == 1)
        elif metric == "mc2":
            row["mc2"] = mc2_score(lls, item.labels)
    return row


def score_task(model: Any, tokenizer: Any, spec: TaskSpec, items: Sequence[MCItem], options: EvalOptions,
               desc: str = "task") -> list[dict[str, Any]]:
    """Per question: each metric of the spec and the ll of every choice."""
    requests, owners = [], []
    for index, item in enumerate(items):
        for choice_index, choice in enumerate(item.choices):
            requests.append(encode_pair(tokenizer, item.context, spec.target_delimiter + choice, options.add_bos))
            owners.append((index, choice_index))
    lls = score_with_options(model, requests, options, desc)
    per_item: list[list[float]] = [[0.0] * len(item.choices) for item in items]
    for (index, choice_index), ll in zip(owners, lls):
        per_item[index][choice_index] = float(ll)
    return [question_scores(item_lls, item, spec.metrics) for item_lls, item in zip(per_item, items)]


def _single_answer(items: Sequence[MCItem]) -> bool:
    return all(item.labels.count(1) == 1 for item in items)


def model_block(rows: Sequence[dict], items: Sequence[MCItem], metrics: Sequence[str], seed: int) -> dict[str, Any]:
    block: dict[str, Any] = {metric: summarise([row[metric] for row in rows], seed=seed) for metric in metrics}
    block["per_category"] = per_category(rows, items, metrics)
    if _single_answer(items):
        block["calibration"] = calibration([row["lls"] for row in rows], [item.labels for item in items])
    return block


def build_task_results(spec: TaskSpec, items: Sequence[MCItem], per_model: dict[str, list[dict]],
                       settings: dict[str, Any], seed: int) -> dict[str, Any]:
    """The results document of a task: like TruthfulQA's, keyed by the spec's metrics."""
    metrics = list(spec.metrics)
    models = {name: model_block(rows, items, metrics, seed) for name, rows in per_model.items()}
    evaluated = "adapter" if "adapter" in per_model else "base"
    comparison = None
    if {"base", "adapter"} <= set(per_model):
        comparison = {m: paired_comparison([r[m] for r in per_model["base"]], [r[m] for r in per_model["adapter"]],
                                           seed=seed) for m in metrics}
    questions = [{"id": index, "origin": item.origin, "question": item.question, "category": item.category,
                  "choices": list(item.choices), "labels": list(item.labels),
                  "scores": {name: rows[index] for name, rows in per_model.items()}}
                 for index, item in enumerate(items)]
    return {"schema": TASK_SCHEMA, "task": spec.name, **{m: models[evaluated][m]["mean"] for m in metrics},
            "n": len(items), "evaluated": evaluated, "settings": settings, "spec": spec_dict(spec),
            "models": models, "comparison": comparison, "questions": questions}


def evaluate_task(spec: TaskSpec, model: str = "default", adapter: str | None = None, data: str | Path | None = None,
                  limit: int | None = None, options: EvalOptions = EvalOptions(),
                  include_base: bool = True, dequantize: str = "auto") -> dict[str, Any]:
    """Score the task for the base model and, with an adapter, base + adapter on the same questions.

    `include_base=False` (with an adapter) scores the adapter only, as sweep cells do; `dequantize` is
    model.dequantize.
    """
    from yourai.models import load_model

    if adapter is not None and not Path(adapter).is_dir():
        raise ValueError(f"{adapter}: adapter directory not found")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be ≥ 1, got {limit}")
    if options.chat_template:
        raise ValueError(f"task {spec.name}: chat templates are not supported for task specs; score without one")
    items, path = load_task_items(spec, data)
    items = items[:limit] if limit else items
    per_model = {}
    models = {"base": None, **({"adapter": str(adapter)} if adapter else {})}
    if adapter and not include_base:
        del models["base"]
    for name, adapter_path in models.items():
        lm, tokenizer = load_model(model, adapter_path=adapter_path, dequantize=dequantize)
        per_model[name] = score_task(lm, tokenizer, spec, items, options, desc=f"{name} {spec.name}")
        del lm
    settings = {"model": model, "adapter": adapter, "limit": limit, **asdict(options),
                "data": {"path": str(path.resolve()), "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}}
    return build_task_results(spec, items, per_model, settings, options.seed)


def write_task_results(results: dict[str, Any], out_json: str | Path, out_csv: str | Path | None = None) -> Path:
    """Results JSON and a per-question CSV beside it (`<stem>.per_question.csv`); returns the CSV path."""
    out_json = Path(out_json)
    out_json.parent.mkdir(parents=True, exist_ok=True)
    out_json.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    out_csv = Path(out_csv) if out_csv else out_json.with_suffix(".per_question.csv")
    metrics, names = list(results["spec"]["metrics"]), list(results["models"])
    with out_csv.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "category", "question"] + [f"{m}_{name}" for name in names for m in metrics])
        for question in results["questions"]:
            writer.writerow([question["id"], question["category"], question["question"]]
                            + [question["scores"][name][m] for name in names for m in metrics])
    return out_csv


def format_task_summary(results: dict[str, Any]) -> str:
    """A plain-text table for the terminal: each model's metrics with CIs, the delta, calibration."""
    metrics = list(results["spec"]["metrics"])
    lines = [f"task {results['task']}: {results['settings']['data']['path']}  n={results['n']}",
             f"{'model':<8}" + "".join(f"{m:>26}" for m in metrics)]
    for name, block in results["models"].items():
        lines.append(f"{name:<8}" + "".join(f"{block[m]['mean']:>10.4f} [{block[m]['ci'][0]:.3f}, {block[m]['ci'][1]:.3f}]"
                                            for m in metrics))
    if results["comparison"]:
        lines.append("delta   " + "".join(f"{results['comparison'][m]['delta']:>+10.4f} "
                                          f"p={results['comparison'][m]['p_value']:<12.4f}" for m in metrics))
    for name, block in results["models"].items():
        if "calibration" in block:
            lines.append(f"{name:<8}calibration: ECE {block['calibration']['ece']:.4f}, "
                         f"Brier {block['calibration']['brier']:.4f}")
    return "\n".join(lines)
