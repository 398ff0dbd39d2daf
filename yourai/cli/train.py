"""`yourai train [-c CONFIG] --out DIR [--data DIR] [...] [key=value ...]`: LoRA training with the distrust objective.

The run directory gets run.json (yourai.runs.record) beside the adapters and metrics.jsonl.
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import sys
from pathlib import Path
from typing import Sequence

import mlx.core as mx

from yourai.cli.errors import fail
from yourai.config import Config, ConfigError, load_config
from yourai.data.batches import DataError
from yourai.formula import OBJECTIVES
from yourai.models import ModelError
from yourai.notebook.experiments import resolve_data
from yourai.runs.stages import run_training
from yourai.stopping import exit_code, graceful_stop
from yourai.train import StopAborted, TrainingAbort, TrainingStopped
from yourai.train.checkpoints import CheckpointError, latest_checkpoint
from yourai.train.rundir import RunDirError, require_checkpoint

EXIT_OK, EXIT_DATA, EXIT_USAGE, EXIT_ABORTED = 0, 1, 2, 3
FLAG_KEYS = (("model", "model.path"), ("steps", "train.steps"), ("seed", "train.seed"), ("objective", "loss.objective"))


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="yourai train", description="LoRA training with the distrust objective")
    parser.add_argument("-c", "--config", help="YAML config (default: configs/default.yaml)")
    parser.add_argument("--out", required=True, help="run directory: adapters/, checkpoints/, metrics.jsonl")
    parser.add_argument("--model", help="hub id or local path (default: model.path, the embedded model)")
    parser.add_argument("--data", help="curated dir with train.jsonl/valid.jsonl (default: curate the sample corpus)")
    parser.add_argument("--steps", type=int, help="train.steps")
    parser.add_argument("--seed", type=int, help="train.seed")
    parser.add_argument("--objective", choices=OBJECTIVES, help="loss.objective")
    parser.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --out")
    parser.add_argument("--overwrite", action="store_true",
                        help="start over in an --out that holds checkpoints (deletes only the files yourai wrote)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="dotted config overrides, e.g. train.lora.rank=16")
    return parser.parse_intermixed_args(list(argv))


def config_from_args(args: argparse.Namespace) -> Config:
    """The config file, then key=value overrides, then the named flags (which win)."""
    overrides = list(args.overrides)
    for flag, key in FLAG_KEYS:
        value = getattr(args, flag)
        if value is not None:
            overrides.append(f"{key}={value}")
    return load_config(args.config, overrides)


def resume_command(argv: Sequence[str]) -> str:
    """The command that continues this run: the same arguments, plus --resume (and the same launcher)."""
    command = shlex.join(["yourai", "train", *argv, *([] if "--resume" in argv else ["--resume"])])
    return command + (" (under the same mlx.launch)" if mx.distributed.init().size() > 1 else "")


def stopped_line(stop: BaseException, argv: Sequence[str], out: str) -> str:
    """The one line a stop signal ends with: where the run is, and how to go on."""
    if isinstance(stop, TrainingStopped):
        return f"yourai train: {stop}; resume with: {resume_command(argv)}"
    if isinstance(stop, StopAborted):
        latest = latest_checkpoint(Path(out) / "checkpoints")
        kept = f"the last complete checkpoint is {latest}" if latest else "no checkpoint was completed"
        return f"yourai train: {stop}; {kept}" + (f"; resume with: {resume_command(argv)}" if latest else "")
    return "yourai train: interrupted before training started; no checkpoint was written"


def abort_at_once(signum: int, argv: Sequence[str], out: str) -> None:
    """A second signal while the main thread is inside a native step: say where the run stands, leave now.

    No unwinding is possible there, so this exits the process: the flock on --out goes with it and a
    checkpoint being written stays a temporary directory that resume ignores.
    """
    print(stopped_line(StopAborted(signum), argv, out), file=sys.stderr, flush=True)
    os._exit(exit_code(signum))


def cli_main(argv: Sequence[str]) -> int:
    """0 ok, 1 data/model/checkpoint/run-directory problem, 2 usage, 3 aborted (memory guard or non-finite
    steps; checkpoint saved), 128 + N stopped by signal N (SIGTERM 143, SIGINT 130, SIGHUP 129; checkpoint of
    the last finished step)."""
    args = parse_args(argv)
    if args.resume and args.overwrite:
        return fail("train", ValueError("--resume continues the run in --out and --overwrite starts it over: "
                                        "choose one"), EXIT_USAGE)
    try:
        config = config_from_args(args)
        if args.resume:  # before curating default data: say at once that there is nothing to resume
            require_checkpoint(Path(args.out))
        data_dir = resolve_data(config, args.data, args.out)
        # from the model load on, a stop signal ends with a checkpoint; a second one ends the process at once
        with graceful_stop(abort_now=lambda signum: abort_at_once(signum, argv, args.out)) as request:
            try:
                result = run_training(config, args.out, data_dir=data_dir, resume=args.resume,
                                      overwrite=args.overwrite, progress=not args.no_progress)
            except (TrainingStopped, StopAborted) as stop:
                request.finish()  # still under the handlers: a late signal (mlx.launch ending a rank) cannot cut this short
                print(stopped_line(stop, argv, args.out), file=sys.stderr)
                return stop.exit_code
    except KeyboardInterrupt:  # Ctrl-C while the data was being prepared
        print(stopped_line(KeyboardInterrupt(), argv, args.out), file=sys.stderr)
        return exit_code(signal.SIGINT)
    except ConfigError as err:
        return fail("train", err, EXIT_USAGE)
    except (DataError, ModelError, CheckpointError, RunDirError, OSError) as err:
        return fail("train", err, EXIT_DATA)
    except TrainingAbort as err:
        return fail("train", err, EXIT_ABORTED, prefix="aborted: ")
    last = result.last
    print(f"trained {result.steps} steps into {result.adapters_dir} (loss {last.get('loss')}, "
          f"median {result.tokens_per_s:.0f} tokens/s); metrics in {result.metrics_path}")
    return EXIT_OK
