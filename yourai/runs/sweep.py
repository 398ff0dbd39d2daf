"""Sweeps: a grid of config overrides, one recorded run per cell, resumable, compared arm by arm.

A sweep spec (YAML, e.g. `configs/sweeps/objective_seeds.yaml`):

    name: objective-seeds
    config: null                    # base config file (default configs/default.yaml)
    overrides: {train.steps: 40}    # applied to every cell
    grid:                           # every combination is a cell; any dotted config keys
      loss.objective: [plain, faithful, weighted]
      train.seed: [0, 1, 2]
    seed_key: train.seed            # cells that differ only in this key are one arm's replicates
    baseline: {loss.objective: plain}   # the arm every other arm is compared with
    stages: [train, eval]           # eval = TruthfulQA as config.eval says (data, limit, modes)
    tasks: []                       # extra MC task specs scored in each cell (yourai eval --task)

Cells run in order into `<out>/cells/<cell id>/`, each through the same recorded stages as `yourai train`
and `yourai eval` (yourai.runs.stages). A cell whose run.json says every stage finished with the same
config is skipped, so a killed sweep continues where it stopped (training resumes from its last
checkpoint, bit for bit). The results are written by yourai.runs.sweep_results.
"""

from __future__ import annotations

import itertools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from yourai.config import Config, ConfigError, load_config, read_yaml, to_dict, with_overrides
from yourai.eval.truthfulqa import EvalOptions
from yourai.notebook.experiments import can_resume, resolve_data
from yourai.paths import PROJECT_ROOT
from yourai.runs.record import config_hash, read_record
from yourai.runs.stages import run_evaluation, run_training

SPEC_KEYS = {"name", "config", "overrides", "grid", "seed_key", "baseline", "stages", "tasks"}
STAGES = ("train", "eval")
SWEEP_FILE = "sweep.json"


@dataclass(frozen=True)
class Cell:
    """One grid point: its id (folder name), arm label, seed, the overrides that define it, its config."""

    id: str
    arm: str
    seed: Any
    values: dict
    config: Config = field(repr=False)


@dataclass(frozen=True)
class SweepSpec:
    name: str
    source: str
    base_config: str | None
    overrides: dict
    grid: dict
    seed_key: str
    baseline: str
    stages: tuple
    tasks: tuple


def _short_keys(keys: Sequence[str]) -> dict[str, str]:
    """The last part of each dotted key (`loss.objective` → objective) unless two keys share it."""
    last = [key.split(".")[-1] for key in keys]
    return {key: short if last.count(short) == 1 else key for key, short in zip(keys, last)}


def _slug(value: Any) -> str:
    return re.sub(r"[^A-Za-z0-9_.+-]+", "_", str(value)) or "_"


def arm_label(values: Mapping[str, Any], seed_key: str) -> str:
    """`objective=weighted scheme=roemmele`: the non-seed values of a cell."""
    short = _short_keys(list(values))
    return " ".join(f"{short[key]}={value}" for key, value in values.items() if key != seed_key) or "all"


