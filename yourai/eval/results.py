"""A whole TruthfulQA evaluation: questions → per-model scores → results JSON with CIs and a paired comparison.

Also the views of a results file: the headline summary, the terminal table, the per-question CSV and
the DataFrames notebook 06 plots. Statistics come from yourai.stats (questions are the sampling unit).
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
from yourai.eval.tqa_data import TQAItem, has_binary_variant, load_truthfulqa, resolve_auto, shared_v0_dir
from yourai.eval.truthfulqa import MODES, SCHEMA, TARGET_DELIMITER, EvalOptions, evaluate_model
from yourai.stats import DEFAULT_CONFIDENCE, bootstrap_mean_ci, paired_comparison


def summarise(values: Sequence[float], confidence: float = DEFAULT_CONFIDENCE, seed: int = 0) -> dict[str, Any]:
    """Mean, standard error (as lm-eval reports) and bootstrap CI of per-question scores."""
    data = np.asarray(values, dtype=np.float64)
    stderr = float(data.std(ddof=1) / np.sqrt(data.size)) if data.size > 1 else None  # JSON has no NaN
    return {"mean": float(data.mean()), "stderr": stderr, "ci": list(bootstrap_mean_ci(data, confidence, seed=seed)),
            "n": int(data.size)}


METRIC_KEYS = {"mc1": ("mc1",), "mc2": ("mc2",), "gen": ("bleu_max", "bleu_diff", "bleu_acc")}


TASK_VERSIONS = {"truthfulqa_mc1": "2.0", "truthfulqa_mc2": "3.0", "truthfulqa_gen": "3.0 (BLEU only; no ROUGE)",
                 "truthfulqa_binary": "best answer vs best incorrect answer, scored by log-likelihood"}


def metric_keys(modes: Sequence[str], binary: bool = False) -> list[str]:
    """The per-question metrics an evaluation reports: its modes', plus `binary` when the data has that variant."""
    keys = [key for mode in MODES if mode in modes for key in METRIC_KEYS[mode]]
    return keys + ["binary"] if binary and {"mc1", "mc2"} & set(modes) else keys


def result_keys(results: dict[str, Any]) -> list[str]:
    """metric_keys of a results document, as it was evaluated."""
    settings = results["settings"]
    return metric_keys(settings["modes"], settings.get("binary", False))


def select_items(items: Sequence[TQAItem], limit: int | None = None,
                 categories: Sequence[str] | None = None) -> list[TQAItem]:
    """Category filter first, then the first `limit` questions (lm-eval's --limit takes the head)."""
    chosen = list(items)
    if categories:
        known = {item.category for item in items}
        unknown = sorted(set(categories) - known)
        if unknown:
            raise ValueError(f"unknown categories {unknown}; the data has {sorted(known)}")
        chosen = [item for item in chosen if item.category in set(categories)]
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be ≥ 1, got {limit}")
    return chosen[:limit] if limit else chosen


def per_category(rows: Sequence[dict[str, Any]], items: Sequence[TQAItem], keys: Sequence[str]) -> dict[str, Any]:
    """Mean of each metric per category (questions without a category are grouped as "(none)")."""
    groups: dict[str, list[int]] = {}
    for index, item in enumerate(items):
        groups.setdefault(item.category or "(none)", []).append(index)
    return {category: {"n": len(indices), **{key: float(np.mean([rows[i][key] for i in indices])) for key in keys}}
            for category, indices in sorted(groups.items())}


def model_block(rows: Sequence[dict[str, Any]], items: Sequence[TQAItem], keys: Sequence[str], seed: int) -> dict:
    """Each metric's mean and CI, per category, and the calibration of the MC1 answers (ECE, Brier, bins)."""
    block: dict[str, Any] = {key: summarise([row[key] for row in rows], seed=seed) for key in keys}
    block["per_category"] = per_category(rows, items, keys)
    if "mc1" in keys:
        block["calibration"] = calibration([row["mc1_lls"] for row in rows], [item.mc1_labels for item in items])
    return block


def question_rows(items: Sequence[TQAItem], per_model: dict[str, list[dict]]) -> list[dict[str, Any]]:
    """Per question: its targets and, for each model, the scores and the ll of every choice."""
    return [{"id": index, "origin": item.origin, "question": item.question, "category": item.category,
             "mc1_choices": list(item.mc1_choices), "mc1_labels": list(item.mc1_labels),
             "mc2_choices": list(item.mc2_choices), "mc2_labels": list(item.mc2_labels),
             "scores": {name: rows[index] for name, rows in per_model.items()}}
            for index, item in enumerate(items)]


