"""A sweep's results: results.csv (one row per cell), per_question.csv, and the summary with paired intervals.

Each arm is compared with the baseline arm over *matched* units: the cells trained with the same seed,
scored on the same questions. Per-question metrics (mc1, mc2, binary, a task's acc, …) get the two-way
paired bootstrap over seeds and questions; per-run metrics (validation losses, the tier gap) the
bootstrap over seeds (yourai.stats.paired_bootstrap_ci). Cells not finished yet are listed with their
status and left out of the intervals, so a partial sweep's summary is honest about what it rests on.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from yourai.runs.compare import per_question_scores
from yourai.runs.record import effective_status, read_record
from yourai.stats import paired_bootstrap_ci

# Per-run metrics compared across arms: validation per tier and the final token-mean training CE. Not the
# training objective ("train_loss"): each objective has its own scale (the faithful one adds a constant).
RUN_LEVEL_METRICS = ("val_loss", "val_gap", "val_loss_primary", "val_loss_consensus", "train_ce")
RESULTS_CSV, QUESTIONS_CSV, SUMMARY_JSON, SUMMARY_MD = "results.csv", "per_question.csv", "summary.json", "summary.md"


def load_sweep(sweep_dir: str | Path) -> dict[str, Any]:
    """The sweep.json `yourai sweep` wrote (its spec, cells, baseline)."""
    path = Path(sweep_dir) / "sweep.json"
    if not path.is_file():
        raise ValueError(f"{sweep_dir}: no sweep.json (not the output folder of `yourai sweep`)")
    return json.loads(path.read_text(encoding="utf-8"))


def cells_frame(sweep_dir: str | Path) -> Any:
    """One row per cell: its arm, seed, grid values, status, time, config hash and every headline metric."""
    import pandas as pd

    sweep_dir, sweep = Path(sweep_dir), load_sweep(sweep_dir)
    rows = []
    for cell in sweep["cells"]:
        record = read_record(sweep_dir / "cells" / cell["id"])
        stages = record.get("stages") or {}
        rows.append({"cell": cell["id"], "arm": cell["arm"], "seed": cell["seed"], **cell["values"],
                     "status": effective_status(record) if record else "pending",
                     "seconds": round(sum(stage.get("seconds") or 0 for stage in stages.values()), 1),
                     "config_hash": (record.get("config_hash") or "")[:10], **(record.get("metrics") or {})})
    return pd.DataFrame(rows)


def questions_frame(sweep_dir: str | Path) -> Any:
    """Long table of every finished cell's per-question scores: cell, arm, seed, eval, question, metric, score."""
    import pandas as pd

    sweep_dir, sweep = Path(sweep_dir), load_sweep(sweep_dir)
    rows = []
    for cell in sweep["cells"]:
        cell_dir = sweep_dir / "cells" / cell["id"]
        record = read_record(cell_dir)
        if not record or effective_status(record) != "ok":
            continue
        for name, relative in (record.get("results") or {}).items():
            if name == "metrics":
                continue
            document = json.loads((cell_dir / relative).read_text(encoding="utf-8"))
            for metric, scores in per_question_scores(document).items():
                rows.extend({"cell": cell["id"], "arm": cell["arm"], "seed": cell["seed"], "eval": name,
                             "question": origin or question, "metric": metric, "score": score}
                            for (origin, question), score in scores.items())
    columns = ["cell", "arm", "seed", "eval", "question", "metric", "score"]
    return pd.DataFrame(rows, columns=columns)


def _matrix(questions: Any, arm: str, baseline: str) -> Any:
    """seeds × questions matrix of arm − baseline over the seeds and questions both have."""
    table = questions.pivot_table(index=["arm", "seed"], columns="question", values="score", aggfunc="first")
    arm_rows, base_rows = table.loc[arm], table.loc[baseline]
    seeds = sorted(set(arm_rows.index) & set(base_rows.index))
    difference = (arm_rows.loc[seeds] - base_rows.loc[seeds]).dropna(axis=1)
    return difference


