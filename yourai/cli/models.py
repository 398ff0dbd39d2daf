"""`yourai build-model`, `yourai import-llama2c`, `yourai generate`: the model commands."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from yourai.models import load_model, weight_differences
from yourai.models.llama2c import import_llama2c
from yourai.models.tiny import build_tiny_model
from yourai.paths import rebuilt_model_dir, sample_corpus_path, shipped_model_dir


def build_model_main(argv: list[str]) -> int:
    """`yourai build-model [--out DIR] [--corpus JSONL] [--seed N]`: rebuild the default here, compare it to the shipped one."""
    parser = argparse.ArgumentParser(
        prog="yourai build-model", description="rebuild the embedded default model on this platform and compare "
        "it with the shipped weights (evaluate it with YOURAI_DEFAULT_MODEL=<out>)")
    parser.add_argument("--out", type=Path, default=rebuilt_model_dir(),
                        help=f"output directory (default: %(default)s; {shipped_model_dir()} refreshes the shipped copy)")
    parser.add_argument("--corpus", type=Path, default=sample_corpus_path(), help="JSONL with a text field")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    report = build_tiny_model(args.out, args.corpus, args.seed)
    print(
        f"built {args.out} ({report['parameters']:,} parameters) in {report['build_seconds']} s: "
        f"held-out perplexity {report['heldout_perplexity_before']:.1f} → {report['heldout_perplexity_after']:.1f} "
        f"({report['perplexity_reduction']:.1f}× lower)"
    )
    shipped = shipped_model_dir()
    if args.out.resolve() != shipped.resolve() and (shipped / "model.safetensors").exists():
        print(describe_rebuild(args.out, shipped))
    return 0


def describe_rebuild(rebuilt: Path, shipped: Path) -> str:
    """One line on how a rebuild compares with the shipped weights, why they differ, and how to use it."""
    differences = weight_differences(rebuilt, shipped)
    if differences["identical"]:
        return f"identical to the shipped weights in {shipped}, bit for bit"
    ours, theirs = (json.loads((Path(path) / "build_info.json").read_text()) for path in (rebuilt, shipped))
    same_recipe = all(ours[key] == theirs[key] for key in ("seed", "spec", "train_tokens", "heldout_tokens"))
    cause = "this platform's float rounding" if same_recipe else "another seed, corpus or spec"
    return (f"differs from the shipped weights ({cause}): largest relative L2 distance "
            f"{differences['max_relative_l2']:.2e} ({differences['worst_tensor']}), held-out perplexity "
            f"{ours['heldout_perplexity_after']:.2f} vs {theirs['heldout_perplexity_after']:.2f} shipped; "
            f"`default` still means the shipped weights, YOURAI_DEFAULT_MODEL={rebuilt} selects this build")


def import_llama2c_main(argv: list[str]) -> int:
    """`yourai import-llama2c CKPT TOK OUT`."""
    parser = argparse.ArgumentParser(prog="yourai import-llama2c", description="convert a llama2.c checkpoint")
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("tokenizer", type=Path)
    parser.add_argument("out", type=Path)
    args = parser.parse_args(argv)
    print(import_llama2c(args.checkpoint, args.tokenizer, args.out))
    return 0


def generate_main(argv: list[str]) -> int:
    """`yourai generate [--model M] [--adapter DIR] [--prompt TEXT] [--max-tokens N] [--temp T]`."""
    import mlx.core as mx
    from mlx_lm import stream_generate
    from mlx_lm.sample_utils import make_sampler

    parser = argparse.ArgumentParser(prog="yourai generate", description="generation through mlx-lm")
    parser.add_argument("--model", default="default")
    parser.add_argument("--adapter", default=None)
    parser.add_argument("--prompt", default="The measurements taken in the laboratory")
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--temp", type=float, default=0.7, help="0 = greedy")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    model, tokenizer = load_model(args.model, args.adapter)
    mx.random.seed(args.seed)
    sampler = make_sampler(temp=args.temp, top_p=0.9 if args.temp > 0 else 0.0)
    prompt_ids = tokenizer.encode(args.prompt)
    new_ids = [response.token for response in stream_generate(
        model, tokenizer, prompt=prompt_ids, max_tokens=args.max_tokens, sampler=sampler)]
    # Decode prompt and continuation together: the streaming detokenizer trims the first
    # token's leading space, which would glue the continuation onto the prompt's last word.
    print(tokenizer.decode(prompt_ids + new_ids))
    return 0
