"""The registry: every run.json under a folder, as one pandas table you can filter.

Filters are `KEY OP VALUE` with OP one of = != >= <= > <, e.g. `loss.objective=weighted`, `val_gap<0`,
`status!=ok`. KEY is looked up in the record as written (`kind`, `sweep.arm`, `git.dirty`), then under
`config.` and then under `metrics.`, so the short names people type work.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from yourai.runs.record import RUN_RECORD, effective_status, read_record

WHERE_PATTERN = re.compile(r"^\s*([A-Za-z0-9_.:\-]+)\s*(!=|>=|<=|=|>|<)\s*(.*)$")
DEFAULT_CONFIG_COLUMNS = ("loss.objective", "loss.scheme", "train.seed", "train.steps")


@dataclass(frozen=True)
class Condition:
    key: str
    op: str
    value: Any

    def holds(self, flat: Mapping[str, Any]) -> bool:
        """True when the record has the key and its value satisfies the comparison."""
        found = lookup(flat, self.key)
        if found is _MISSING:
            return False
        if self.op in ("=", "!="):
            equal = found == self.value or str(found) == str(self.value)
            return equal if self.op == "=" else not equal
        try:
            return {">": found > self.value, "<": found < self.value, ">=": found >= self.value,
                    "<=": found <= self.value}[self.op]
        except TypeError:
            return False


_MISSING = object()


def parse_where(expression: str) -> Condition:
    """`loss.objective=weighted` → Condition; the value is read as YAML (numbers, booleans, null)."""
    import yaml

    match = WHERE_PATTERN.match(expression)
    if not match:
        raise ValueError(f"--where {expression!r}: expected KEY=VALUE (or != >= <= > <), e.g. loss.objective=weighted")
    key, op, raw = match.groups()
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return Condition(key, op, value)


def flatten(mapping: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} → {"a.b": 1}; lists stay values."""
    flat: dict[str, Any] = {}
    for key, value in mapping.items():
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def lookup(flat: Mapping[str, Any], key: str) -> Any:
    for candidate in (key, f"config.{key}", f"metrics.{key}"):
        if candidate in flat:
            return flat[candidate]
    return _MISSING


def find_runs(roots: Iterable[str | Path]) -> tuple[list[tuple[Path, dict]], list[str]]:
    """(run dir, record) for every run.json under the roots, oldest first; unreadable records as messages."""
    found, problems = [], []
    for root in roots:
        root = Path(root)
        if not root.exists():
            problems.append(f"{root}: no such folder")
            continue
        for path in sorted(root.rglob(RUN_RECORD)):
            try:
                found.append((path.parent, read_record(path.parent)))
            except ValueError as error:
                problems.append(str(error))
    found.sort(key=lambda pair: pair[1].get("started", ""))
    return found, problems


def run_row(run_dir: Path, record: Mapping[str, Any], root: Path | None = None,
            config_columns: Sequence[str] = DEFAULT_CONFIG_COLUMNS) -> dict[str, Any]:
    """One table row: where the run is, what kind, how it ended, its key settings and headline metrics."""
    config = flatten(record.get("config") or {})
    git = record.get("git") or {}
    name = str(run_dir.relative_to(root)) if root is not None and run_dir.is_relative_to(root) else str(run_dir)
    row = {"run": name, "kind": record.get("kind"), "status": effective_status(record),
           "started": record.get("started"), "model": (record.get("model") or {}).get("id"),
           "config_hash": (record.get("config_hash") or "")[:10],
           "git": (git.get("commit") or "")[:8] + ("+dirty" if git.get("dirty") else "")}
    row.update({key: config.get(key) for key in config_columns})
    row.update(record.get("metrics") or {})
    return row


def runs_table(roots: Sequence[str | Path], where: Sequence[str] = (),
               config_columns: Sequence[str] = DEFAULT_CONFIG_COLUMNS) -> tuple[Any, list[str]]:
    """(DataFrame of the matching runs, problems met while reading); filters all have to hold."""
    import pandas as pd

    conditions = [parse_where(expression) for expression in where]
    rows = []
    found, problems = find_runs(roots)
    for run_dir, record in found:
        flat = flatten({**record, "status": effective_status(record)})
        if all(condition.holds(flat) for condition in conditions):
            root = next((Path(r) for r in roots if run_dir.is_relative_to(Path(r))), None)
            rows.append(run_row(run_dir, record, root, config_columns))
    return pd.DataFrame(rows), problems
