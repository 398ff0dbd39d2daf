"""`yourai doctor [--json]`: the machine, MLX backend and BLAS, the matching hardware profile, recommended models,
and the packaged models (installed or not, with the command that installs them)."""

from __future__ import annotations

import argparse
import json

from yourai.hardware import doctor_report, format_doctor
from yourai.models import native
from yourai.models.registry import packaged_model_status


def format_packaged_models(rows: list[dict]) -> str:
    """One line per packaged model: usable as `--model NAME`, or how to install it."""
    lines = ["Packaged models (model.path / --model; no hub needed):"]
    for row in rows:
        if row["installed"]:
            state = f"installed ({row['version']}), " + ("imported" if row["imported"] else "imported on first use")
            state += f" into {row['cache_dir']}"
        else:
            state = f"not installed: {row['install_command']}"
        lines.append(f"  {row['name']:<24} {state}")
        lines.append(f"  {'':<24} {row['description']}")
    return "\n".join(lines)


def native_report() -> dict:
    """The fused CPU kernels: in use (and where the build lies), or why MLX's ops run instead."""
    state = native.status()
    return {"in_use": state.module is not None, "status": state.reason, "library": str(state.path) if state.path else None,
            "threads": state.module.threads() if state.module else None}


def format_native(report: dict) -> str:
    if report["in_use"]:
        return f"CPU kernels      in use, {report['threads']} threads ({report['library']})"
    return f"CPU kernels      not in use: {report['status']}"


def cli_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="yourai doctor", description=__doc__.split(":", 1)[1].strip())
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    report = {**doctor_report(), "native_kernels": native_report(), "packaged_models": packaged_model_status()}
    print(json.dumps(report, indent=2) if args.json else
          "\n".join([format_doctor(report), format_native(report["native_kernels"]),
                     format_packaged_models(report["packaged_models"])]))
    return 0