def build_results(items: Sequence[TQAItem], per_model: dict[str, list[dict]], settings: dict[str, Any],
                  options: EvalOptions) -> dict[str, Any]:
    """The results document: headline mc1/mc2 of the evaluated model, per-model blocks, the paired delta."""
    keys = metric_keys(options.modes, settings.get("binary", False))
    models = {name: model_block(rows, items, keys, options.seed) for name, rows in per_model.items()}
    evaluated = "adapter" if "adapter" in per_model else "base"
    comparison = None
    if "adapter" in per_model and "base" in per_model:
        comparison = {key: paired_comparison([r[key] for r in per_model["base"]], [r[key] for r in per_model["adapter"]],
                                             seed=options.seed) for key in keys}
    headline = {key: models[evaluated][key]["mean"] for key in ("mc1", "mc2", "binary") if key in keys}
    return {"schema": SCHEMA, **headline, "n": len(items), "evaluated": evaluated, "settings": settings,
            "models": models, "comparison": comparison, "questions": question_rows(items, per_model)}


def describe_data(data: str | Path) -> dict[str, Any]:
    """Which file was scored, its SHA-256, and whether it is the benchmark (lives under ../shared)."""
    path = resolve_auto()[0] if str(data) == "auto" else data
    if str(path).startswith("hub:"):
        return {"path": str(path), "sha256": None, "benchmark": True}
    path = Path(path).resolve()
    benchmark_root = shared_v0_dir().parent.resolve()
    return {"path": str(path), "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
            "benchmark": benchmark_root in path.parents}


def run_settings(model: str, adapter: str | None, data: str | Path, limit: int | None,
                 categories: Sequence[str] | None, options: EvalOptions) -> dict[str, Any]:
    return {"model": model, "adapter": adapter, "data": describe_data(data), "limit": limit, "binary": False,
            "categories": list(categories) if categories else None, **asdict(options),
            "target_delimiter": "" if options.chat_template else TARGET_DELIMITER,
            "prompt": "lm-eval TruthfulQA 6-shot QA primer", "task_versions": TASK_VERSIONS}


def per_question_table(results: dict[str, Any]) -> list[dict[str, Any]]:
    """One wide row per question: each model's scores side by side, and their difference."""
    keys, names = result_keys(results), list(results["models"])
    table = []
    for question in results["questions"]:
        row = {"id": question["id"], "category": question["category"], "question": question["question"]}
        for name in names:
            scores = question["scores"][name]
            row.update({f"{key}_{name}": scores[key] for key in keys})
            if "completion" in scores:
                row[f"completion_{name}"] = scores["completion"]
        if results["comparison"]:
            row.update({f"{key}_delta": row[f"{key}_adapter"] - row[f"{key}_base"] for key in keys})
        table.append(row)
    return table


def output_paths(out_json: str | Path, out_csv: str | Path | None = None) -> tuple[Path, Path]:
    """(results JSON, per-question CSV) paths, refused up front when they cannot be files, so a long
    evaluation never ends in a write error."""
    out_json = Path(out_json)
    _check_file_path(out_json, "--out", "truthfulqa.json")
    out_csv = Path(out_csv) if out_csv else out_json.with_suffix(".per_question.csv")
    _check_file_path(out_csv, "--csv", "per_question.csv")
    return out_json, out_csv


def _check_file_path(path: Path, what: str, example: str) -> None:
    if path.is_dir() or not path.name:
        raise ValueError(f"{what} {path} is a directory; give a file path such as {path / example}")
    if any(parent.exists() and not parent.is_dir() for parent in path.parents):
        raise ValueError(f"{what} {path}: a parent of it is a file, not a directory")


def write_results(results: dict[str, Any], out_json: str | Path, out_csv: str | Path | None = None) -> None:
    """Results JSON and the per-question CSV (default: beside the JSON, `<stem>.per_question.csv`)."""
    out_json, out_csv = output_paths(out_json, out_csv)
    out_json.parent.mkdir(parents=True, exist_ok=True)
    out_json.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    table = per_question_table(results)
    with out_csv.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(table[0]))
        writer.writeheader()
        writer.writerows(table)


def summary(results: dict[str, Any]) -> dict[str, Any]:
    """The small headline: each model's mean and CI per metric, its calibration, and the adapter − base delta."""
    keys = result_keys(results)
    out: dict[str, Any] = {"n": results["n"], "data": results["settings"]["data"]["path"],
                           "benchmark": results["settings"]["data"]["benchmark"], "evaluated": results["evaluated"]}
    for name, block in results["models"].items():
        out[name] = {key: {"mean": block[key]["mean"], "ci": block[key]["ci"]} for key in keys}
        if "calibration" in block:
            out.setdefault("calibration", {})[name] = {k: block["calibration"][k] for k in ("ece", "brier", "n")}
    out["delta"] = ({key: {k: results["comparison"][key][k] for k in ("delta", "ci", "p_value")} for key in keys}
                    if results["comparison"] else None)
    return out


def consistency_checks(results: dict[str, Any]) -> dict[str, bool]:
    """Facts about a results document that hold whatever the weights' last bits are.

    Notebook 06 asks nbval to compare these rather than the scores: MC1 and MC2 move with the model's
    float rounding (a default built under another BLAS shifts the MC2 interval in the third decimal),
    but every model scoring every question, scores being probabilities and each interval holding its
    mean are true on any platform, and false only when the evaluation itself is broken.
    """
    keys = metric_keys(results["settings"]["modes"])
    blocks = [block[key] for block in results["models"].values() for key in keys if key in ("mc1", "mc2")]
    return {
        "every model scored every question": all(block["n"] == results["n"] for block in blocks),
        "MC1 and MC2 and their intervals lie in [0, 1]": all(0.0 <= value <= 1.0 for block in blocks
                                                            for value in (block["mean"], *block["ci"])),
        "each interval holds its mean": all(block["ci"][0] <= block["mean"] <= block["ci"][1] for block in blocks),
    }


