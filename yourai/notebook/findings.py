"""Each notebook's "what we learned" numbers, rendered from the run that produced them.

A number typed into notebook markdown goes stale the moment a setting, the model or the data changes;
these functions turn a stage's summary into the sentences that carry numbers, so every figure a reader
sees comes from the cells above it. The notebook shows the result with `IPython.display.Markdown`.
Each sentence states what the numbers say (a direction is chosen by comparing them, never assumed).
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np

# The reference scorer's separation on the real corpora (anchor_your_ai.md §2): a published number.
REFERENCE_AUC = {"authority": 0.787, "entropy": 0.999}


def _compare(ours: float, theirs: float, word: str = "above") -> str:
    opposite = {"above": "below", "higher": "lower", "lower": "higher", "widened": "narrowed"}[word]
    return word if ours > theirs else opposite if ours < theirs else "equal to"


def scoring(aucs: Mapping[str, Any]) -> str:
    """02: primary-vs-consensus ROC AUC with metadata and from the text alone, against the reference scorer."""
    lines = []
    for variant, result in aucs.items():
        if not result:
            lines.append(f"- **{variant}**: no primary/consensus pair in this data, so no AUC.")
            continue
        auth, ent = result["authority_auc"], result["entropy_auc"]
        lines.append(
            f"- **{variant}**: authority AUC {auth[0]:.3f} [{auth[1]:.3f}, {auth[2]:.3f}] "
            f"({_compare(auth[0], REFERENCE_AUC['authority'])} the reference's {REFERENCE_AUC['authority']}), "
            f"entropy AUC {ent[0]:.3f} [{ent[1]:.3f}, {ent[2]:.3f}] "
            f"({_compare(ent[0], REFERENCE_AUC['entropy'])} the reference's {REFERENCE_AUC['entropy']}); "
            f"{result['n_primary']} primary vs {result['n_consensus']} consensus records.")
    return "\n".join(lines)


def loss_exploration(summary: Mapping[str, Any]) -> str:
    """03: the mirrored square at the anchor's points, the "30x" ratio, and the gradient evidence."""
    terms = {(row["w_auth"], row["H_bits"]): row["L_emp (alpha=2.7)"] for row in summary["reference_values"]}
    check, anchor = summary["gradient_check"], summary["anchor_30x"]
    faithful = check["max_abs_dgrad_faithful"]
    return "\n".join([
        f"- The anchor's \"30×\" is {anchor['ratio']:.1f}× for its two points (patent {anchor['patent_term']:.2f}, "
        f"Wikipedia {anchor['wiki_term']:.3f}).",
        f"- The square mirrors the consensus side: `(0.99, 0.0)` scores {terms[(0.99, 0.0)]:.1f} while "
        f"`(0.9, 1.0)` scores {terms[(0.9, 1.0)]:.1f}.",
        f"- Faithful vs plain gradient: max |Δgrad| = {faithful}"
        + (" — identical bit for bit, the term is inert." if faithful == 0.0 else " — NOT identical: investigate."),
        f"- Weighted vs plain: max |Δgrad| = {check['max_abs_dgrad_weighted']:.3e}; weighted vs uniform weights: "
        f"{check['max_abs_dgrad_weighted_vs_uniform']:.3e} (largest plain gradient {check['max_abs_grad_plain']:.3e}).",
    ])


def _mean(rows: Sequence[Mapping[str, Any]], objective: str, key: str) -> float | None:
    values = [row[key] for row in rows if row["objective"] == objective and row.get(key) is not None]
    return float(np.mean(values)) if values else None


def mean_with_interval(mean: float, half_width: float) -> str:
    """`mean ± half` for a seed-level t-interval, or a plain statement when one seed gives no interval
    (faithful is trained for the first seed only)."""
    if math.isfinite(half_width):
        return f"{mean:+.4f} ± {half_width:.4f}"
    return f"{mean:+.4f} (one seed: no interval)"


