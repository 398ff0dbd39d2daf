"""How YAML becomes validated frozen dataclasses: field constraints, the checks, dotted overrides.

Generic on purpose: yourai/config.py declares the settings with `_bounded`, `_choice`, `_items` and
`_records`, and `build` walks any dataclass, rejecting unknown keys and bad values with the source and
the dotted key. Task and sweep specs read their YAML through `read_yaml`.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from dataclasses import field
from pathlib import Path
from typing import Any, Iterable, Mapping, Union

import yaml

class _Loader(yaml.SafeLoader):
    """safe_load, plus YAML 1.2 floats: PyYAML reads `2e-4` (no dot) as a string."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)[eE][-+]?\d+$"),
    list("-+0123456789."),
)


def _safe_load(stream: Any) -> Any:
    return yaml.load(stream, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader


class ConfigError(ValueError):
    """A configuration problem, always naming the source and the dotted key."""


def _bounded(default: Any, lo: float | None = None, hi: float | None = None) -> Any:
    return field(default=default, metadata={"bounds": (lo, hi)})


def _choice(default: Any, *choices: Any) -> Any:
    return field(default=default, metadata={"choices": choices})


def _items(*values: Any, of: tuple[type, ...] = (str,)) -> Any:
    """A list setting whose elements must be of the types `of` (checked at load, naming the index)."""
    return field(default_factory=lambda: list(values), metadata={"items": of})


def _records(cls: type) -> Any:
    """A list setting whose elements are mappings built into the dataclass `cls` (e.g. recommended models)."""
    return field(default_factory=list, metadata={"records": cls})


def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _check_scalar(value: Any, tp: Any, where: str) -> Any:
    """Return value coerced to tp (int → float allowed) or raise naming `where`."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _check_scalar(value, arg, where)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0])
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{where}: must be a finite number, got {value!r}")
    if tp is dict or origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__} {value!r}")
        return value
    if tp in (list, typing.List) or origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__} {value!r}")
        return value
    if tp is Any:
        return value
    if tp in (int, float, str, bool):
        if isinstance(value, bool) and tp is not bool or not isinstance(value, tp):
            raise ConfigError(f"{where}: expected {tp.__name__}, got {type(value).__name__} {value!r}")
        return value
    raise ConfigError(f"{where}: unsupported type {tp!r}")


def _check_constraints(value: Any, meta: Mapping[str, Any], where: str) -> None:
    if value is None:
        return
    lo, hi = meta.get("bounds", (None, None))
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise ConfigError(f"{where}: {value!r} is outside the allowed range [{lo}, {hi}]")
    choices = meta.get("choices")
    if choices and value not in choices:
        raise ConfigError(f"{where}: {value!r} is not one of {list(choices)}")
    item_types = meta.get("items")
    for index, item in enumerate(value if item_types else ()):
        if isinstance(item, bool) or not isinstance(item, item_types):
            wanted = " or ".join("a mapping" if t is dict else t.__name__ for t in item_types)
            raise ConfigError(f"{where}[{index}]: expected {wanted}, got {type(item).__name__} {item!r}")


def build(cls: type, data: Mapping[str, Any] | None, source: str, prefix: str = "") -> Any:
    """Build dataclass `cls` from a mapping, rejecting unknown keys and bad values."""
    data = {} if data is None else data
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: {prefix or '<root>'}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        if key not in known:
            raise ConfigError(f"{source}: unknown key '{prefix}{key}' (known: {', '.join(sorted(known))})")
    kwargs = {}
    for name, value in data.items():
        where = f"{source}: {prefix}{name}"
        tp = hints[name]
        if _is_dataclass_type(tp):
            kwargs[name] = build(tp, value, source, f"{prefix}{name}.")
            continue
        if "records" in known[name].metadata:  # a list of sub-sections, each built and checked like one
            records = _check_scalar(value, list, where)
            kwargs[name] = [build(known[name].metadata["records"], v, source, f"{prefix}{name}[{i}].")
                            for i, v in enumerate(records)]
            continue
        checked = _check_scalar(value, tp, where)
        _check_constraints(checked, known[name].metadata, where)
        kwargs[name] = checked
    return cls(**kwargs)


def _set_dotted(tree: dict, dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {dotted}: '{part}' is not a section")
        node = child
    node[parts[-1]] = value


def parse_overrides(overrides: Iterable[str] | Mapping[str, Any]) -> dict[str, Any]:
    """`["train.lora.rank=16"]` (CLI) or `{"train.lora.rank": 16}` (papermill) → {dotted: value}."""
    if isinstance(overrides, Mapping):
        return dict(overrides)
    parsed = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected key=value, e.g. train.lora.rank=16")
        key, raw = item.split("=", 1)
        if not key.strip():
            raise ConfigError(f"override {item!r}: the key before '=' is empty")
        try:
            parsed[key.strip()] = _safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as err:
            problem = getattr(err, "problem", None) or str(err).splitlines()[0]
            raise ConfigError(f"override {item!r}: the value is not valid YAML ({problem}); "
                              "put it in quotes to pass it as a string") from err
    return parsed


def _read_yaml(path: Path) -> dict:
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found" if not path.exists() else f"{path}: not a file")
    try:
        with open(path, encoding="utf-8") as handle:
            data = _safe_load(handle)
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not valid UTF-8 (byte {err.start}: {err.reason}); save the file as UTF-8") from err
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: invalid YAML: {err}") from err
    if data is not None and not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping, got {type(data).__name__}")
    return data or {}


def read_yaml(path: str | Path) -> dict:
    """A YAML file whose top level is a mapping (task and sweep specs), errors naming the file."""
    return _read_yaml(Path(path))
