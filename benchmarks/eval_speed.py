"""TruthfulQA scoring speed: our scorer vs a naive one-forward-per-choice loop, same model, same run.

The naive peer is what a direct reading of lm-eval does: for every distinct choice, one forward
over primer + question + choice, no cache, no batching. Both must give the same scores (the
script fails otherwise); it prints questions/s for each and the ratio (target ≥ 4x).

    python benchmarks/eval_speed.py                 # stories260K from ../shared, else the default model
    python benchmarks/eval_speed.py --model default --limit 30
"""

from __future__ import annotations

import yourai  # noqa: F401  (first: preloads OpenBLAS before mlx; see yourai/_blas.py)
import argparse
import sys
import tempfile
import time
from pathlib import Path

import mlx.core as mx
import numpy as np

from yourai.eval import truthfulqa as tqa
from yourai.eval.results import select_items
from yourai.models import load_model
from yourai.models.llama2c import import_llama2c
from yourai.paths import shared_dir
from yourai.eval.tqa_data import load_truthfulqa

LL_TOLERANCE = 1e-4  # float32 sums over different op orders; anything larger is a real discrepancy


def naive_score(model, tokenizer, items, options: tqa.EvalOptions) -> list[dict]:
    """One full forward per distinct choice; the peer being measured against."""
    rows = []
    for item in items:
        context = tqa.mc_context(item.question)
        lls = {}
        for choice in tqa.unique_choices(item):
            context_ids, answer_ids = tqa.encode_pair(tokenizer, context, " " + choice, options.add_bos)
            tokens = context_ids + answer_ids
            logits = model(mx.array([tokens[:-1]]))[0].astype(mx.float32)
            log_probs = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
            picked = mx.take_along_axis(log_probs, mx.array(tokens[1:])[:, None], axis=-1)[-len(answer_ids):]
            lls[choice] = float(picked.sum())
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="stories260k", help="'stories260k' (shared), 'default', or a model dir")
    parser.add_argument("--data", default="auto")
    parser.add_argument("--limit", type=int, default=20)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as work_dir:
        model, tokenizer = load_model(resolve_model(args.model, Path(work_dir)))
    items = select_items(load_truthfulqa(args.data), args.limit)
    options = tqa.EvalOptions(progress=False)
    tqa.score_mc(model, tokenizer, items[:1], options)  # warm-up: first-call allocations are not the method
    ours, ours_s = timed(tqa.score_mc, model, tokenizer, items, options)
    naive, naive_s = timed(naive_score, model, tokenizer, items, options)
    worst_ll = max(np.max(np.abs(np.array(a["mc1_lls"] + a["mc2_lls"]) - (b["mc1_lls"] + b["mc2_lls"])))
                   for a, b in zip(ours, naive))
    same_mc1 = all(a["mc1"] == b["mc1"] for a, b in zip(ours, naive))
    worst_mc2 = max(abs(a["mc2"] - b["mc2"]) for a, b in zip(ours, naive))
    n_choices = sum(len(tqa.unique_choices(item)) for item in items)
    print(f"model={args.model} questions={len(items)} distinct choices={n_choices}")
    print(f"ours : {ours_s:8.2f} s  {len(items) / ours_s:7.2f} questions/s")
    print(f"naive: {naive_s:8.2f} s  {len(items) / naive_s:7.2f} questions/s  ({n_choices} forwards)")
    print(f"max |d ll| = {worst_ll:.2e}, MC1 identical: {same_mc1}, max |d MC2| = {worst_mc2:.2e}")
    print(f"speed-up (ours / naive questions/s): {naive_s / ours_s:.2f}x  (target >= 4x)")
    if worst_ll > LL_TOLERANCE or not same_mc1:
        print("FAIL: scores differ between the two methods", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
