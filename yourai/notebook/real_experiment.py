"""The distrust experiment on a pretrained model: what each arm does to TruthfulQA and to held-out per-tier loss.

benchmarks/real_model_experiment.py runs it (plain vs weighted, several seeds, the same data, steps and LR);
notebooks 04 and 06 can call the same functions. The protocol, stated before any number:

* outcomes are paired: every adapter is scored on the same TruthfulQA questions and the same held-out
  records as the base model, so per-question (per-record) differences carry the comparison;
* an objective's effect is the per-question score averaged over its seeds minus the base's score, with a
  paired bootstrap CI over questions and a sign-flip p-value (yourai.stats.paired_comparison);
* weighted − plain is compared the same way (per question, seed-averaged), and across seeds with a t-interval
  on the per-seed differences (few seeds: the interval is wide on purpose);
* the held-out tier gap is val loss(primary) − val loss(consensus) on the curated test split.

Added after the first full run (so not part of the pre-stated protocol, and reported beside it): the two-way
paired bootstrap of yourai.stats.paired_bootstrap_ci over seeds × questions, which, unlike the interval over
questions of the seed mean, also carries the seed-to-seed variation of training into the interval.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from yourai.data.batches import load_examples, validation_batches
from yourai.stats import mean_ci95, paired_bootstrap_ci, paired_comparison
from yourai.train.validation import make_eval_fn, tier_validation

TQA_METRICS = ("mc1", "mc2")
TIER_KEYS = ("val_loss", "val_loss_primary", "val_loss_middle", "val_loss_consensus", "val_gap")


def heldout_tier_loss(model: Any, tokenizer: Any, path: str | Path, max_seq_length: int, batch_size: int,
                      max_batches: int = -1) -> dict:
    """Token-mean CE overall and per tier on a held-out split (the curated test.jsonl): every record, or the same
    fixed selection of `max_batches` batches for every model."""
    examples, _ = load_examples(Path(path), tokenizer, max_seq_length)
    batches = validation_batches(examples, batch_size, max_batches)
    metrics = tier_validation(model, make_eval_fn(model, compile_=False), batches, step=0)
    return {key: metrics[key] for key in (*TIER_KEYS, "val_tokens")}


def _scores(rows: Sequence[Mapping[str, float]], metric: str) -> np.ndarray:
    return np.array([row[metric] for row in rows], dtype=np.float64)


def seed_mean(runs: Mapping[tuple[int, str], Sequence[Mapping[str, float]]], objective: str, metric: str) -> np.ndarray:
    """Per question, the metric averaged over every seed of one objective."""
    per_seed = [_scores(rows, metric) for (_, name), rows in sorted(runs.items()) if name == objective]
    if not per_seed:
        raise ValueError(f"no runs of objective {objective!r}")
    return np.mean(per_seed, axis=0)


def truthfulqa_comparison(base: Sequence[Mapping[str, float]], runs: Mapping[tuple[int, str], Sequence[Mapping[str, float]]],
                          seed: int = 0) -> dict[str, Any]:
    """Adapter − base per run and per objective (seed-averaged, paired over questions), and weighted − plain."""
    objectives = sorted({name for _, name in runs})
    per_run = [{"seed": run_seed, "objective": name,
                **{m: float(_scores(rows, m).mean()) for m in TQA_METRICS},
                **{f"delta_{m}": paired_comparison(_scores(base, m), _scores(rows, m), seed=seed) for m in TQA_METRICS}}
               for (run_seed, name), rows in sorted(runs.items())]
    out: dict[str, Any] = {"base": {m: float(_scores(base, m).mean()) for m in TQA_METRICS}, "per_run": per_run,
                           "adapter_minus_base": {name: {m: paired_comparison(_scores(base, m), seed_mean(runs, name, m),
                                                                              seed=seed) for m in TQA_METRICS}
                                                  for name in objectives}}
    if {"plain", "weighted"} <= set(objectives):
        out["weighted_minus_plain"] = {m: paired_comparison(seed_mean(runs, "plain", m), seed_mean(runs, "weighted", m),
                                                            seed=seed) for m in TQA_METRICS}
        out["weighted_minus_plain_across_seeds"] = {m: _per_seed_difference(runs, m) for m in TQA_METRICS}
    out["seeds_and_questions"] = _two_way(base, runs, objectives, seed)
    return out


def _two_way(base: Sequence[Mapping[str, float]], runs: Mapping[tuple[int, str], Sequence[Mapping[str, float]]],
             objectives: Sequence[str], seed: int) -> dict[str, Any]:
    """Each objective − base, and weighted − plain, as seeds × questions difference matrices under the two-way
    paired bootstrap (seeds and questions both resampled)."""
    def matrix(arm: str, reference: str | None, metric: str) -> list[np.ndarray]:
        seeds = paired_seeds(runs) if reference else sorted(s for s, name in runs if name == arm)
        return [_scores(runs[(s, arm)], metric) - (_scores(runs[(s, reference)], metric) if reference
                                                    else _scores(base, metric)) for s in seeds]

    out = {f"{name}_minus_base": {m: paired_bootstrap_ci(matrix(name, None, m), seed=seed) for m in TQA_METRICS}
           for name in objectives}
    if {"plain", "weighted"} <= set(objectives):
        out["weighted_minus_plain"] = {m: paired_bootstrap_ci(matrix("weighted", "plain", m), seed=seed)
                                       for m in TQA_METRICS}
    return out


def paired_seeds(runs: Mapping[tuple[int, str], Any]) -> list[int]:
    """Seeds with both a plain and a weighted run."""
    return sorted({s for s, _ in runs if (s, "plain") in runs and (s, "weighted") in runs})


def _per_seed_difference(runs: Mapping[tuple[int, str], Sequence[Mapping[str, float]]], metric: str) -> dict:
    """Mean and 95 % t half-width of the per-seed (weighted − plain) difference of one metric's mean."""
    seeds = paired_seeds(runs)
    diffs = [float(_scores(runs[(s, "weighted")], metric).mean() - _scores(runs[(s, "plain")], metric).mean())
             for s in seeds]
    mean, half_width = mean_ci95(diffs)
    return {"mean": mean, "ci95_half_width": half_width, "per_seed": diffs, "seeds": seeds}


