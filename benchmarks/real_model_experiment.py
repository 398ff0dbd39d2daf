"""The distrust experiment on a real model: plain vs weighted LoRA on SmolLM2-135M-Instruct, several seeds.

Protocol (fixed before any number is seen; yourai/notebook/real_experiment.py states the statistics):
  * one curated data set (configs/smollm2.yaml: ../shared primary-source science vs agency consensus), the same
    steps, batch, learning rate and LoRA for every arm; arms differ only in loss.objective and train.seed;
  * faithful (CE + λ·L_emp) is trained once, for the first seed, to show its adapters are bit-identical to
    plain's — its gradient is zero, so training it again would spend compute on a known answer;
  * outcomes: TruthfulQA MC1/MC2 (lm-eval prompts, v0, all 817 questions unless --limit) adapter − base with
    paired bootstrap CIs; held-out per-tier loss on the curated test split; a few greedy answers side by side.

    python benchmarks/real_model_experiment.py                        # the full run (hours on 2 CPU cores)
    python benchmarks/real_model_experiment.py --steps 2 --seeds 0 --limit 5 --greedy 1 --out /tmp/exp
    python benchmarks/real_model_experiment.py -c configs/smollm2.yaml train.learning_rate=1e-4
    python benchmarks/real_model_experiment.py --resume                # after a stop: finished arms and scores kept

Everything lands in --out (runs, curated data) and the results JSON (default <out>/results.json).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
from pathlib import Path

import yourai  # noqa: F401  (before mlx: preloads OpenBLAS)
from yourai.config import load_config, to_dict
from yourai.eval.results import select_items
from yourai.eval.tqa_data import load_truthfulqa
from yourai.eval.truthfulqa import EvalOptions, evaluate_model
from yourai.models import load_model, resolve_model
from yourai.notebook.experiments import adapters_identical, objective_experiment, resolve_data
from yourai.notebook.real_experiment import greedy_answers, heldout_tier_loss, tier_comparison, truthfulqa_comparison
from yourai.notebook.summaries import finite
from yourai.paths import configs_dir
from yourai.train.checkpoints import sha256_file


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-c", "--config", default=str(configs_dir() / "smollm2.yaml"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="train.seed values (default 0 1 2)")
    parser.add_argument("--steps", type=int, help="train.steps (default: the config's)")
    parser.add_argument("--limit", type=int, help="first N TruthfulQA questions (default: all 817)")
    parser.add_argument("--greedy", type=int, default=5, help="questions answered greedily side by side (default 5)")
    parser.add_argument("--greedy-tokens", type=int, default=48)
    parser.add_argument("--heldout-batches", type=int, default=-1,
                        help="batches of the test split scored per model (default -1: all of it)")
    parser.add_argument("--data", help="a curated directory (default: curate the config's sources into <out>/data)")
    parser.add_argument("--out", default="runs/real-experiment", help="working directory (default %(default)s)")
    parser.add_argument("--json", help="results file (default <out>/results.json)")
    parser.add_argument("--resume", action="store_true",
                        help="keep what an earlier run in --out finished: trained arms are read back, models already "
                             "scored with the same settings are not scored again (scoring is most of the hours)")
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    args = parser.parse_args()
    if len(args.seeds) != len(set(args.seeds)):
        parser.error(f"--seeds must be distinct, got {args.seeds}")
    return args


def train_arms(config, data_dir: Path, out: Path, seeds: list[int], resume: bool) -> tuple[list[dict], dict]:
    """plain and weighted for every seed, faithful for the first; the faithful identity check."""
    started = time.perf_counter()
    rows = objective_experiment(config, data_dir, out / "runs", seeds, ("plain", "faithful", "weighted"), resume=resume)
    by = {(r["seed"], r["objective"]): r for r in rows}
    plain, faithful = by[(seeds[0], "plain")], by[(seeds[0], "faithful")]
    identity = {"seed": seeds[0], "bit_identical": adapters_identical(Path(plain["adapters_dir"]), Path(faithful["adapters_dir"])),
                "plain_sha256": plain["adapters_sha256"], "faithful_sha256": faithful["adapters_sha256"]}
    return rows, {**identity, "train_s": time.perf_counter() - started}


def score_fingerprint(adapter: str | None, items, args: argparse.Namespace) -> dict:
    """What a cached score depends on: the adapter's bytes, the questions and the scoring settings."""
    adapter_sha = sha256_file(Path(adapter) / "adapters.safetensors") if adapter else None
    return {"adapter_sha256": adapter_sha, "questions": [item.question for item in items], "greedy": args.greedy,
            "greedy_tokens": args.greedy_tokens, "heldout_batches": args.heldout_batches}


def cached_score(config, adapter: str | None, items, scoring: tuple, out: Path, name: str,
                 args: argparse.Namespace) -> dict:
    """score_model's result, written to <out>/scores/<name>.json as soon as it exists, so a run stopped
    during the hours of scoring keeps every model it finished; with --resume a matching file is reused."""
    path = out / "scores" / f"{name}.json"
    fingerprint = score_fingerprint(adapter, items, args)
    if args.resume and path.is_file():
        cached = json.loads(path.read_text())
        if cached.get("fingerprint") == fingerprint:
            print(f"{name}: scores reused from {path}")
            return cached["score"]
    score = score_model(config, adapter, *scoring)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".json.partial")
    partial.write_text(json.dumps({"fingerprint": fingerprint, "score": score}) + "\n")
    partial.replace(path)
    print(f"{name}: scored in {score['eval_s']:.0f} s")
    return score