def paired_arm_deltas(cells: Any, questions: Any, baseline: str, seed: int = 0) -> list[dict[str, Any]]:
    """Every arm against the baseline arm, per metric, with two-way (or seed-only) paired bootstrap CIs."""
    finished = cells[cells["status"] == "ok"] if not cells.empty else cells
    rows = []
    for arm in [a for a in dict.fromkeys(cells["arm"]) if a != baseline] if not cells.empty else []:
        for (eval_name, metric), part in questions.groupby(["eval", "metric"], sort=False):
            if not {arm, baseline} <= set(part["arm"]):
                continue
            difference = _matrix(part, arm, baseline)
            if difference.size:
                rows.append({"arm": arm, "vs": baseline, "eval": eval_name, "metric": metric,
                             **paired_bootstrap_ci(difference.to_numpy(), seed=seed)})
        for metric in (m for m in RUN_LEVEL_METRICS if m in finished.columns):
            by_seed = finished.pivot_table(index="seed", columns="arm", values=metric, aggfunc="first")
            if {arm, baseline} <= set(by_seed.columns):
                pairs = (by_seed[arm] - by_seed[baseline]).dropna()
                if len(pairs):
                    rows.append({"arm": arm, "vs": baseline, "eval": "train", "metric": metric,
                                 **paired_bootstrap_ci(pairs.to_numpy()[:, None], seed=seed)})
    return rows


NOT_METRICS = {"cell", "arm", "seed", "status", "seconds", "config_hash", "steps", "tokens_per_s"}  # ids and timing


def arm_means(cells: Any, grid_keys: Any = ()) -> dict[str, dict[str, Any]]:
    """Per arm: finished seeds and the mean of each headline metric over them (timing left out: it is not a result)."""
    finished = cells[cells["status"] == "ok"] if not cells.empty else cells
    skip = NOT_METRICS | set(grid_keys)
    means: dict[str, dict[str, Any]] = {}
    for arm, part in finished.groupby("arm", sort=False):
        numeric = part.drop(columns=[c for c in part.columns if c in skip]).select_dtypes("number")
        means[arm] = {"n_seeds": int(len(part)), **{k: float(v) for k, v in numeric.mean().items()}}
    return means


def format_deltas(comparisons: list[dict[str, Any]]) -> str:
    """The comparison table a person reads (terminal and summary.md)."""
    lines = ["| arm | vs | eval | metric | delta | 95% CI | seeds | questions |", "|---|---|---|---|---|---|---|---|"]
    for row in comparisons:
        low, high = row["ci"]
        lines.append(f"| {row['arm']} | {row['vs']} | {row['eval']} | {row['metric']} | {row['delta']:+.4f} | "
                     f"[{low:+.4f}, {high:+.4f}] | {row['n_seeds']} | {row['n_questions']} |")
    return "\n".join(lines)


def write_sweep_results(sweep_dir: str | Path, seed: int = 0) -> dict[str, Any]:
    """results.csv, per_question.csv, summary.json and summary.md of the sweep as it stands now."""
    sweep_dir, sweep = Path(sweep_dir), load_sweep(sweep_dir)
    cells, questions = cells_frame(sweep_dir), questions_frame(sweep_dir)
    cells.to_csv(sweep_dir / RESULTS_CSV, index=False)
    questions.to_csv(sweep_dir / QUESTIONS_CSV, index=False)
    comparisons = paired_arm_deltas(cells, questions, sweep["baseline"], seed)
    status_counts = cells["status"].value_counts().to_dict() if not cells.empty else {}
    summary = {"name": sweep["name"], "baseline": sweep["baseline"], "seed_key": sweep["seed_key"],
               "cells": len(cells), "status": status_counts, "arms": arm_means(cells, sweep["grid"]), "comparisons": comparisons}
    (sweep_dir / SUMMARY_JSON).write_text(json.dumps(summary, indent=1, default=str) + "\n", encoding="utf-8")
    counts = ", ".join(f"{n} {status}" for status, n in status_counts.items())
    (sweep_dir / SUMMARY_MD).write_text(
        f"# sweep `{sweep['name']}`\n\n{len(cells)} cells ({counts}); baseline arm: `{sweep['baseline']}`; "
        f"replicates: `{sweep['seed_key']}`.\n\nPaired deltas (arm − baseline) with two-way bootstrap 95% "
        f"intervals over matched seeds and questions:\n\n{format_deltas(comparisons)}\n", encoding="utf-8")
    return summary
