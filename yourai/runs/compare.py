"""Compare runs: which settings differ, their headline numbers side by side, and paired deltas on shared eval sets.

Two runs share an eval set when each has a results file of the same name (`truthfulqa`, or a task
name) scored on the same data file (equal SHA-256): then each question's score in one run is paired
with the same question's score in the other, and the delta of every later run against the first gets
a paired-bootstrap interval and a sign-flip p-value (yourai.stats.paired_comparison).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from yourai.runs.record import read_record
from yourai.runs.registry import flatten
from yourai.stats import paired_comparison

VOLATILE_CONFIG_KEYS = ("run.name",)  # differ between any two runs; not a difference in what was done


def load_runs(run_dirs: Sequence[str | Path]) -> list[tuple[Path, dict]]:
    """(run dir, record) for each directory; a directory without run.json is an error naming it."""
    loaded = []
    for run_dir in map(Path, run_dirs):
        record = read_record(run_dir)
        if not record:
            raise ValueError(f"{run_dir}: no run.json (not a yourai run directory)")
        loaded.append((run_dir, record))
    return loaded


def labels(runs: Sequence[tuple[Path, dict]]) -> list[str]:
    """Short unique column names: the folder names, or the full paths when folder names repeat."""
    names = [run_dir.name for run_dir, _ in runs]
    return names if len(set(names)) == len(names) else [str(run_dir) for run_dir, _ in runs]


def config_differences(runs: Sequence[tuple[Path, dict]]) -> Any:
    """Settings × runs for every dotted config key whose value is not the same in all runs."""
    import pandas as pd

    flats = [flatten(record.get("config") or {}) for _, record in runs]
    keys = sorted(set().union(*flats) - set(VOLATILE_CONFIG_KEYS))
    differing = [key for key in keys if len({json.dumps(flat.get(key), sort_keys=True, default=str)
                                              for flat in flats}) > 1]
    return pd.DataFrame({label: [flat.get(key) for key in differing] for label, flat in zip(labels(runs), flats)},
                        index=pd.Index(differing, name="setting"))


def metrics_side_by_side(runs: Sequence[tuple[Path, dict]]) -> Any:
    """Headline metrics × runs (blank where a run did not measure one)."""
    import pandas as pd

    columns = {label: record.get("metrics") or {} for label, (_, record) in zip(labels(runs), runs)}
    keys = list(dict.fromkeys(key for metrics in columns.values() for key in metrics))
    return pd.DataFrame({label: [metrics.get(key) for key in keys] for label, metrics in columns.items()},
                        index=pd.Index(keys, name="metric"))


def per_question_scores(results: dict[str, Any]) -> dict[str, dict[tuple[str, str], float]]:
    """{metric: {(origin, question): score}} of the evaluated model of a TruthfulQA or task results file."""
    evaluated = results["evaluated"]
    scores: dict[str, dict[tuple[str, str], float]] = {}
    for question in results["questions"]:
        key = (question.get("origin", ""), question["question"])
        for metric, value in question["scores"][evaluated].items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                scores.setdefault(metric, {})[key] = float(value)
    return scores


def _results_file(run_dir: Path, record: dict, name: str) -> dict[str, Any]:
    return json.loads((run_dir / record["results"][name]).read_text(encoding="utf-8"))


def paired_deltas(runs: Sequence[tuple[Path, dict]], seed: int = 0) -> list[dict[str, Any]]:
    """Each later run minus the first, per metric, on every eval set all runs share (same name, same data hash)."""
    shared = set.intersection(*(set(record.get("results") or {}) for _, record in runs)) - {"metrics"}
    rows = []
    names = labels(runs)
    for name in sorted(shared):
        documents = [_results_file(run_dir, record, name) for run_dir, record in runs]
        hashes = {document["settings"]["data"].get("sha256") for document in documents}
        if len(hashes) != 1 or None in hashes:
            continue  # different files under one name: nothing to pair
        scores = [per_question_scores(document) for document in documents]
        for metric in sorted(set.intersection(*(set(s) for s in scores))):
            questions = sorted(set.intersection(*(set(s[metric]) for s in scores)))
            if not questions:
                continue
            first = [scores[0][metric][q] for q in questions]
            for label, other in zip(names[1:], scores[1:]):
                result = paired_comparison(first, [other[metric][q] for q in questions], seed=seed)
                rows.append({"eval": name, "metric": metric, "run": label, "vs": names[0], **result})
    return rows


def comparison(run_dirs: Sequence[str | Path], seed: int = 0) -> dict[str, Any]:
    """Everything `yourai compare` shows, as data: config differences, metrics, paired deltas."""
    runs = load_runs(run_dirs)
    if len(runs) < 2:
        raise ValueError("compare needs at least two run directories")
    return {"runs": [str(run_dir) for run_dir, _ in runs], "config": config_differences(runs),
            "metrics": metrics_side_by_side(runs), "deltas": paired_deltas(runs, seed)}
