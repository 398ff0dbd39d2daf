"""Each stage's summary.json, built in one place, with the headline numbers `yourai run` reports.

Every notebook ends by calling its stage's function here. The function decides both the full
summary and its `headline` block (name → number, or [estimate, low, high]); `yourai.pipeline`
reads that block from NN/summary.json and writes it into the run's summary.md, so no list of
keys is kept by hand anywhere else.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Mapping

HEADLINE = "headline"


def finite(value: Any) -> Any:
    """JSON has no NaN: non-finite floats become null, recursively. A single seed has no interval (faithful is
    trained for one seed), and a summary must stay readable by strict JSON parsers, not only by Python."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def write_summary(out_dir: str | Path, summary: dict[str, Any], headline: Mapping[str, Any]) -> dict[str, Any]:
    """Write <out_dir>/summary.json with its headline block first; returns what was written."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    document = finite({HEADLINE: dict(headline), **summary})
    (out_dir / "summary.json").write_text(json.dumps(document, indent=2, default=str) + "\n", encoding="utf-8")
    return document


def read_headline(summary: Mapping[str, Any]) -> dict[str, Any]:
    """The headline block of a stage summary ({} when the stage wrote none)."""
    block = summary.get(HEADLINE)
    return dict(block) if isinstance(block, Mapping) else {}


def curation(report: Mapping[str, Any], out_dir: str | Path) -> dict[str, Any]:
    """01: the funnel's ends, whether the counts reconcile, the splits, contamination."""
    reconciliation, contamination = report["reconciliation"], report["contamination"]
    summary = {
        "out_dir": str(out_dir), "records_in": reconciliation["input_records"],
        "records_out": reconciliation["output_records"], "reconciled": reconciliation["ok"],
        "splits": report["splits"], "tiers_after_balance": report["tiers"]["after_balance"],
        "rejects_by_reason": report["rejects_by_reason"], "contamination_checked": contamination["checked"],
        "contamination_dropped": contamination.get("dropped", 0), "scores": report["scores"],
    }
    headline = {key: summary[key] for key in ("records_in", "records_out", "reconciled", "contamination_dropped")}
    headline.update({f"{split}_records": n for split, n in report["splits"].items() if split != "test"})
    return write_summary(out_dir, summary, headline)


def scoring(n_docs: int, n_rejected: int, mean_by_group: Mapping[str, Any], aucs: Mapping[str, Any],
            out_dir: str | Path) -> dict[str, Any]:
    """02: how well the scores separate primary from consensus sources (AUC with CI), with and without metadata."""
    summary = {"n_docs": n_docs, "n_rejected": n_rejected, "mean_by_group": dict(mean_by_group), "auc": dict(aucs)}
    headline: dict[str, Any] = {"n_docs": n_docs, "n_rejected": n_rejected}
    for variant, result in aucs.items():
        if result:
            headline[f"{variant}: authority AUC"] = list(result["authority_auc"])
            headline[f"{variant}: entropy AUC"] = list(result["entropy_auc"])
    return write_summary(out_dir, summary, headline)


def loss_exploration(summary: Mapping[str, Any], out_dir: str | Path) -> dict[str, Any]:
    """03: the anchor's "30x" ratio and the gradient evidence (faithful changes nothing, weighted does)."""
    check = summary["gradient_check"]
    headline = {"anchor 30x ratio": summary["anchor_30x"]["ratio"],
                "max |dgrad| faithful vs plain": check["max_abs_dgrad_faithful"],
                "max |dgrad| weighted vs plain": check["max_abs_dgrad_weighted"]}
    return write_summary(out_dir, dict(summary), headline)


def training(summary: Mapping[str, Any], out_dir: str | Path) -> dict[str, Any]:
    """04: faithful ≡ plain, and what weighting does to the primary − consensus validation gap."""
    headline: dict[str, Any] = {"faithful bit-identical to plain": summary.get("faithful_bit_identical_to_plain")}
    for key in ("gap_plain", "gap_weighted", "gap_change_weighted_minus_plain"):
        if f"{key}_mean" in summary:
            headline[f"{key} (mean ± t95)"] = [summary[f"{key}_mean"], summary[f"{key}_ci95"]]
    headline.update({key: summary[key] for key in ("val_loss", "tokens_per_s") if key in summary})
    return write_summary(out_dir, dict(summary), headline)


def memory(summary: Mapping[str, Any], out_dir: str | Path) -> dict[str, Any]:
    """05: the leak slope with its interval and verdict, and what watching memory costs per step."""
    leak, overhead = summary["leak"], summary["monitor_overhead"]
    headline: dict[str, Any] = {}
    if leak.get("slope_mb_per_step") is not None:
        headline["leak slope MB/step"] = [leak["slope_mb_per_step"], leak["low"], leak["high"]]
        headline["leaking"] = leak["leaking"]
    headline["monitor overhead fraction"] = overhead["overhead_fraction"]
    return write_summary(out_dir, dict(summary), headline)


def truthfulqa(summary: Mapping[str, Any], out_dir: str | Path) -> dict[str, Any]:
    """06: MC1/MC2 per model with CIs and the adapter − base delta with its p-value."""
    headline: dict[str, Any] = {"questions": summary["n"]}
    for model in ("base", "adapter"):
        for metric, block in (summary.get(model) or {}).items():
            headline[f"{model} {metric}"] = [block["mean"], *block["ci"]]
    for metric, block in (summary.get("delta") or {}).items():
        headline[f"delta {metric}"] = [block["delta"], *block["ci"]]
        headline[f"delta {metric} p"] = block["p_value"]
    for model, block in (summary.get("calibration") or {}).items():
        headline[f"{model} MC1 ECE"] = block["ece"]
    return write_summary(out_dir, dict(summary), headline)


def sweep_analysis(summary: Mapping[str, Any], out_dir: str | Path) -> dict[str, Any]:
    """07: each arm's paired delta against the baseline arm, per metric, with its interval and what it rests on."""
    headline: dict[str, Any] = {"cells": summary["cells"], "baseline": summary["baseline"]}
    for row in summary["comparisons"]:
        headline[f"{row['arm']} {row['metric']}"] = [row["delta"], *row["ci"]]
    return write_summary(out_dir, dict(summary), headline)
