"""A run's position and counters, and how they travel through a checkpoint so a resume is bit-identical.

The checkpoint files themselves (atomic write, manifest, verification, retention) are
`checkpoints.py`'s; this module decides *what* a training run saves and restores: adapters,
optimizer state (with its step, hence the learning-rate schedule), the MLX RNG key and the
data position, plus the counters the logs continue from.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
from mlx.utils import tree_flatten, tree_map_with_path

from yourai.config import Config, to_dict
from yourai.train import checkpoints as ckpt

# Settings that do not change what is learned; a checkpoint made under different others is refused on resume.
RUN_ONLY_KEYS = ("save_every", "keep_last", "log_every", "eval_every", "val_batches", "shuffle_buffer", "async_save")


@dataclass
class RunState:
    """Where a run is: optimizer updates done, data position, and the counters it logs."""

    step: int = 0
    epoch: int = 0
    batch_index: int = 0  # batches of `epoch` already consumed
    micro_batch: int = 1  # records per micro-batch (the memory guard may lower it)
    lambda_weight: float = 0.0
    bad_in_row: int = 0  # non-finite steps in a row (abort at train.max_bad_steps)
    skipped_total: int = 0
    trained_tokens: int = 0


@dataclass
class TrainResult:
    """What a fit returns; after a resume, `last` and `evals` still cover the whole run (from metrics.jsonl)."""

    out_dir: Path
    adapters_dir: Path
    metrics_path: Path
    steps: int
    last: dict
    evals: list[dict] = field(default_factory=list)
    resumed_from: int | None = None
    tokens_per_s: float = 0.0


def run_fingerprint(config: Config, train_path: Path, world_size: int) -> dict:
    """Everything that determines the result: a resume under a different fingerprint is refused."""
    train = {k: v for k, v in to_dict(config.train).items() if k not in RUN_ONLY_KEYS}
    return {
        "model": config.model.path,
        "dequantize": config.model.dequantize,
        "train_data_sha256": ckpt.sha256_file(train_path),
        "loss": to_dict(config.loss),
        "train": train,
        "world_size": world_size,
    }


def snapshot_run(state: RunState, model: nn.Module, optimizer: optim.Optimizer, adapter_config: dict,
                 fingerprint: dict, val_loss: float | None) -> ckpt.Snapshot:
    """The run as one checkpoint's worth of host copies, taken between updates on the training thread."""
    saved = {**asdict(state), "fingerprint": fingerprint, "val_loss": val_loss, "mlx_version": mx.__version__}
    saved.pop("step")
    return ckpt.snapshot(state.step, dict(tree_flatten(model.trainable_parameters())), adapter_config,
                         dict(tree_flatten(optimizer.state)), mx.random.state[0], saved)


def restore_run(checkpoint: Path, model: nn.Module, optimizer: optim.Optimizer, fingerprint: dict) -> RunState:
    """Load a verified checkpoint into `model` and `optimizer`, reseed MLX's RNG; refuse a different setup."""
    loaded = ckpt.load_checkpoint(checkpoint)
    shapes = {k: v.shape for k, v in tree_flatten(model.trainable_parameters())}
    ckpt.check_compatible(loaded, fingerprint, shapes)
    model.load_weights(list(loaded["adapters"].items()), strict=False)
    current = dict(tree_flatten(optimizer.state))
    if set(current) != set(loaded["optimizer"]):
        raise ckpt.CheckpointError(f"{checkpoint / ckpt.STATE_ARRAYS}: optimizer state does not match this model's adapters")
    optimizer.state = tree_map_with_path(lambda path, _: loaded["optimizer"][path], optimizer.state)
    high, low = (int(v) for v in loaded["rng_key"].tolist())
    mx.random.seed((high << 32) | low)  # mx.random.seed(s) sets the key to (s >> 32, s & 0xffffffff)
    mx.eval(model.parameters(), optimizer.state)
    saved: dict[str, Any] = loaded["state"]
    return RunState(**{name: saved[name] for name in RunState.__dataclass_fields__})
