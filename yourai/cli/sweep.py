"""`yourai sweep SPEC.yaml [--out DIR] [key=value ...]`: a resumable grid of runs with paired intervals vs a baseline arm."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from yourai.config import ConfigError, parse_overrides
from yourai.paths import PROJECT_ROOT
from yourai.runs.sweep import load_sweep_spec, run_sweep
from yourai.runs.sweep_results import SUMMARY_JSON, format_deltas

ANALYSIS_NOTEBOOK = "07_sweep_analysis.ipynb"


def analyse(sweep_dir: Path, notebooks_dir: Path) -> str:
    """Execute notebook 07 on the sweep (its table and forest plot) into <sweep>/notebooks/; returns what happened."""
    from yourai.pipeline import execute_stage

    result = execute_stage("07", notebooks_dir / ANALYSIS_NOTEBOOK, sweep_dir,
                           {"run_dir": str(sweep_dir), "sweep_spec": None}, required=frozenset({"run_dir", "sweep_spec"}))
    return f"analysis notebook: {result.notebook} ({result.status}{': ' + result.error if result.error else ''})"


def cli_main(argv: list[str]) -> int:
    """0 every cell finished, 1 some cell failed (the others ran; rerun to retry), 2 a bad spec or override."""
    parser = argparse.ArgumentParser(prog="yourai sweep", description="run every cell of a grid of configs (train + "
                                     "eval), skipping finished cells, and compare each arm with the baseline arm")
    parser.add_argument("spec", type=Path, help="sweep spec YAML, e.g. configs/sweeps/objective_seeds.yaml")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default runs/sweeps/<name>)")
    parser.add_argument("--no-notebook", action="store_true", help=f"do not execute notebooks/{ANALYSIS_NOTEBOOK}")
    parser.add_argument("--notebooks-dir", type=Path, default=PROJECT_ROOT / "notebooks")
    parser.add_argument("--progress", action="store_true", help="progress bars inside each cell")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="overrides for every cell, e.g. train.steps=20")
    args = parser.parse_intermixed_args(argv)
    try:
        spec = load_sweep_spec(args.spec)
        out = args.out or PROJECT_ROOT / "runs" / "sweeps" / spec.name
        failures = run_sweep(spec, out, extra_overrides=parse_overrides(args.overrides), progress=args.progress)
    except (ValueError, ConfigError) as error:
        print(f"yourai sweep: {error}", file=sys.stderr)
        return 2
    summary = json.loads((out / SUMMARY_JSON).read_text())
    print(f"\nsweep {spec.name}: {summary['cells']} cells {summary['status']}; baseline arm: {summary['baseline']}")
    print(format_deltas(summary["comparisons"]))
    print(f"results: {out / 'results.csv'}  summary: {out / 'summary.md'}")
    if not args.no_notebook:
        print(analyse(out.resolve(), args.notebooks_dir))
    for cell, error in failures.items():
        print(f"yourai sweep: cell {cell} failed: {error}", file=sys.stderr)
    return 1 if failures else 0
