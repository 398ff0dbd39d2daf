"""TruthfulQA scoring speed: our scorer vs a naive one-forward-per-choice loop, same model, same run.

The naive peer is what a direct reading of lm-eval does: for every distinct choice, one forward
over primer + question + choice, no cache, no batching. On the first `--naive-limit` questions
the arms run ours, naive, ours (the second "ours" is the A/A noise floor); both must give the
same scores (the script fails otherwise). Both take each token's log-probability from the same function
(yourai's cross-entropy of the model's logits: on the CPU the fused kernel, ~1e-5 from float64 per token
where mx.logsumexp is ~1e-4 off over SmolLM2's 49,152 logits), so a difference is the method's. Then ours scores all `--limit` questions (MC1 + MC2),
timed against the 6-minute target, and the naive time for them is extrapolated from its rate.

    python benchmarks/eval_speed.py --model smollm2-135m-instruct            # all 817 v0 questions
    python benchmarks/eval_speed.py --model PATH --limit 100 --naive-limit 10
    python benchmarks/eval_speed.py                 # stories260K from ../shared, else the default model
"""

from __future__ import annotations

import yourai  # noqa: F401  (first: preloads OpenBLAS before mlx; see yourai/_blas.py)
import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import mlx.core as mx
import numpy as np

from yourai.eval import truthfulqa as tqa
from yourai.eval.results import select_items
from yourai.models import load_model
from yourai.models.head import split_head, token_cross_entropy
from yourai.models.llama2c import import_llama2c
from yourai.paths import shared_dir
from yourai.eval.tqa_data import load_truthfulqa

LL_TOLERANCE = 1e-4  # float32 sums over different op orders; anything larger is a real discrepancy
TARGET_SPEEDUP = 4.0
TARGET_FULL_S = 360.0  # all 817 questions, MC1 + MC2, on the project's 2-core machine


def naive_score(model, tokenizer, items, options: tqa.EvalOptions) -> list[dict]:
    """One full forward per distinct choice; the peer being measured against."""
    rows, split = [], split_head(model, differentiable=False)
    for item in items:
        context = tqa.mc_context(item.question)
        lls = {}
        for choice in tqa.unique_choices(item):
            context_ids, answer_ids = tqa.encode_pair(tokenizer, context, " " + choice, options.add_bos)
            tokens = context_ids + answer_ids
            ce = token_cross_entropy(model, split, mx.array([tokens[:-1]]), mx.array([tokens[1:]]), differentiable=False)
            lls[choice] = -float(ce[0, -len(answer_ids):].sum())
        mc1_lls, mc2_lls = [lls[c] for c in item.mc1_choices], [lls[c] for c in item.mc2_choices]
        rows.append({"mc1": tqa.mc1_score(mc1_lls, item.mc1_labels), "mc2": tqa.mc2_score(mc2_lls, item.mc2_labels),
                     "mc1_lls": mc1_lls, "mc2_lls": mc2_lls})
    return rows


def resolve_model(name: str, work_dir: Path) -> str:
    """`stories260k` imports the shared llama2.c checkpoint; anything else goes to load_model as is."""
    if name != "stories260k":
        return name
    source = shared_dir() / "models" / "stories260K"
    if not (source / "stories260K.bin").is_file():
        print(f"stories260K not found under {source}; using the default model")
        return "default"
    return str(import_llama2c(source / "stories260K.bin", source / "tok512.bin", work_dir / "stories260k"))


def timed(function, *args):
    start = time.perf_counter()
    result = function(*args)
    return result, time.perf_counter() - start


def differences(ours: list[dict], naive: list[dict]) -> tuple[float, bool, float]:
    """(max |d ll|, MC1 identical, max |d MC2|) between two scorings of the same questions."""
    worst_ll = max(np.max(np.abs(np.array(a["mc1_lls"] + a["mc2_lls"]) - (b["mc1_lls"] + b["mc2_lls"])))
                   for a, b in zip(ours, naive))
    return worst_ll, all(a["mc1"] == b["mc1"] for a, b in zip(ours, naive)), max(abs(a["mc2"] - b["mc2"])
                                                                                  for a, b in zip(ours, naive))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="stories260k", help="'stories260k' (shared), 'default', a packaged name, or a model dir")
    parser.add_argument("--data", default="auto")
    parser.add_argument("--limit", type=int, default=817, help="questions scored by ours for the full-run time")
    parser.add_argument("--naive-limit", type=int, default=30, help="questions both arms score (naive is slow)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as work_dir:
        model, tokenizer = load_model(resolve_model(args.model, Path(work_dir)))
    items = select_items(load_truthfulqa(args.data), args.limit)
    subset = items[: args.naive_limit]
    options = tqa.EvalOptions(progress=False)
    tqa.score_mc(model, tokenizer, items[:1], options)  # warm-up: first-call allocations are not the method
    ours, ours_s = timed(tqa.score_mc, model, tokenizer, subset, options)
    naive, naive_s = timed(naive_score, model, tokenizer, subset, options)
    twin, twin_s = timed(tqa.score_mc, model, tokenizer, subset, options)
    full, full_s = timed(tqa.score_mc, model, tokenizer, items, options)
    worst_ll, same_mc1, worst_mc2 = differences(ours, naive)
    n_choices = sum(len(tqa.unique_choices(item)) for item in subset)
    median_s = float(np.median([ours_s, twin_s]))
    print(f"model={args.model} questions: {len(subset)} both arms ({n_choices} distinct choices), {len(items)} ours; "
          f"load average {os.getloadavg()[0]:.1f}")
    print(f"ours   {ours_s:8.2f} s   A/A {twin_s:8.2f} s  ({twin_s / ours_s:.2f}x: the noise floor)")
    print(f"naive  {naive_s:8.2f} s   ({n_choices} forwards)")
    print(f"max |d ll| = {worst_ll:.2e}, MC1 identical: {same_mc1}, max |d MC2| = {worst_mc2:.2e}")
    print(f"speed-up (naive / ours, same {len(subset)} questions): {naive_s / median_s:.2f}x  (target >= {TARGET_SPEEDUP:.0f}x)")
    naive_full_s = naive_s / len(subset) * len(items)
    print(f"all {len(items)} questions, MC1 + MC2: ours {full_s:.1f} s (target <= {TARGET_FULL_S:.0f} s for 817); "
          f"naive extrapolated {naive_full_s:.0f} s ({naive_full_s / full_s:.1f}x)")
    print(f"MC1 {np.mean([r['mc1'] for r in full]):.4f}  MC2 {np.mean([r['mc2'] for r in full]):.4f}")
    if worst_ll > LL_TOLERANCE or not same_mc1:
        print("FAIL: scores differ between the two methods", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
