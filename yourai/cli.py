"""The `yourai` command: a thin dispatcher to each stage's own `cli_main(argv)`.

Each module owns its arguments, so adding a stage never means editing a central parser,
and every command is importable and testable without a subprocess.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys

# command → (module, function, one-line help)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "doctor": ("yourai.cli", "doctor_main", "report the machine, MLX backend, profile and recommended models"),
    "build-model": ("yourai.models", "build_model_main", "(re)build the embedded default model from data/sample"),
    "import-llama2c": ("yourai.models", "import_llama2c_main", "convert a llama2.c checkpoint + tokenizer for mlx-lm"),
    "generate": ("yourai.models", "generate_main", "generate text from a model (default: the embedded one)"),
    "score": ("yourai.scoring", "cli_main", "score texts: authority_weight, provenance_entropy, evidence"),
    "curate": ("yourai.curate", "cli_main", "curate sources into train/valid JSONL with a report"),
    "train": ("yourai.train", "cli_main", "LoRA training with the distrust objective"),
    "eval": ("yourai.truthfulqa", "cli_main", "TruthfulQA MC1/MC2/generation, base vs adapter"),
    "run": ("yourai.pipeline", "cli_main", "run the six notebooks with papermill into runs/<name>/"),
}


def doctor_main(argv: list[str]) -> int:
    """`yourai doctor [--json]`."""
    from yourai.hardware import doctor_report, format_doctor

    parser = argparse.ArgumentParser(prog="yourai doctor", description=COMMANDS["doctor"][2])
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    report = doctor_report()
    print(json.dumps(report, indent=2) if args.json else format_doctor(report))
    return 0


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
