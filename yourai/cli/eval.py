"""`yourai eval`: TruthfulQA MC1/MC2/generation (or any MC task spec, `--task`), base and base + adapter, offline.

Writes the results JSON, a per-question CSV beside it, and the run record (run.json) of its folder.
"""

from __future__ import annotations

import argparse

from yourai.cli.errors import fail
from yourai.config import DEQUANTIZE_MODES
from yourai.eval.results import format_summary, output_paths
from yourai.eval.task_eval import format_task_summary
from yourai.runs.stages import run_evaluation
from yourai.eval.truthfulqa import MAX_GEN_TOKENS, MODES, EvalOptions
from yourai.models import ModelError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="yourai eval", description="TruthfulQA MC1/MC2/generation as lm-eval "
                                     "scores them, base and base + adapter, offline.")
    parser.add_argument("--model", default="default", help="mlx-lm model dir or hub id; 'default' = embedded tiny model; "
                        "a packaged name such as smollm2-135m-instruct")
    parser.add_argument("--dequantize", choices=DEQUANTIZE_MODES, default="auto",
                        help="model.dequantize: auto = float weights on CPU, quantized on Metal/CUDA")
    parser.add_argument("--adapter", default=None, help="LoRA adapter dir (mlx-lm layout) or a `yourai train` --out "
                        "dir; adds a paired comparison")
    parser.add_argument("--data", default="auto", help="TruthfulQA file (.csv/.json/.jsonl/.parquet), hub:<id>, or "
                        "'auto' (../shared v0 when present, else the practice set)")
    parser.add_argument("--task", default=None, help="a multiple-choice task: a name under configs/tasks/ (e.g. "
                        "truthfulqa_mc1, evidence_vs_authority) or a spec .yaml; --data then overrides its data file, and the "
                        "spec's metrics replace --modes")
    parser.add_argument("--limit", type=int, default=None, help="score only the first N questions")
    parser.add_argument("--categories", default=None, help="comma-separated categories to keep")
    parser.add_argument("--modes", default="mc1,mc2", help=f"comma-separated subset of {','.join(MODES)}")
    parser.add_argument("--out", required=True, help="results JSON path (the per-question CSV goes beside it)")
    parser.add_argument("--csv", default=None, help="per-question CSV path (default: <out stem>.per_question.csv)")
    parser.add_argument("--add-bos", action="store_true", help="prepend BOS (lm-eval's HF default is no BOS)")
    parser.add_argument("--chat-template", action="store_true", help="wrap prompts in the tokenizer's chat template")
    parser.add_argument("--batch-tokens", type=int, default=None, help="tokens per forward (default: automatic)")
    parser.add_argument("--max-gen-tokens", type=int, default=MAX_GEN_TOKENS)
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap and the permutation test")
    parser.add_argument("--no-progress", action="store_true")
    return parser


def cli_main(argv: list[str]) -> int:
    """`yourai eval ...`: evaluate, write JSON + CSV, print the table. Errors go to stderr as one line: exit 1 when
    the model or adapter cannot be used (as `train` and `generate` do), 2 for any other bad argument or file.

    The output paths, model and adapter are checked before the first question is scored.
    """
    args = build_parser().parse_args(argv)
    categories = [c.strip() for c in args.categories.split(",")] if args.categories else None
    try:
        output_paths(args.out, args.csv)
        options = EvalOptions(modes=tuple(m.strip() for m in args.modes.split(",") if m.strip()),
                              add_bos=args.add_bos, chat_template=args.chat_template,
                              max_batch_tokens=args.batch_tokens, max_gen_tokens=args.max_gen_tokens,
                              progress=not args.no_progress, seed=args.seed)
        if args.task and categories:
            raise ValueError("--categories applies to TruthfulQA, not to --task")
        results = run_evaluation(args.out, model=args.model, adapter=args.adapter, data=args.data, limit=args.limit,
                                 categories=categories, options=options, task=args.task, csv_path=args.csv,
                                 dequantize=args.dequantize)
    except ModelError as error:
        return fail("eval", error, 1)
    except (ValueError, OSError) as error:
        return fail("eval", error, 2)
    print(format_task_summary(results) if args.task else format_summary(results))
    return 0
