"""`yourai build-model`, `yourai import-llama2c`, `yourai import-gguf`, `yourai generate`: the model commands."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from yourai.cli.errors import fail
from yourai.config import DEQUANTIZE_MODES
from yourai.models import ModelError, load_model, weight_differences
from yourai.models.gguf import load_gguf, save_model_dir
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


def import_gguf_main(argv: list[str]) -> int:
    """`yourai import-gguf FILE OUT [--mx-load-q8]`: 0 ok, 2 when the file cannot be imported (the reason on stderr)."""
    parser = argparse.ArgumentParser(prog="yourai import-gguf", description="convert a llama GGUF into an mlx-lm "
                                     "directory, keeping Q4_0/Q4_1/Q8_0 weights exactly (others become float16)")
    parser.add_argument("gguf", type=Path, help="the .gguf file")
    parser.add_argument("out", type=Path, help="output directory (new, or an earlier import)")
    parser.add_argument("--mx-load-q8", action="store_true",
                        help="store Q8_0 scales in float16 as mx.load does (smaller, ~12 %% of a step less exact)")
    args = parser.parse_args(argv)
    try:
        imported = load_gguf(args.gguf, exact_q8=not args.mx_load_q8)
        out = save_model_dir(imported, args.out, source=args.gguf)
    except (OSError, ValueError) as err:
        print(f"yourai import-gguf: {err}", file=sys.stderr)
        return 2
    for note in imported.notes:
        print(f"note: {note}", file=sys.stderr)
    quantization = imported.config.get("quantization")
    kind = f"{quantization['bits']}-bit (group {quantization['group_size']})" if quantization else "float"
    print(f"{out}: {imported.config['num_hidden_layers']} layers, vocab {imported.config['vocab_size']}, {kind}, "
          f"{len(imported.notes)} note(s); load it with mlx_lm.load({str(out)!r}) or --model {out}")
    return 0


def generate_main(argv: list[str]) -> int:
    """`yourai generate [--model M] [--adapter DIR] [--prompt TEXT] [--chat] [--max-tokens N] [--temp T]`."""
    import mlx.core as mx
    from mlx_lm import stream_generate
    from mlx_lm.sample_utils import make_sampler

    parser = argparse.ArgumentParser(prog="yourai generate", description="generation through mlx-lm")
    parser.add_argument("--model", default="default", help="'default', a packaged name (smollm2-135m-instruct), "
                        "a local mlx-lm directory or a hub id")
    parser.add_argument("--adapter", default=None)
    parser.add_argument("--prompt", default="The measurements taken in the laboratory")
    parser.add_argument("--chat", action="store_true", help="send the prompt as a user turn through the chat template")
    parser.add_argument("--dequantize", choices=DEQUANTIZE_MODES, default="auto", help="model.dequantize")
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--temp", type=float, default=0.7, help="0 = greedy")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        model, tokenizer = load_model(args.model, args.adapter, dequantize=args.dequantize)
        prompt_ids = chat_prompt_ids(tokenizer, args.prompt) if args.chat else tokenizer.encode(args.prompt)
    except ModelError as err:  # the model or adapter named cannot be used
        return fail("generate", err, 1)
    except ValueError as err:  # --chat on a model without a chat template
        return fail("generate", err, 2)
    mx.random.seed(args.seed)
    sampler = make_sampler(temp=args.temp, top_p=0.9 if args.temp > 0 else 0.0)
    new_ids = [response.token for response in stream_generate(
        model, tokenizer, prompt=prompt_ids, max_tokens=args.max_tokens, sampler=sampler)]
    if args.chat:
        print(f"user: {args.prompt}\nassistant: {tokenizer.decode(new_ids, skip_special_tokens=True).strip()}")
    else:
        # Decode prompt and continuation together: the streaming detokenizer trims the first
        # token's leading space, which would glue the continuation onto the prompt's last word.
        print(tokenizer.decode(prompt_ids + new_ids))
    return 0


def chat_prompt_ids(tokenizer, prompt: str) -> list[int]:
    """The prompt as one user turn, ready for the assistant's answer (the model's own chat template)."""
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError("--chat: this model's tokenizer has no chat template")
    return list(tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True))
