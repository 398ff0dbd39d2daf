"""`yourai runs` (the table of recorded runs, filterable) and `yourai compare A B [C...]` (what differs, and by how much)."""

from __future__ import annotations

import argparse
import json
import sys

from yourai.paths import PROJECT_ROOT
from yourai.runs.compare import comparison
from yourai.runs.registry import DEFAULT_CONFIG_COLUMNS, runs_table


def runs_main(argv: list[str]) -> int:
    """Print every run under --root (default runs/) as a table, or as JSON records with --json."""
    parser = argparse.ArgumentParser(prog="yourai runs", description="list recorded runs (every run.json under --root)")
    parser.add_argument("--root", action="append", default=None, help="folder to search (repeatable; default runs/)")
    parser.add_argument("--where", action="append", default=[], metavar="KEY=VALUE",
                        help="keep runs where KEY (=, !=, >=, <=, >, <) VALUE, e.g. loss.objective=weighted, "
                             "status=ok, val_gap<0; repeat to require several")
    parser.add_argument("--columns", default=",".join(DEFAULT_CONFIG_COLUMNS),
                        help="comma-separated config keys shown as columns")
    parser.add_argument("--json", action="store_true", help="print the rows as a JSON list")
    args = parser.parse_args(argv)
    roots = args.root or [str(PROJECT_ROOT / "runs")]
    try:
        table, problems = runs_table(roots, args.where, [c.strip() for c in args.columns.split(",") if c.strip()])
    except ValueError as error:
        print(f"yourai runs: {error}", file=sys.stderr)
        return 2
    for problem in problems:
        print(f"yourai runs: skipped {problem}", file=sys.stderr)
    if args.json:
        print(table.to_json(orient="records", indent=1))
    elif table.empty:
        print(f"no runs under {', '.join(roots)}" + (f" matching {' and '.join(args.where)}" if args.where else ""))
    else:
        print(table.to_string(index=False, float_format=lambda value: f"{value:.4g}"))
    return 0


def compare_main(argv: list[str]) -> int:
    """Config differences, headline metrics side by side, paired deltas (with CIs) on shared eval sets."""
    parser = argparse.ArgumentParser(prog="yourai compare", description="compare run directories")
    parser.add_argument("runs", nargs="+", help="two or more run directories; deltas are against the first")
    parser.add_argument("--json", action="store_true", help="print the comparison as JSON")
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap and the permutation test")
    args = parser.parse_args(argv)
    try:
        result = comparison(args.runs, args.seed)
    except (ValueError, OSError) as error:
        print(f"yourai compare: {error}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({"runs": result["runs"], "config": json.loads(result["config"].to_json(orient="index")),
                          "metrics": json.loads(result["metrics"].to_json(orient="index")),
                          "deltas": result["deltas"]}, indent=1))
        return 0
    config = result["config"]
    print("settings that differ:\n" + (config.to_string() if not config.empty else "  (none: same config)"))
    print("\nheadline metrics:\n" + result["metrics"].to_string(float_format=lambda value: f"{value:.4g}"))
    if result["deltas"]:
        print("\npaired deltas (per question, against the first run):")
        for row in result["deltas"]:
            low, high = row["ci"]
            print(f"  {row['eval']:<12} {row['metric']:<10} {row['run']} − {row['vs']}: {row['delta']:+.4f} "
                  f"[{low:+.4f}, {high:+.4f}]  p={row['p_value']:.4f}  n={row['n']}")
    else:
        print("\nno paired deltas: the runs share no eval set (same results name and data file)")
    return 0