def load_sweep_spec(path: str | Path) -> SweepSpec:
    """Read a sweep spec; every problem names the file and the key."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: sweep spec not found")
    raw = read_yaml(path)
    unknown = sorted(set(raw) - SPEC_KEYS)
    if unknown:
        raise ValueError(f"{path}: unknown key(s) {unknown}; known: {sorted(SPEC_KEYS)}")
    grid = raw.get("grid")
    if not isinstance(grid, dict) or not grid or not all(isinstance(v, list) and v for v in grid.values()):
        raise ValueError(f"{path}: grid: expected a mapping of dotted config keys to non-empty lists of values")
    seed_key = raw.get("seed_key", "train.seed")
    stages = tuple(raw.get("stages", STAGES))
    if not stages or any(stage not in STAGES for stage in stages) or "train" not in stages:
        raise ValueError(f"{path}: stages: expected [train] or [train, eval], got {list(stages)}")
    overrides = raw.get("overrides") or {}
    if not isinstance(overrides, dict):
        raise ValueError(f"{path}: overrides: expected a mapping of dotted keys to values")
    baseline = raw.get("baseline") or {key: values[0] for key, values in grid.items() if key != seed_key}
    if not isinstance(baseline, dict):
        raise ValueError(f"{path}: baseline: expected a mapping such as {{loss.objective: plain}}")
    missing = [key for key in grid if key != seed_key and key not in baseline]
    if missing or any(key not in grid or value not in grid[key] for key, value in baseline.items()):
        raise ValueError(f"{path}: baseline {baseline}: must give one grid value for each of "
                         f"{[k for k in grid if k != seed_key]}")
    ordered = {key: baseline[key] for key in grid if key != seed_key}
    return SweepSpec(name=str(raw.get("name") or path.stem), source=str(path), base_config=raw.get("config"),
                     overrides=dict(overrides), grid=dict(grid), seed_key=seed_key,
                     baseline=arm_label(ordered, seed_key), stages=stages, tasks=tuple(raw.get("tasks") or ()))


def _base_config(spec: SweepSpec, extra_overrides: Mapping[str, Any]) -> Config:
    path = spec.base_config
    if path is not None and not Path(path).is_absolute():
        beside = Path(spec.source).parent / path
        path = str(beside if beside.exists() else PROJECT_ROOT / path)
    return load_config(path, {**spec.overrides, **dict(extra_overrides)})


def expand(spec: SweepSpec, extra_overrides: Mapping[str, Any] = ()) -> list[Cell]:
    """Every grid combination as a validated cell, in the spec's order (the last key varies fastest)."""
    base = _base_config(spec, dict(extra_overrides))
    keys = list(spec.grid)
    short = _short_keys(keys)
    cells = []
    for combination in itertools.product(*(spec.grid[key] for key in keys)):
        values = dict(zip(keys, combination))
        try:
            config = with_overrides(base, values, f"{spec.source}: grid cell")
        except ConfigError as error:
            raise ValueError(str(error)) from error
        cell_id = "__".join(f"{short[key]}-{_slug(value)}" for key, value in values.items())
        cells.append(Cell(cell_id, arm_label(values, spec.seed_key), values.get(spec.seed_key), values, config))
    return cells


def cell_finished(cell_dir: Path, cell: Cell, spec: SweepSpec) -> bool:
    """True when run.json records every stage of this cell as ok, under this very config.

    A record made under another config means the spec changed since: that is an error, not a rerun,
    because mixing the two would make the comparison meaningless.
    """
    record = read_record(cell_dir)
    if not record:
        return False
    if record.get("config_hash") != config_hash(to_dict(cell.config)):
        raise ValueError(f"{cell_dir}: this cell was run with a different config (the spec or its overrides "
                         f"changed); write the sweep to a new --out folder or remove {cell_dir}")
    return all(record["stages"].get(stage, {}).get("status") == "ok" for stage in _stage_names(spec))


def _stage_names(spec: SweepSpec) -> list[str]:
    return ["train"] + (["eval"] if "eval" in spec.stages else []) + [f"eval:{task}" for task in spec.tasks]


def eval_options(config: Config) -> EvalOptions:
    """The EvalOptions config.eval describes (a sweep cell evaluates as `yourai run`'s stage 06 does)."""
    return EvalOptions(modes=tuple(config.eval.modes), chat_template=config.eval.chat_template, seed=config.eval.seed,
                       progress=False)