def training(summary: Mapping[str, Any], rows: Sequence[Mapping[str, Any]]) -> str:
    """04: what weighting did to each tier's validation loss and to the gap, against plain CE, over seeds."""
    seeds, steps = summary.get("seeds", []), summary.get("steps")
    lines = [f"On this run ({steps} steps, {len(seeds)} seed(s); plain and weighted for every seed, faithful for the "
             f"first — its gradient is zero, so one run shows what every seed would):"]
    identical = summary.get("faithful_bit_identical_to_plain")
    if identical is not None:
        lines.append(f"- Faithful adapters bit-identical to plain CE: **{identical}**.")
    for key, label in (("val_loss_primary", "primary-tier"), ("val_loss_consensus", "consensus-tier"),
                       ("val_loss", "overall")):
        plain, weighted = _mean(rows, "plain", key), _mean(rows, "weighted", key)
        if plain is not None and weighted is not None:
            lines.append(f"- Weighting made the {label} validation loss {_compare(weighted, plain, 'higher')}: "
                         f"{weighted:.2f} vs {plain:.2f} under plain CE.")
    if "gap_change_weighted_minus_plain_mean" in summary:
        change, half = summary["gap_change_weighted_minus_plain_mean"], summary["gap_change_weighted_minus_plain_ci95"]
        plain_gap, weighted_gap = summary.get("gap_plain_mean", 0.0), summary.get("gap_weighted_mean", 0.0)
        word = _compare(abs(weighted_gap), abs(plain_gap), "widened")
        lines.append(f"- The primary − consensus gap changed by {change:+.2f} ± {half:.2f} (95 % t-interval over "
                     f"seeds): weighting {word} it" + (" — within noise." if abs(change) <= half else "."))
    return "\n".join(lines)


def memory(summary: Mapping[str, Any], savings: Sequence[Mapping[str, Any]]) -> str:
    """05: what watching memory costs, whether the clean run creeps, what checkpointing saves."""
    overhead, leak = summary["monitor_overhead"], summary["leak"]
    lines = [f"- The memory callback cost {overhead['monitor_ms_per_step']:.3f} ms per step, "
             f"{100 * overhead['overhead_fraction']:.2f} % of a {overhead['step_ms']:.1f} ms step."]
    if leak.get("slope_mb_per_step") is not None:
        lines.append(f"- RSS slope of the monitored run after warm-up: {leak['slope_mb_per_step']:.3f} MB/step "
                     f"(interval {leak['low']:.3f}..{leak['high']:.3f}); leaking: {leak['leaking']}.")
    saved = [row["saved_fraction"] for row in savings]
    if saved:
        lines.append(f"- Gradient checkpointing cut the step's peak by {100 * min(saved):.0f}–{100 * max(saved):.0f} % "
                     f"across the {len(saved)} shapes swept.")
    return "\n".join(lines)


def truthfulqa(summary: Mapping[str, Any]) -> str:
    """06: the scores with their intervals, how wide an interval this many questions give, the delta."""
    lines = [f"- {summary['n']} questions ({'TruthfulQA' if summary['benchmark'] else 'the practice set, NOT TruthfulQA'})."]
    for model in ("base", "adapter"):
        for metric, block in (summary.get(model) or {}).items():
            low, high = block["ci"]
            lines.append(f"- {model} {metric}: {block['mean']:.3f} [{low:.3f}, {high:.3f}] "
                         f"(an interval ±{(high - low) / 2:.3f} wide at this many questions).")
    for metric, block in (summary.get("delta") or {}).items():
        low, high = block["ci"]
        verdict = "excludes 0" if low > 0 or high < 0 else "includes 0: no detectable change"
        lines.append(f"- delta {metric} (adapter − base): {block['delta']:+.4f} [{low:+.4f}, {high:+.4f}], "
                     f"p = {block['p_value']:.3f}; the interval {verdict}.")
    return "\n".join(lines)