def format_summary(results: dict[str, Any]) -> str:
    """A plain-text table for the terminal."""
    keys, data = result_keys(results), results["settings"]["data"]
    label = "TruthfulQA" if data["benchmark"] else "practice set (NOT TruthfulQA)"
    lines = [f"{label}: {data['path']}  n={results['n']}  BOS={results['settings']['add_bos']}  "
             f"chat_template={results['settings']['chat_template']}", f"{'model':<8}" + "".join(f"{k:>26}" for k in keys)]
    for name, block in results["models"].items():
        cells = "".join(f"{block[k]['mean']:>10.4f} [{block[k]['ci'][0]:.3f}, {block[k]['ci'][1]:.3f}]" for k in keys)
        lines.append(f"{name:<8}{cells}")
    if results["comparison"]:
        comparison = results["comparison"]
        lines.append("delta   " + "".join(f"{comparison[k]['delta']:>+10.4f} p={comparison[k]['p_value']:<12.4f}"
                                          for k in keys))
    for name, block in results["models"].items():
        if "calibration" in block:
            lines.append(f"{name:<8}MC1 calibration: ECE {block['calibration']['ece']:.4f} "
                         f"({block['calibration']['n_bins']} bins), Brier {block['calibration']['brier']:.4f}")
    return "\n".join(lines)


def delta_errorbars(comparison: dict[str, Any]) -> tuple[list[str], list[float], list[list[float]]]:
    """(metrics, deltas, [[below], [above]]) for matplotlib's errorbar from a results `comparison` block."""
    metrics = list(comparison)
    deltas = [comparison[m]["delta"] for m in metrics]
    below = [delta - comparison[m]["ci"][0] for m, delta in zip(metrics, deltas)]
    above = [comparison[m]["ci"][1] - delta for m, delta in zip(metrics, deltas)]
    return metrics, deltas, [below, above]


def results_frame(results: dict[str, Any]) -> Any:
    """Models × metrics (mean, CI) as a DataFrame for notebooks; a "delta" row when there is an adapter."""
    import pandas as pd

    keys, records = result_keys(results), []
    for name, block in results["models"].items():
        records.append({"model": name, "n": results["n"], **{k: block[k]["mean"] for k in keys},
                        **{f"{k}_ci": tuple(round(v, 3) for v in block[k]["ci"]) for k in keys}})
    if results["comparison"]:
        comparison = results["comparison"]
        records.append({"model": "delta", "n": results["n"], **{k: comparison[k]["delta"] for k in keys},
                        **{f"{k}_ci": tuple(round(v, 3) for v in comparison[k]["ci"]) for k in keys},
                        **{f"{k}_p": comparison[k]["p_value"] for k in keys}})
    return pd.DataFrame.from_records(records).set_index("model")


def category_frame(results: dict[str, Any], metric: str = "mc2") -> Any:
    """Categories × models for one metric, with question counts, for the per-category chart."""
    import pandas as pd

    frame = pd.DataFrame({name: {cat: row[metric] for cat, row in block["per_category"].items()}
                          for name, block in results["models"].items()})
    first = next(iter(results["models"].values()))
    frame.insert(0, "n", pd.Series({cat: row["n"] for cat, row in first["per_category"].items()}))
    return frame.sort_values("n", ascending=False)


def evaluate(model: str = "default", adapter: str | None = None, data: str | Path = "auto",
             limit: int | None = None, categories: Sequence[str] | None = None,
             options: EvalOptions = EvalOptions(), include_base: bool = True, dequantize: str = "auto") -> dict[str, Any]:
    """Score the base model and, when `adapter` is given, base + adapter on the same questions.

    `include_base=False` (with an adapter) skips the base model: a sweep compares its arms with each
    other, and the base scores are the same in every cell. `adapter` may be an adapter directory or a
    `yourai train` run directory (its adapters/ is used); model and adapter files are checked before any
    question is scored.
    """
    from yourai.models import load_model, resolve_adapter_dir, resolve_model

    resolve_model(model)
    adapter = str(resolve_adapter_dir(adapter)) if adapter is not None else None
    items = select_items(load_truthfulqa(data), limit, categories)
    runs = {"base": None, **({"adapter": str(adapter)} if adapter is not None else {})}
    if adapter is not None and not include_base:
        del runs["base"]
    per_model = {}
    for name, adapter_path in runs.items():
        lm, tokenizer = load_model(model, adapter_path=adapter_path, dequantize=dequantize)
        per_model[name] = evaluate_model(lm, tokenizer, items, options, name=name)
        del lm  # one model in memory at a time
    settings = {**run_settings(model, adapter, data, limit, categories, options), "binary": has_binary_variant(items),
                "dequantize": dequantize}
    return build_results(items, per_model, settings, options)
