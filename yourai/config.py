"""The project's settings: every section a frozen dataclass, loaded from YAML and validated once at the boundary.

Field metadata carries the constraints (`bounds=(lo, hi)` inclusive, `choices=(...)`, list item types), so
a bad value fails at load time with the file and the dotted key, never deep inside training. How a mapping
is checked and built lives in yourai/schema.py; this module is the schema itself and how it is loaded.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping


from yourai.formula import (ALPHA_RANGE, AUTHORITY_RANGE, DEFAULT_ALPHA, DEFAULT_LAMBDA, DEFAULT_WEIGHT_CAP,
                            OBJECTIVES, SCHEMES)
from yourai.paths import configs_dir
from yourai.schema import ConfigError, parse_overrides, read_yaml  # noqa: F401  (re-exported: users of settings)
from yourai.schema import _bounded, _choice, _items, _records, _read_yaml, _set_dotted, build
from yourai.tiers import CONSENSUS_MIN_AUTHORITY, PRIMARY_MAX_AUTHORITY


# model.dequantize: auto = float32 weights on the CPU backend (its quantized and half-precision matmuls are slow), the quantized base
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
    sources: list = _items("data/sample/corpus.jsonl", of=(str, dict))  # a path, hf:NAME, or {path, defaults, fields}
    shared_corpora: list = _items()  # folders of ../shared/data/corpora to add, e.g. [phil_trans_1665_1869]
    on_error: str = _choice("skip", "skip", "fail")
    defaults: dict = field(default_factory=dict)  # contract field → value for records that lack it (every source)
    fields: dict = field(default_factory=dict)  # contract field → the input's name for it, e.g. {origin: url}
    csv_columns: list | None = None  # column names for CSV files without a header row
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
    keys: list | None = field(default=None, metadata={"items": (str,)})
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
    async_save: bool = True  # write checkpoints on a background thread; false: on the training thread (slower)
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
    chat_template: bool = False
    seed: int = 0  # of the bootstrap intervals and the permutation test


@dataclass(frozen=True)
class RunConfig:
    name: str = "demo"
    # "auto" (detect the machine), "none", or a file name in configs/hardware/. The profile sets the
    # defaults of train.batch_size, grad_accumulation, max_seq_length, grad_checkpoint, lora.rank,
    # lora.num_layers and the memory.* thresholds; a value in the config file or an override wins.
    # After loading, this holds the profile that was applied.
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
    recommended_models: list = _records(RecommendedModel)


# --- loading -----------------------------------------------------------------------


def load_config(
    path: str | Path | None = None,
    overrides: Iterable[str] | Mapping[str, Any] = (),
) -> Config:
    """Load `path` (default: configs/default.yaml), apply dotted overrides, validate.

    Layers, lowest first: the dataclass defaults, the hardware profile (`run.hardware_profile`),
    the file, the overrides. So a profile fills in what the file leaves open and never beats a
    value the user wrote.
    """
    path = Path(path) if path is not None else configs_dir() / "default.yaml"
    data = _read_yaml(path)
    parsed = parse_overrides(overrides)
    for dotted, value in parsed.items():
        _set_dotted(data, dotted, value)
    source = f"{path}" + (f" (with overrides {', '.join(parsed)})" if parsed else "")
    from yourai.hardware import under_profile  # hardware builds on this module: imported on use

    return build(Config, under_profile(data, source), source)


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
