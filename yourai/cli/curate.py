"""`yourai curate SOURCE... --out DIR [-c CONFIG] [key=value ...]`: raw sources → curated train/valid/test JSONL + report."""

from __future__ import annotations

import argparse
import dataclasses
import re
import sys
from pathlib import Path
from typing import Sequence

from yourai.config import Config, ConfigError, load_config
from yourai.data.curate import curate
from yourai.data.report import CurateError, format_summary
from yourai.data.sources import SourceError


_OVERRIDE_RE = re.compile(r"^[A-Za-z_][\w.]*=")
EXIT_OK, EXIT_DATA_ERROR, EXIT_USAGE = 0, 1, 2


def split_cli_items(items: Sequence[str]) -> tuple[list[str], list[str]]:
    """SOURCE and key=value arguments share the positional list; a bare key means curate.<key>."""
    sources, overrides = [], []
    sections = {f.name for f in dataclasses.fields(Config)}
    for item in items:
        if _OVERRIDE_RE.match(item) and not Path(item).exists():
            key = item.split("=", 1)[0]
            overrides.append(item if key.split(".")[0] in sections else f"curate.{item}")
        else:
            sources.append(item)
    return sources, overrides


def cli_main(argv: list[str]) -> int:
    """`yourai curate SOURCE... --out DIR [-c CONFIG] [key=value ...]`; 0 ok, 1 data error under fail, 2 usage."""
    parser = argparse.ArgumentParser(prog="yourai curate", description="curate sources into train/valid/test JSONL with a report")
    parser.add_argument("items", nargs="*", metavar="SOURCE|key=value",
                        help="JSONL/CSV files, .txt/.md folders, hf:NAME[:SPLIT]; default: curate.sources")
    parser.add_argument("--out", required=True, help="run directory for the outputs")
    parser.add_argument("-c", "--config", help="YAML config (default: configs/default.yaml)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = parser.parse_intermixed_args(argv)
    sources, overrides = split_cli_items(args.items)
    try:
        config = load_config(args.config, overrides)
        report = curate(sources or None, args.out, config.curate, workers=config.scoring.workers,
                        progress=not args.no_progress and sys.stderr.isatty())
    except CurateError as err:
        print(f"yourai curate: {err}", file=sys.stderr)
        return EXIT_DATA_ERROR
    except (ConfigError, SourceError, OSError) as err:
        print(f"yourai curate: {err}", file=sys.stderr)
        return EXIT_USAGE
    print(format_summary(report, args.out))
    return EXIT_OK


