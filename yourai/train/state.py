"""A run's position and counters, and how they travel through a checkpoint so a resume is bit-identical.

The checkpoint files themselves (atomic write, manifest, verification, retention) are
`checkpoints.py`'s; this module decides *what* a training run saves and restores: adapters,
optimizer state (with its step, hence the learning-rate schedule), the MLX RNG key and the
data position, plus the counters the logs continue from.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
from mlx.utils import tree_flatten, tree_map_with_path

from yourai.train import checkpoints as ckpt


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


def save_run(root: Path, state: RunState, model: nn.Module, optimizer: optim.Optimizer, adapter_config: dict,
             fingerprint: dict, val_loss: float | None, keep_last: int) -> tuple[Path, list[Path]]:
    """One atomic, verified checkpoint of the run, then retention; returns (path, removed checkpoints)."""
    saved = {**asdict(state), "fingerprint": fingerprint, "val_loss": val_loss, "mlx_version": mx.__version__}
    saved.pop("step")
    path = ckpt.save_checkpoint(root, state.step, dict(tree_flatten(model.trainable_parameters())), adapter_config,
                                dict(tree_flatten(optimizer.state)), mx.random.state[0], saved)
    return path, ckpt.prune(root, keep_last)


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
