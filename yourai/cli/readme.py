"""`yourai readme-numbers [RUN_SUMMARY]`: carry a demo run's numbers into docs/demo_numbers.json and the README."""

from __future__ import annotations

import argparse
from pathlib import Path

from yourai.cli.errors import fail
from yourai.paths import PROJECT_ROOT
from yourai.readme_numbers import NUMBERS_FILE, README, render, update


def cli_main(argv: list[str]) -> int:
    """Rewrite the README's demo-numbers block from a `yourai run` summary.json (`make demo` calls this)."""
    parser = argparse.ArgumentParser(prog="yourai readme-numbers", description=__doc__.split(":", 1)[1].strip())
    parser.add_argument("summary", nargs="?", type=Path, default=PROJECT_ROOT / "runs" / "demo" / "summary.json",
                        help="a run's summary.json (default: runs/demo/summary.json)")
    args = parser.parse_args(argv)
    try:
        numbers = update(args.summary)
    except (OSError, ValueError, KeyError) as error:
        return fail("readme-numbers", error if not isinstance(error, KeyError) else
                    ValueError(f"{args.summary}: not a complete run summary (missing {error})"))
    print(f"{NUMBERS_FILE} and {README} now say:\n{render(numbers)}")
    return 0