def score_model(config, adapter: str | None, items, test_path: Path, greedy_questions: list[str], greedy_tokens: int,
                heldout_batches: int) -> dict:
    """TruthfulQA rows, held-out tier loss and greedy answers of the base (adapter None) or base + adapter."""
    model, tokenizer = load_model(config.model.path, adapter, dequantize=config.model.dequantize)
    started = time.perf_counter()
    options = EvalOptions(modes=("mc1", "mc2"), chat_template=config.eval.chat_template, seed=config.eval.seed,
                          progress=False)
    rows = evaluate_model(model, tokenizer, items, options, name=adapter or "base")
    eval_s = time.perf_counter() - started
    tiers = heldout_tier_loss(model, tokenizer, test_path, config.train.max_seq_length, config.train.batch_size,
                              heldout_batches)
    answers = greedy_answers(model, tokenizer, greedy_questions, greedy_tokens)
    return {"rows": rows, "tiers": tiers, "answers": answers, "eval_s": eval_s}


def main() -> None:
    args = parse_args()
    out = Path(args.out)
    overrides = list(args.overrides) + ([f"train.steps={args.steps}"] if args.steps else [])
    config = load_config(args.config, overrides)
    data_dir = resolve_data(config, args.data, out)
    rows, identity = train_arms(config, data_dir, out, args.seeds, args.resume)
    print(f"trained {len(rows)} adapters in {identity['train_s']:.0f} s; faithful bit-identical to plain: {identity['bit_identical']}")
    items = select_items(load_truthfulqa(config.eval.data), args.limit)
    greedy_questions = [item.question for item in items[: args.greedy]]
    scoring = (items, data_dir / "test.jsonl", greedy_questions, args.greedy_tokens, args.heldout_batches)
    base = cached_score(config, None, items, scoring, out, "base", args)
    scored = {(r["seed"], r["objective"]): cached_score(config, r["adapters_dir"], items, scoring, out,
                                                        f"seed{r['seed']}-{r['objective']}", args)
              for r in rows if r["objective"] != "faithful"}
    truthfulqa = truthfulqa_comparison(base["rows"], {key: s["rows"] for key, s in scored.items()}, seed=config.eval.seed)
    tiers = tier_comparison(base["tiers"], {key: s["tiers"] for key, s in scored.items()})
    first = args.seeds[0]
    answers = [{"question": q, "base": base["answers"][i], "plain": scored[(first, "plain")]["answers"][i],
                "weighted": scored[(first, "weighted")]["answers"][i]} for i, q in enumerate(greedy_questions)]
    results = {
        "schema": "yourai.real_model_experiment/1", "config": to_dict(config), "config_path": args.config,
        "model": config.model.path, "model_dir": resolve_model(config.model.path), "seeds": args.seeds,
        "n_questions": len(items), "heldout_batches": args.heldout_batches, "data_dir": str(data_dir), "machine": platform.platform(),
        "training": [{k: v for k, v in r.items() if k != "adapters_dir"} for r in rows],
        "faithful_identity": identity, "truthfulqa": truthfulqa, "heldout_tiers": tiers, "greedy_answers": answers,
        "eval_seconds": {"base": base["eval_s"], **{f"seed{s}-{o}": v["eval_s"] for (s, o), v in scored.items()}},
    }
    path = Path(args.json) if args.json else out / "results.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(finite(results), indent=1) + "\n")
    report(results, path)


def report(results: dict, path: Path) -> None:
    """The headline numbers, printed; everything else is in the JSON."""
    tqa, tiers = results["truthfulqa"], results["heldout_tiers"]
    print(f"TruthfulQA ({results['n_questions']} questions): base MC1 {tqa['base']['mc1']:.4f}, MC2 {tqa['base']['mc2']:.4f}")
    for objective, block in tqa["adapter_minus_base"].items():
        cells = "  ".join(f"{m} {c['delta']:+.4f} [{c['ci'][0]:+.4f}, {c['ci'][1]:+.4f}] p={c['p_value']:.3f}"
                          for m, c in block.items())
        print(f"  {objective:>8} − base: {cells}")
    for m, c in tqa.get("weighted_minus_plain", {}).items():
        print(f"  weighted − plain {m}: {c['delta']:+.4f} [{c['ci'][0]:+.4f}, {c['ci'][1]:+.4f}] p={c['p_value']:.3f}")
    for name, block in tqa["seeds_and_questions"].items():
        cells = "  ".join(f"{m} {c['delta']:+.4f} [{c['ci'][0]:+.4f}, {c['ci'][1]:+.4f}]" for m, c in block.items())
        print(f"  {name.replace('_minus_', ' − ')} (seeds × questions bootstrap): {cells}")
    gap = tiers.get("gap_change_weighted_minus_plain")
    if gap:
        half = gap["ci95_half_width"]
        spread = f"± {half:.4f}" if half is not None and math.isfinite(half) else "one seed: no interval"
        print(f"held-out tier gap (primary − consensus), weighted − plain: {gap['mean']:+.4f} "
              f"({spread}; per seed {[round(d, 4) for d in gap['per_seed']]})")
    print(f"faithful adapters bit-identical to plain: {results['faithful_identity']['bit_identical']}")
    print(f"results: {path}")


if __name__ == "__main__":
    main()
