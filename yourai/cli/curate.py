"""`yourai curate SOURCE... --out DIR [-c CONFIG] [key=value ...]`: raw sources → curated train/valid/test JSONL + report."""

from __future__ import annotations

import argparse
import dataclasses
import re
import sys
from pathlib import Path
from typing import Any, Sequence

from yourai.cli.errors import fail
from yourai.config import Config, ConfigError, load_config, parse_overrides
from yourai.data.curate import curate
from yourai.data.report import CurateError, format_summary, top_reject_reasons
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


def flag_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """--default FIELD=VALUE, --field FIELD=NAME and --csv-columns as dotted config overrides (one path for
    flags and config files). A --default value is typed as YAML (year=1850 is a number); a --field name is text."""
    overrides: dict[str, Any] = {}
    for flag, section in (("default", "defaults"), ("field", "fields")):
        for item in getattr(args, flag) or []:
            name, _, value = item.partition("=")
            if not name.strip() or not _:
                example = "license=CC0-1.0" if flag == "default" else "origin=url"
                raise ConfigError(f"--{flag} {item!r}: expected FIELD=VALUE, e.g. --{flag} {example}")
            key = f"curate.{section}.{name.strip()}"
            overrides[key] = parse_overrides([f"{key}={value}"])[key] if flag == "default" else value.strip()
    if args.csv_columns:
        overrides["curate.csv_columns"] = [column.strip() for column in args.csv_columns.split(",")]
    return overrides


def cli_main(argv: list[str]) -> int:
    """`yourai curate SOURCE... --out DIR [-c CONFIG] [key=value ...]`; 0 ok, 1 data error (under on_error=fail, or
    nothing survived), 2 usage."""
    parser = argparse.ArgumentParser(prog="yourai curate", description="curate sources into train/valid/test JSONL with a report")
    parser.add_argument("items", nargs="*", metavar="SOURCE|key=value",
                        help="JSONL/CSV files, .txt/.md folders, hf:NAME[:SPLIT]; default: curate.sources")
    parser.add_argument("--out", required=True, help="run directory for the outputs")
    parser.add_argument("-c", "--config", help="YAML config (default: configs/default.yaml)")
    parser.add_argument("--default", action="append", metavar="FIELD=VALUE",
                        help="value for records that lack FIELD, e.g. license=CC0-1.0 (curate.defaults)")
    parser.add_argument("--field", action="append", metavar="FIELD=NAME",
                        help="take contract FIELD from the input's NAME, e.g. text=body or origin=url (curate.fields)")
    parser.add_argument("--csv-columns", metavar="A,B,...", help="CSV files have no header row: these are its columns")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = parser.parse_intermixed_args(argv)
    sources, overrides = split_cli_items(args.items)
    try:
        config = load_config(args.config, {**parse_overrides(overrides), **flag_overrides(args)})
        report = curate(sources or None, args.out, config.curate, workers=config.scoring.workers,
                        progress=not args.no_progress and sys.stderr.isatty())
    except CurateError as err:
        return fail("curate", err, EXIT_DATA_ERROR)
    except (ConfigError, SourceError, OSError) as err:
        return fail("curate", err, EXIT_USAGE)
    print(format_summary(report, args.out))
    if report["reconciliation"]["output_records"] == 0:
        read = report["reconciliation"]["input_records"]
        print(f"yourai curate: nothing was curated: all {read} input record(s) were rejected (see "
              f"{Path(args.out) / 'rejects.jsonl'}); top reasons: " + "; ".join(top_reject_reasons(report)),
              file=sys.stderr)
        return EXIT_DATA_ERROR
    return EXIT_OK
