"""`yourai doctor [--json]`: the machine, MLX backend and BLAS, the matching hardware profile, recommended models."""

from __future__ import annotations

import argparse
import json

from yourai.hardware import doctor_report, format_doctor


def cli_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="yourai doctor", description=__doc__.split(":", 1)[1].strip())
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    report = doctor_report()
    print(json.dumps(report, indent=2) if args.json else format_doctor(report))
    return 0
