"""Typed, frozen configuration loaded from YAML and validated once at the boundary.

Every section is a frozen dataclass. Field metadata carries the constraints
(`bounds=(lo, hi)` inclusive, `choices=(...)`), so a bad value fails at load time
with the file and the dotted key, never deep inside training.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Union

import yaml

from yourai.formula import (ALPHA_RANGE, AUTHORITY_RANGE, DEFAULT_ALPHA, DEFAULT_LAMBDA, DEFAULT_WEIGHT_CAP,
                            OBJECTIVES, SCHEMES)
from yourai.paths import configs_dir
from yourai.tiers import CONSENSUS_MIN_AUTHORITY, PRIMARY_MAX_AUTHORITY


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


def _items(*values: Any) -> Any:
    return field(default_factory=lambda: list(values))


# model.dequantize: auto = float weights on the CPU backend (its quantized matmul is slow), the quantized base
# kept on Metal/CUDA; always / never regardless of the backend (yourai/models/dequantize.py).
DEQUANTIZE_MODES = ("auto", "never", "always")


@dataclass(frozen=True)
class ModelConfig:
    path: str = "default"  # "default" = the embedded tiny model; a packaged name (smollm2-135m-instruct); a hub id or path
    adapter_path: str | None = None
    trust_remote_code: bool = False
    dequantize: str = _choice("auto", *DEQUANTIZE_MODES)


@dataclass(frozen=True)
class TierTargets:
    primary: float = _bounded(0.4, 0.0, 1.0)
    middle: float = _bounded(0.2, 0.0, 1.0)
    consensus: float = _bounded(0.4, 0.0, 1.0)


@dataclass(frozen=True)
class SplitConfig:
    valid: float = _bounded(0.1, 0.0, 0.5)
    test: float = _bounded(0.1, 0.0, 0.5)


@dataclass(frozen=True)
class CurateConfig:
    sources: list = _items("data/sample/corpus.jsonl")
    shared_corpora: list = _items()  # folders of ../shared/data/corpora to add, e.g. [phil_trans_1665_1869]
    on_error: str = _choice("skip", "skip", "fail")
    min_words: int = _bounded(5, 0, None)
    max_words: int = _bounded(400, 16, None)  # longer texts are chunked, never truncated
    chunk_overlap_words: int = _bounded(40, 0, None)
    near_dup_threshold: float = _bounded(0.85, 0.0, 1.0)
    minhash_perm: int = _bounded(64, 16, 1024)
    primary_max_authority: float = _bounded(PRIMARY_MAX_AUTHORITY, *AUTHORITY_RANGE)
    consensus_min_authority: float = _bounded(CONSENSUS_MIN_AUTHORITY, *AUTHORITY_RANGE)
    balance: bool = True
    tiers: TierTargets = field(default_factory=TierTargets)
    split: SplitConfig = field(default_factory=SplitConfig)
    contamination_check: bool = True
    seed: int = 0


@dataclass(frozen=True)
class ScoringConfig:
    workers: int | None = None


@dataclass(frozen=True)
class LossConfig:
    objective: str = _choice("weighted", *OBJECTIVES)
    alpha: float = _bounded(DEFAULT_ALPHA, *ALPHA_RANGE)
    lambda_weight: float = _bounded(DEFAULT_LAMBDA, 0.0, 10.0)
    auto_lambda: bool = False
    auto_lambda_target_ratio: float = _bounded(0.3, 0.0, 10.0)
    scheme: str = _choice("monotone", *SCHEMES)
    weight_cap: float = _bounded(DEFAULT_WEIGHT_CAP, 1.0, 1000.0)


@dataclass(frozen=True)
class LoraConfig:
    rank: int = _bounded(8, 1, 1024)
    scale: float = _bounded(20.0, 0.0, None)
    dropout: float = _bounded(0.0, 0.0, 0.9)
    num_layers: int = _bounded(-1, -1, None)  # -1 = every block
    keys: list | None = None
    dora: bool = False


@dataclass(frozen=True)
class TrainConfig:
    steps: int = _bounded(60, 1, None)
    batch_size: int = _bounded(8, 1, None)
    grad_accumulation: int = _bounded(1, 1, None)
    max_seq_length: int = _bounded(256, 8, None)
    learning_rate: float = _bounded(1e-3, 0.0, 1.0)
    warmup_steps: int = _bounded(5, 0, None)
    min_lr_ratio: float = _bounded(0.1, 0.0, 1.0)
    weight_decay: float = _bounded(0.01, 0.0, 1.0)
    grad_clip: float = _bounded(1.0, 0.0, None)  # 0 disables clipping
    grad_checkpoint: bool = False
    compile: bool = True
    seed: int = 0
    eval_every: int = _bounded(20, 1, None)
    val_batches: int = _bounded(4, -1, None)  # -1 = the whole validation split
    save_every: int = _bounded(20, 1, None)
    keep_last: int = _bounded(3, 1, None)
    log_every: int = _bounded(1, 1, None)
    shuffle_buffer: int = _bounded(1000, 1, None)
    streaming: bool = False  # true = shuffle-buffer reader (automatic for files too big for memory)
    max_bad_steps: int = _bounded(5, 1, None)  # abort after this many non-finite steps in a row
    lora: LoraConfig = field(default_factory=LoraConfig)


@dataclass(frozen=True)
class MemoryConfig:
    sample_interval_s: float = _bounded(1.0, 0.01, None)
    leak_warmup_steps: int = _bounded(20, 0, None)
    leak_threshold_mb_per_step: float = _bounded(1.0, 0.0, None)
    cache_limit_fraction: float = _bounded(0.25, 0.0, 1.0)
    clear_cache_fraction: float = _bounded(0.70, 0.0, 1.0)
    pause_fraction: float = _bounded(0.80, 0.0, 1.0)
    shrink_fraction: float = _bounded(0.85, 0.0, 1.0)
    abort_fraction: float = _bounded(0.92, 0.0, 1.0)
    max_pause_s: float = _bounded(30.0, 0.0, None)
    shrink_cooldown_steps: int = _bounded(2, 0, None)  # steps for a shrink to show before shrinking again
    guard: bool = True


@dataclass(frozen=True)
class EvalConfig:
    data: str = "auto"  # "auto" = ../shared v0 MC data when present, else the sample file
    limit: int | None = None
    modes: list = _items("mc1", "mc2")
    batch_size: int = _bounded(16, 1, None)
    chat_template: bool = False
    bootstrap_samples: int = _bounded(1000, 10, None)
    seed: int = 0


@dataclass(frozen=True)
class RunConfig:
    name: str = "demo"
    hardware_profile: str = "auto"


@dataclass(frozen=True)
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    curate: CurateConfig = field(default_factory=CurateConfig)
    scoring: ScoringConfig = field(default_factory=ScoringConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    memory: MemoryConfig = field(default_factory=MemoryConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    run: RunConfig = field(default_factory=RunConfig)


@dataclass(frozen=True)
class RecommendedModel:
    hub_id: str
    params_b: float = _bounded(1.0, 0.0, None)
    lora_4bit_memory_gb: float = _bounded(1.0, 0.0, None)


@dataclass(frozen=True)
class HardwareProfile:
    """A machine class: memory range it covers and the training settings that fit it."""

    name: str = "cpu_small"
    description: str = ""
    backends: list = _items("metal", "cuda", "cpu")
    min_memory_gb: float = _bounded(0.0, 0.0, None)
    max_memory_gb: float = _bounded(1e9, 0.0, None)
    batch_size: int = _bounded(4, 1, None)
    grad_accumulation: int = _bounded(1, 1, None)
    lora_rank: int = _bounded(8, 1, 1024)
    lora_num_layers: int = _bounded(8, -1, None)
    max_seq_length: int = _bounded(512, 8, None)
    grad_checkpoint: bool = False
    memory: MemoryConfig = field(default_factory=MemoryConfig)
    recommended_models: list = _items()


# --- loading -----------------------------------------------------------------------


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
        if tp is list and name == "recommended_models":
            kwargs[name] = [build(RecommendedModel, v, source, f"{prefix}{name}[{i}].") for i, v in enumerate(value)]
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
        parsed[key.strip()] = _safe_load(raw) if raw.strip() else ""
    return parsed


def _read_yaml(path: Path) -> dict:
    try:
        with open(path, encoding="utf-8") as handle:
            data = _safe_load(handle)
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: invalid YAML: {err}") from err
    if data is not None and not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping, got {type(data).__name__}")
    return data or {}


def load_config(
    path: str | Path | None = None,
    overrides: Iterable[str] | Mapping[str, Any] = (),
) -> Config:
    """Load `path` (default: configs/default.yaml), apply dotted overrides, validate."""
    path = Path(path) if path is not None else configs_dir() / "default.yaml"
    data = _read_yaml(path)
    parsed = parse_overrides(overrides)
    for dotted, value in parsed.items():
        _set_dotted(data, dotted, value)
    source = f"{path}" + (f" (with overrides {', '.join(parsed)})" if parsed else "")
    return build(Config, data, source)


def load_hardware_profile(path: str | Path) -> HardwareProfile:
    """Load one file of configs/hardware/."""
    path = Path(path)
    return build(HardwareProfile, _read_yaml(path), str(path))


def to_dict(config: Any) -> dict[str, Any]:
    """Plain nested dict (for papermill parameters, JSON summaries and manifests)."""
    return dataclasses.asdict(config)


def with_overrides(config: Config, overrides: Iterable[str] | Mapping[str, Any], source: str = "overrides") -> Config:
    """A validated copy of `config` with dotted overrides applied (sweep cells, experiment arms)."""
    data = to_dict(config)
    parsed = parse_overrides(overrides)
    for dotted, value in parsed.items():
        _set_dotted(data, dotted, value)
    return build(Config, data, f"{source} {', '.join(parsed)}" if parsed else source)
