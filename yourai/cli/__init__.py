"""The `yourai` command: a thin dispatcher to one module per command under yourai/cli/.

argparse lives only in this package. Each command module exposes `cli_main(argv) -> int`, so a
command is importable and testable without a subprocess, and adding one is one line here.
"""

from __future__ import annotations

import importlib
import sys

# command → (module, function, one-line help)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "doctor": ("yourai.cli.doctor", "cli_main", "report the machine, MLX backend, BLAS, profile and recommended models"),
    "build-model": ("yourai.cli.models", "build_model_main", "rebuild the embedded default here and compare it with the shipped weights"),
    "import-llama2c": ("yourai.cli.models", "import_llama2c_main", "convert a llama2.c checkpoint + tokenizer for mlx-lm"),
    "generate": ("yourai.cli.models", "generate_main", "generate text from a model (default: the embedded one)"),
    "score": ("yourai.cli.score", "cli_main", "score texts: authority_weight, provenance_entropy, evidence"),
    "curate": ("yourai.cli.curate", "cli_main", "curate sources into train/valid JSONL with a report"),
    "train": ("yourai.cli.train", "cli_main", "LoRA training with the distrust objective"),
    "eval": ("yourai.cli.eval", "cli_main", "TruthfulQA MC1/MC2/generation, base vs adapter"),
    "run": ("yourai.cli.run", "cli_main", "run the six notebooks with papermill into runs/<name>/"),
}


def _usage() -> str:
    width = max(len(name) for name in COMMANDS)
    rows = "\n".join(f"  {name:<{width}}  {help_}" for name, (_, _, help_) in COMMANDS.items())
    return f"usage: yourai COMMAND [ARGS...]\n\ncommands:\n{rows}\n\n`yourai COMMAND --help` for a command's options."


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"yourai: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module_name, function_name, _ = COMMANDS[name]
    handler = getattr(importlib.import_module(module_name), function_name)
    return int(handler(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
