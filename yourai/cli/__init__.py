"""The `yourai` command: a thin dispatcher to one module per command under yourai/cli/.

argparse lives only in this package. Each command module exposes `cli_main(argv) -> int`, so a
command is importable and testable without a subprocess, and adding one is one line here.
An error no command caught becomes one line too (yourai/cli/errors.py); `--debug` shows the traceback.
"""

from __future__ import annotations

import importlib
import sys

from yourai.cli.errors import DEBUG_FLAG, fail, set_debug, take_debug_flag

# command → (module, function, one-line help)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "doctor": ("yourai.cli.doctor", "cli_main", "report the machine, MLX backend, BLAS, profile and recommended models"),
    "build-model": ("yourai.cli.models", "build_model_main", "rebuild the embedded default here and compare it with the shipped weights"),
    "import-llama2c": ("yourai.cli.models", "import_llama2c_main", "convert a llama2.c checkpoint + tokenizer for mlx-lm"),
    "import-gguf": ("yourai.cli.models", "import_gguf_main", "convert a llama GGUF (4-bit kept exactly) for mlx-lm"),
    "generate": ("yourai.cli.models", "generate_main", "generate text from a model (default: the embedded one)"),
    "score": ("yourai.cli.score", "cli_main", "score texts: authority_weight, provenance_entropy, evidence"),
    "curate": ("yourai.cli.curate", "cli_main", "curate sources into train/valid JSONL with a report"),
    "train": ("yourai.cli.train", "cli_main", "LoRA training with the distrust objective"),
    "eval": ("yourai.cli.eval", "cli_main", "TruthfulQA MC1/MC2/generation, base vs adapter"),
    "run": ("yourai.cli.run", "cli_main", "run the six notebooks with papermill into runs/<name>/"),
    "runs": ("yourai.cli.runs", "runs_main", "list recorded runs as a table (--where loss.objective=weighted, --json)"),
    "compare": ("yourai.cli.runs", "compare_main", "compare runs: config differences, metrics, paired deltas with CIs"),
    "sweep": ("yourai.cli.sweep", "cli_main", "run a grid of configs (resumable) with paired CIs against a baseline arm"),
    "readme-numbers": ("yourai.cli.readme", "cli_main", "carry a demo run's numbers into the README (make demo does)"),
}


def _usage() -> str:
    width = max(len(name) for name in COMMANDS)
    rows = "\n".join(f"  {name:<{width}}  {help_}" for name, (_, _, help_) in COMMANDS.items())
    return (f"usage: yourai [{DEBUG_FLAG}] COMMAND [ARGS...]\n\ncommands:\n{rows}\n\n"
            f"`yourai COMMAND --help` for a command's options; {DEBUG_FLAG} shows tracebacks instead of one-line errors.")


def main(argv: list[str] | None = None) -> int:
    argv, debug = take_debug_flag(list(sys.argv[1:] if argv is None else argv))
    set_debug(debug)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"yourai: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module_name, function_name, _ = COMMANDS[name]
    handler = getattr(importlib.import_module(module_name), function_name)
    try:
        return int(handler(rest) or 0)
    except (ValueError, OSError) as error:  # a user-facing problem the command did not catch itself
        return fail(name, error)
    except Exception as error:  # noqa: BLE001 - a bug: one line (and a hint) unless --debug
        return fail(name, error, expected=False)


if __name__ == "__main__":
    sys.exit(main())