def run_cell(cell: Cell, spec: SweepSpec, sweep_dir: Path, data_dir: Path, progress: bool = False) -> Path:
    """Train (resuming from a checkpoint when one is there) and evaluate one cell, skipping stages already done."""
    cell_dir = sweep_dir / "cells" / cell.id
    extra = {"sweep": {"name": spec.name, "dir": str(sweep_dir), "cell": cell.id, "arm": cell.arm,
                       "seed": cell.seed, "values": cell.values}}
    done = (read_record(cell_dir).get("stages") or {}) if (cell_dir / "run.json").is_file() else {}
    adapters = cell_dir / "adapters"
    if done.get("train", {}).get("status") != "ok" or not (adapters / "adapters.safetensors").is_file():
        resuming = can_resume(cell_dir)  # a killed cell continues from its checkpoint; anything else starts over
        adapters = run_training(cell.config, cell_dir, data_dir=data_dir, resume=resuming, overwrite=not resuming,
                                progress=progress, kind="sweep-cell", extra=extra).adapters_dir
    evals = ([("eval", None)] if "eval" in spec.stages else []) + [(f"eval:{task}", task) for task in spec.tasks]
    for stage, task in evals:
        if done.get(stage, {}).get("status") == "ok":
            continue
        run_evaluation(cell_dir / f"{task or 'truthfulqa'}.json", model=cell.config.model.path, adapter=str(adapters),
                       data="auto" if task else cell.config.eval.data, limit=cell.config.eval.limit,
                       options=eval_options(cell.config),
                       task=task, include_base=False, kind="sweep-cell", config=cell.config, extra=extra)
    return cell_dir


def sweep_data(cells: Sequence[Cell], sweep_dir: Path) -> dict[str, Path]:
    """Curated data per distinct curate config (usually one), shared by every cell that uses it."""
    by_hash: dict[str, Path] = {}
    for cell in cells:
        key = config_hash(to_dict(cell.config.curate))[:12]
        if key not in by_hash:
            by_hash[key] = resolve_data(cell.config, None, sweep_dir / "curated" / key)
    return by_hash


def run_sweep(spec: SweepSpec, sweep_dir: str | Path, *, extra_overrides: Mapping[str, Any] = (),
              progress: bool = False, report: Callable[[str], None] = print,
              after_cell: Callable[[Cell], None] | None = None) -> dict[str, str]:
    """Run every unfinished cell in order, rewriting the results after each; returns {cell id: error} of failures.

    A failing cell (a non-finite abort, a bad value) is recorded as failed in its run.json and the sweep
    goes on with the other cells; rerunning the sweep retries it.
    """
    from yourai.runs.sweep_results import write_sweep_results

    sweep_dir = Path(sweep_dir).resolve()
    cells = expand(spec, extra_overrides)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    (sweep_dir / SWEEP_FILE).write_text(json.dumps(
        {"name": spec.name, "spec": spec.source, "grid": spec.grid, "overrides": {**spec.overrides, **dict(extra_overrides)},
         "seed_key": spec.seed_key, "baseline": spec.baseline, "stages": list(spec.stages), "tasks": list(spec.tasks),
         "cells": [{"id": c.id, "arm": c.arm, "seed": c.seed, "values": c.values} for c in cells]}, indent=1) + "\n")
    data = sweep_data(cells, sweep_dir)
    failures: dict[str, str] = {}
    for position, cell in enumerate(cells, 1):
        cell_dir = sweep_dir / "cells" / cell.id
        if cell_finished(cell_dir, cell, spec):
            report(f"[{position}/{len(cells)}] {cell.id}: finished earlier, skipped")
            continue
        report(f"[{position}/{len(cells)}] {cell.id}: running ({', '.join(_stage_names(spec))})")
        try:
            run_cell(cell, spec, sweep_dir, data[config_hash(to_dict(cell.config.curate))[:12]], progress)
        except Exception as error:  # recorded in the cell's run.json; the other cells do not depend on it
            failures[cell.id] = f"{type(error).__name__}: {error}"
            report(f"[{position}/{len(cells)}] {cell.id}: FAILED: {failures[cell.id]}")
        write_sweep_results(sweep_dir)
        if after_cell is not None:
            after_cell(cell)
    write_sweep_results(sweep_dir)
    return failures
