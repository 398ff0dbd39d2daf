"""`yourai run [-c CONFIG] [--name NAME] [--only 01,04] [--from 03] [key=value ...]`: the six notebooks under papermill."""

from __future__ import annotations

import argparse
import shlex
import signal
import sys
from pathlib import Path

from yourai.cli.errors import fail
from yourai.config import ConfigError, load_config, parse_overrides
from yourai.paths import PROJECT_ROOT
from yourai.pipeline import STAGE_TITLES, StageResult, forward_to_kernels, run_pipeline
from yourai.stopping import exit_code, graceful_stop

EXIT_OK, EXIT_STAGE_FAILED, EXIT_USAGE = 0, 1, 2


def cli_main(argv: list[str]) -> int:
    """`yourai run [-c CONFIG] [--name NAME] [--only 01,04] [--from 03] [key=value ...]`.

    The config file and the key=value overrides reach every stage (each notebook loads them itself).
    """
    parser = argparse.ArgumentParser(prog="yourai run", description="run the six notebooks with papermill")
    parser.add_argument("-c", "--config", type=Path, default=None, help="YAML config (default configs/default.yaml)")
    parser.add_argument("--name", default=None, help="run name: results go to runs/<name>/ (default: run.name)")
    parser.add_argument("--only", default=None, help="comma-separated stages, e.g. 01,04")
    parser.add_argument("--from", dest="start", default=None, help="start at this stage, e.g. 03")
    parser.add_argument("--runs-dir", type=Path, default=PROJECT_ROOT / "runs")
    parser.add_argument("--notebooks-dir", type=Path, default=PROJECT_ROOT / "notebooks")
    parser.add_argument("overrides", nargs="*", help="dotted config overrides, e.g. train.steps=20")
    args = parser.parse_args(argv)
    try:
        overrides = parse_overrides(args.overrides)
        name = args.name or load_config(args.config, overrides).run.name
        with graceful_stop(on_signal=forward_to_kernels, repeat_aborts=False):  # the kernel decides where to stop
            results, summary_md = run_pipeline(name, config_path=args.config, overrides=overrides, only=args.only,
                                               start=args.start, runs_dir=args.runs_dir,
                                               notebooks_dir=args.notebooks_dir)
    except (ConfigError, ValueError) as error:
        return fail("run", error, EXIT_USAGE)
    failed = [r for r in results if r.status == "failed"]
    if failed:
        print(f"yourai run: stage {failed[0].stage} ({STAGE_TITLES.get(failed[0].stage, '')}) failed: "
              f"{failed[0].error}\nexecuted notebook: {failed[0].notebook}", file=sys.stderr)
    print(f"summary: {summary_md}")
    stopped = next((r for r in results if r.signal), None)
    if stopped:
        print(stopped_line(stopped, argv), file=sys.stderr)
        return exit_code(signal.Signals[stopped.signal])
    return EXIT_STAGE_FAILED if failed else EXIT_OK


def continue_command(argv: list[str], stage: str) -> str:
    """The same command, starting at `stage` (any --from it had replaced)."""
    kept, skip_value = [], False
    for arg in argv:
        if skip_value:
            skip_value = False
        elif arg == "--from":
            skip_value = True
        elif not arg.startswith("--from="):
            kept.append(arg)
    return shlex.join(["yourai", "run", *kept, "--from", stage])


def stopped_line(first: StageResult, argv: list[str]) -> str:
    """The one line a stopped run ends with: where it stopped, and the command that continues from there."""
    where = "during" if first.status == "stopped" else "before"
    return (f"yourai run: stopped by {first.signal} {where} stage {first.stage} ({STAGE_TITLES.get(first.stage, '')}); "
            f"continue with: {continue_command(argv, first.stage)}")