def tier_comparison(base: Mapping[str, float], runs: Mapping[tuple[int, str], Mapping[str, float]]) -> dict[str, Any]:
    """Held-out tier losses per objective (mean ± t half-width over seeds), their change from the base, and the
    paired per-seed change of the tier gap, weighted − plain."""
    out: dict[str, Any] = {"base": dict(base), "per_objective": {}}
    for objective in sorted({name for _, name in runs}):
        values = {key: [run[key] for (s, name), run in sorted(runs.items()) if name == objective] for key in TIER_KEYS}
        out["per_objective"][objective] = {key: dict(zip(("mean", "ci95_half_width"), mean_ci95(v)),
                                                     change_from_base=mean_ci95(v)[0] - base[key])
                                           for key, v in values.items() if None not in v and v}
    seeds = paired_seeds(runs)
    if seeds:
        diffs = [runs[(s, "weighted")]["val_gap"] - runs[(s, "plain")]["val_gap"] for s in seeds]
        mean, half_width = mean_ci95(diffs)
        out["gap_change_weighted_minus_plain"] = {"mean": mean, "ci95_half_width": half_width, "per_seed": diffs}
    return out


def greedy_answers(model: Any, tokenizer: Any, questions: Sequence[str], max_tokens: int = 48) -> list[str]:
    """Each question as one chat turn, answered greedily (the side-by-side view of what training changed)."""
    from mlx_lm import generate

    answers = []
    for question in questions:
        messages = [{"role": "user", "content": question}]
        if getattr(tokenizer, "chat_template", None):
            prompt = list(tokenizer.apply_chat_template(messages, add_generation_prompt=True))
        else:
            prompt = tokenizer.encode(f"Q: {question}\nA:")
        answers.append(generate(model, tokenizer, prompt=prompt, max_tokens=max_tokens).strip())
    return answers
