"""LoRA training with the distrust objective: a small loop in mlx-lm's image that fills its gaps.

From mlx-lm we take the LoRA/DoRA layers (``linear_to_lora_layers``), the adapter file layout
(``load_adapters``, ``mlx_lm.generate --adapter-path`` and ``mlx_lm.fuse`` read our output), the
tokenizer, gradient checkpointing and ``all_sum`` data parallelism. Our own loop adds what its
trainer lacks: per-sample distrust weights from the data, per-tier validation, NaN/inf skipping,
a memory guard, and checkpoints that resume bit for bit (optimizer, schedule, RNG, data position).

One mechanism serves gradient accumulation, memory-guard batch shrinking and data parallelism:
an optimizer update covers a fixed *global batch* of records; every micro-batch loss is scaled by
``its normaliser / the global normaliser`` (counted tokens for CE, summed weights for weighted CE),
so the summed gradients are exactly the gradient of the global-batch objective, however the
records are split across micro-batches and ranks. With one micro-batch the scale is exactly 1.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Iterator, Sequence

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
from mlx.utils import tree_flatten, tree_map, tree_map_with_path

from yourai import checkpoints as ckpt
from yourai.config import Config, ConfigError, load_config, to_dict
from yourai.data import (DataError, Example, InMemoryData, StreamingData, collate, load_examples, normaliser,
                         open_train_data, validation_batches)
from yourai.distrust import empirical_distrust_loss, objective_loss, auto_lambda, per_sample_ce
from yourai.memory import MemoryAbort, MemoryCallback, MemoryGuard, MemoryMonitor, MemorySource

WEIGHTED_MODES = ("weighted", "both")
TERM_MODES = ("faithful", "both")
CLIP_EPSILON = 1e-6  # as mlx.optimizers.clip_grad_norm, so clipping matches mlx-lm's users' expectations
TIERS = ("primary", "middle", "consensus")
PART_NAMES = ("ce", "weighted_ce", "distrust_term", "mean_weight")  # the order of a step's parts vector
# Settings that change what is learned; a checkpoint made under others is refused on resume.
RUN_ONLY_KEYS = ("save_every", "keep_last", "log_every", "eval_every", "val_batches", "shuffle_buffer")
EXIT_OK, EXIT_DATA, EXIT_USAGE, EXIT_ABORTED = 0, 1, 2, 3


class NonFiniteAbort(RuntimeError):
    """Too many non-finite steps in a row; a checkpoint of the last good state was saved."""


class TrainingCallback:
    """Hooks for live plots, loggers and monitors; override what you need (mlx-lm's TrainingCallback)."""

    def on_train_begin(self, info: dict) -> None: ...

    def on_step_end(self, step: int, metrics: dict) -> None: ...

    def on_eval(self, step: int, metrics: dict) -> None: ...

    def on_train_end(self, summary: dict) -> None: ...


@dataclass
class TrainResult:
    out_dir: Path
    adapters_dir: Path
    metrics_path: Path
    steps: int
    last: dict
    evals: list[dict] = field(default_factory=list)
    resumed_from: int | None = None
    tokens_per_s: float = 0.0


# ---------------------------------------------------------------- pieces


def warmup_cosine(peak_lr: float, warmup_steps: int, total_steps: int, min_lr_ratio: float):
    """Linear warm-up to peak (first update already at peak/warmup), then cosine to min_lr_ratio * peak."""
    floor = peak_lr * min_lr_ratio
    decay_steps = max(total_steps - warmup_steps, 1)

    def schedule(step: mx.array) -> mx.array:
        step = mx.array(step).astype(mx.float32)
        warm = peak_lr * (step + 1.0) / max(warmup_steps, 1)
        progress = mx.clip((step - warmup_steps) / decay_steps, 0.0, 1.0)
        cosine = floor + (peak_lr - floor) * 0.5 * (1.0 + mx.cos(math.pi * progress))
        return mx.where(step < warmup_steps, warm, cosine)

    return schedule


def lora_parameters(config: Config) -> dict:
    """mlx-lm's `lora_parameters` block (keys only when the user chose them)."""
    lora = config.train.lora
    params = {"rank": lora.rank, "scale": lora.scale, "dropout": lora.dropout}
    if lora.keys is not None:
        params["keys"] = list(lora.keys)
    return params


def build_lora_model(config: Config) -> tuple[nn.Module, Any, dict]:
    """Base model frozen, LoRA (or DoRA) on the last num_layers blocks; returns the adapter_config too."""
    from mlx_lm.tuner.utils import linear_to_lora_layers

    from yourai.models import load_model

    model, tokenizer = load_model(config.model.path)
    model.freeze()
    lora = config.train.lora
    num_layers = len(model.layers) if lora.num_layers == -1 else min(lora.num_layers, len(model.layers))
    params = lora_parameters(config)
    linear_to_lora_layers(model, num_layers, params, use_dora=lora.dora)
    if not tree_flatten(model.trainable_parameters()):
        raise ConfigError(f"train.lora.keys {lora.keys!r} matched no layer of {config.model.path}: nothing to train")
    adapter_config = {
        "fine_tune_type": "dora" if lora.dora else "lora",
        "num_layers": num_layers,
        "lora_parameters": params,
        "model": config.model.path,
        "trainer": "yourai",
    }
    return model, tokenizer, adapter_config


@contextmanager
def grad_checkpointing(layer: nn.Module, enabled: bool = True) -> Iterator[None]:
    """mlx-lm's gradient checkpointing, undone on exit.

    mlx-lm's `grad_checkpoint` replaces `__call__` on the layer's *class*, so it would stay on
    for every later model of that class in the process (and wrap twice if applied again).
    """
    from mlx_lm.tuner.trainer import grad_checkpoint

    cls = type(layer)
    original = cls.__call__
    if enabled:
        grad_checkpoint(layer)
    try:
        yield
    finally:
        cls.__call__ = original


def file_sha256(path: Path) -> str:
    return ckpt.sha256_file(path)


def run_fingerprint(config: Config, train_path: Path, world_size: int) -> dict:
    """Everything that determines the result: a resume under a different fingerprint is refused."""
    train = {k: v for k, v in to_dict(config.train).items() if k not in RUN_ONLY_KEYS}
    return {
        "model": config.model.path,
        "train_data_sha256": file_sha256(train_path),
        "loss": to_dict(config.loss),
        "train": train,
        "world_size": world_size,
    }


def resolve_data(config: Config, data_dir: str | Path | None, out_dir: Path) -> Path:
    """A curated dir (train.jsonl, optional valid.jsonl), or the sample corpus curated into <out>/data."""
    if data_dir is not None:
        path = Path(data_dir)
        if not (path / "train.jsonl").is_file():
            raise DataError(f"{path / 'train.jsonl'}: not found (run `yourai curate ... --out {path}` first)")
        return path
    path = out_dir / "data"
    if not (path / "train.jsonl").is_file():
        from yourai.curate import curate

        curate(None, path, config.curate, workers=config.scoring.workers)
    return path


# ---------------------------------------------------------------- compiled functions


class StepFunctions:
    """The compiled graph of an update, so a step costs one host sync (reading the metrics afterwards).

    ``fused`` is the whole update of a single micro-batch in one compiled call: loss and gradients,
    the gradient norm, the finiteness check and the clipped AdamW step, applied through ``mx.where``
    so a non-finite step leaves adapters, optimizer state and its step counter as they were.
    Accumulation and data parallelism use ``grad_step`` per micro-batch, then ``apply`` (the same
    guarded update) on the summed gradients.
    """

    def __init__(self, model: nn.Module, optimizer: optim.Optimizer, mode: str, lambda_weight: float,
                 alpha: float, grad_clip: float, compile_: bool) -> None:
        def loss_fn(model_, inputs, targets, mask, weights, w_auth, entropy_bits, scale):
            logits = model_(inputs)
            total, parts = objective_loss(logits, targets, mask, weights, w_auth, entropy_bits,
                                          mode=mode, lambda_weight=lambda_weight, alpha=alpha)
            return total * scale, mx.stack([parts[name] for name in PART_NAMES])

        value_and_grad = nn.value_and_grad(model, loss_fn)

        def grad_step(*arrays):
            (loss, parts), grads = value_and_grad(model, *arrays)
            return loss, parts, grads

        def apply(grads, loss):
            norm = mx.sqrt(sum(mx.sum(mx.square(g.astype(mx.float32))) for _, g in tree_flatten(grads)))
            finite = mx.logical_and(mx.isfinite(loss), mx.isfinite(norm))
            if grad_clip > 0:
                factor = mx.minimum(grad_clip / (norm + CLIP_EPSILON), 1.0)
                grads = tree_map(lambda g: g * factor, grads)
            guarded_update(model, optimizer, grads, finite)
            return norm, finite

        def fused(*arrays):
            loss, parts, grads = grad_step(*arrays)
            norm, finite = apply(grads, loss)
            return mx.concatenate([parts, mx.stack([norm, finite.astype(mx.float32)])])

        if compile_:
            every = [model.state, optimizer.state, mx.random.state]
            grad_state, update_state = [model.state, mx.random.state], [model.state, optimizer.state]
            fused = partial(mx.compile, inputs=every, outputs=every)(fused)
            grad_step = partial(mx.compile, inputs=grad_state, outputs=grad_state)(grad_step)
            apply = partial(mx.compile, inputs=update_state, outputs=update_state)(apply)
        self.fused, self.grad_step, self.apply = fused, grad_step, apply


def guarded_update(model: nn.Module, optimizer: optim.Optimizer, grads: Any, finite: mx.array) -> None:
    """optimizer.update, kept only where `finite`: otherwise every parameter and state entry keeps its old value."""
    keep = lambda new, old: mx.where(finite, new, old)  # noqa: E731
    old_params = model.trainable_parameters()
    old_state = tree_map(lambda v: v, optimizer.state)  # the update mutates the dict, not the arrays
    optimizer.update(model, grads)
    model.update(tree_map(keep, model.trainable_parameters(), old_params))
    optimizer.state.update(tree_map(keep, optimizer.state, old_state))  # in place: compiled calls hold this dict


def make_eval_fn(model: nn.Module, compile_: bool):
    """Per-sample validation CE and token counts (the model must be in eval mode: no dropout)."""

    def eval_ce(inputs, targets, mask):
        return per_sample_ce(model(inputs), targets, mask)

    return partial(mx.compile, inputs=[model.state], outputs=[model.state])(eval_ce) if compile_ else eval_ce


# ---------------------------------------------------------------- metrics


class MetricsWriter:
    """metrics.jsonl: one JSON object per line, flushed so a killed run keeps what it logged."""

    def __init__(self, path: Path, enabled: bool, keep_until_step: int | None = None) -> None:
        self.path, self.enabled = path, enabled
        if not enabled:
            return
        dropped = self._truncate_after(keep_until_step) if keep_until_step is not None else 0
        if keep_until_step is None and path.exists():
            path.unlink()
        self.handle = open(path, "a", encoding="utf-8")
        if keep_until_step is not None:
            self.write({"event": "resume", "step": keep_until_step, "dropped_lines": dropped})

    def _truncate_after(self, step: int) -> int:
        """Drop lines after the resumed step: the resumed run writes them again, identically."""
        if not self.path.exists():
            return 0
        lines = self.path.read_text(encoding="utf-8").splitlines()
        kept = [line for line in lines if line.strip() and json.loads(line).get("step", 0) <= step]
        self.path.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
        return len(lines) - len(kept)

    def write(self, record: dict) -> None:
        if self.enabled:
            self.handle.write(json.dumps(record, allow_nan=True) + "\n")
            self.handle.flush()

    def close(self) -> None:
        if self.enabled:
            self.handle.close()


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def part_contributions(pieces: Sequence[tuple[np.ndarray, float, float, int]], norms: tuple[float, float, int]) -> np.ndarray:
    """Each micro-batch's share of the global ce, weighted_ce, distrust_term, mean_weight (summable over ranks).

    A piece is (parts in PART_NAMES order, its counted tokens, its weight sum, its sample count).
    """
    tokens_all, weights_all, samples_all = norms
    total = np.zeros(len(PART_NAMES))
    for values, tokens, weight_sum, samples in pieces:
        shares = (tokens / tokens_all, weight_sum / weights_all if weights_all else 0.0, samples / samples_all, samples / samples_all)
        total += np.array([float(v) * share for v, share in zip(values, shares)])
    return total


def finish_parts(contributions: np.ndarray, mode: str, lambda_weight: float) -> dict:
    """The logged loss parts; `loss` is the objective itself (base + lambda * term where the mode adds it)."""
    ce, weighted, term, mean_weight = (float(v) for v in contributions)
    base = weighted if mode in WEIGHTED_MODES else ce
    total = base + (lambda_weight * term if mode in TERM_MODES else 0.0)
    return {"loss": total, "ce": ce, "weighted_ce": weighted, "distrust_term": term,
            "lambda_term": lambda_weight * term, "mean_weight": mean_weight}


# ---------------------------------------------------------------- the run


class Trainer:
    """One training run: build (or resume), then `fit()`. Attributes are public for tests and notebooks."""

    def __init__(self, config: Config, out_dir: str | Path, *, data_dir: str | Path | None = None,
                 resume: bool = False, callbacks: Sequence[TrainingCallback] = (),
                 memory_source: MemorySource | None = None, progress: bool = True) -> None:
        self.config, self.out, self.progress = config, Path(out_dir), progress
        self.mode, tc = config.loss.objective, config.train
        self.group = mx.distributed.init()
        self.rank, self.size = self.group.rank(), self.group.size()
        self.is_main = self.rank == 0
        if tc.batch_size % self.size:
            raise ConfigError(f"train.batch_size ({tc.batch_size}) must be divisible by the {self.size} processes")
        self.out.mkdir(parents=True, exist_ok=True)
        self.data_dir = self._shared_data(data_dir)
        mx.random.seed(tc.seed)  # before LoRA init: the initial adapters are a function of the seed
        self.model, self.tokenizer, self.adapter_config = build_lora_model(config)
        self._open_data()
        self.optimizer = optim.AdamW(learning_rate=warmup_cosine(tc.learning_rate, tc.warmup_steps, tc.steps, tc.min_lr_ratio),
                                     weight_decay=tc.weight_decay)
        self.optimizer.init(self.model.trainable_parameters())
        self.fingerprint = run_fingerprint(config, self.data_dir / "train.jsonl", self.size)
        self.step = self.epoch = self.batch_index = 0
        self.micro_batch = tc.batch_size // self.size
        self.bad_in_row = self.skipped_total = self.trained_tokens = 0
        self.lambda_weight = config.loss.lambda_weight
        self.resumed_from: int | None = None
        self.callbacks = list(callbacks)
        self.events: list[dict] = []
        self.memory = self._memory_callback(memory_source)
        if resume:
            self._restore()
        else:
            self._clear_old_checkpoints()
        self.eval_ce = make_eval_fn(self.model, tc.compile)
        self.fns: StepFunctions | None = None

    def _barrier(self) -> None:
        if self.size > 1:
            mx.eval(mx.distributed.all_sum(mx.array(0.0), stream=mx.cpu))

    def _shared_data(self, data_dir: str | Path | None) -> Path:
        """Rank 0 curates the default data once; the others wait and read it."""
        if self.is_main:
            path = resolve_data(self.config, data_dir, self.out)
        self._barrier()
        return path if self.is_main else resolve_data(self.config, data_dir, self.out)

    def _open_data(self) -> None:
        tc, loss = self.config.train, self.config.loss
        self.train_data: InMemoryData | StreamingData = open_train_data(
            self.data_dir / "train.jsonl", self.tokenizer, tc.max_seq_length, loss.scheme, loss.weight_cap,
            streaming=tc.streaming, buffer_records=tc.shuffle_buffer)
        valid_path = self.data_dir / "valid.jsonl"
        self.valid_batches: list[list[Example]] = []
        self.data_events = [self.train_data.stats.as_event("train")]
        if valid_path.is_file():
            examples, stats = load_examples(valid_path, self.tokenizer, tc.max_seq_length)
            self.valid_batches = validation_batches(examples, tc.batch_size, tc.val_batches)
            self.data_events.append(stats.as_event("valid"))
        else:
            self.data_events.append({"event": "data", "split": "valid", "path": str(valid_path), "missing": True})

    def _memory_callback(self, source: MemorySource | None) -> MemoryCallback:
        self._timer = source is None  # a scripted source must tick only when the trainer asks
        monitor = MemoryMonitor(source, self.config.memory)
        return MemoryCallback(monitor, MemoryGuard(monitor, self.config.memory))

    # ------------------------------------------------------------ resume

    def _restore(self) -> None:
        """Adapters, optimizer (incl. its step, hence the schedule), RNG key and data position."""
        root = self.out / "checkpoints"
        if self.is_main:
            stale = ckpt.remove_stale_staging(root)
            if stale:
                self.events.append({"event": "removed_partial_checkpoints", "names": stale})
        self._barrier()
        latest = ckpt.latest_checkpoint(root)
        if latest is None:
            self.events.append({"event": "resume_none", "detail": f"no checkpoint in {root}: starting fresh"})
            return
        loaded = ckpt.load_checkpoint(latest)
        shapes = {k: v.shape for k, v in tree_flatten(self.model.trainable_parameters())}
        ckpt.check_compatible(loaded, self.fingerprint, shapes)
        self.model.load_weights(list(loaded["adapters"].items()), strict=False)
        current = dict(tree_flatten(self.optimizer.state))
        if set(current) != set(loaded["optimizer"]):
            raise ckpt.CheckpointError(f"{latest / ckpt.STATE_ARRAYS}: optimizer state does not match this model's adapters")
        self.optimizer.state = tree_map_with_path(lambda path, _: loaded["optimizer"][path], self.optimizer.state)
        high, low = (int(v) for v in loaded["rng_key"].tolist())
        mx.random.seed((high << 32) | low)  # mx.random.seed(s) sets the key to (s >> 32, s & 0xffffffff)
        state = loaded["state"]
        self.step, self.epoch, self.batch_index = state["step"], state["epoch"], state["batch_index"]
        self.lambda_weight, self.micro_batch = state["lambda_weight"], state["micro_batch"]
        self.skipped_total, self.trained_tokens = state["skipped_total"], state["trained_tokens"]
        self.bad_in_row = state["bad_in_row"]
        self.resumed_from = self.step
        mx.eval(self.model.parameters(), self.optimizer.state)

    def _clear_old_checkpoints(self) -> None:
        """A fresh run owns its directory: checkpoints of an earlier run there would mix into resume."""
        root = self.out / "checkpoints"
        if self.is_main and root.is_dir():
            old = [p.name for p in root.iterdir()]
            shutil.rmtree(root)
            if old:
                self.events.append({"event": "removed_earlier_run_checkpoints", "names": sorted(old)})
        self._barrier()

    # ------------------------------------------------------------ checkpoints and outputs

    def save_checkpoint(self, val_loss: float | None = None) -> Path | None:
        """Atomic checkpoint on rank 0 (then prune), every rank waits for it."""
        path = None
        if self.is_main:
            state = {"epoch": self.epoch, "batch_index": self.batch_index, "lambda_weight": self.lambda_weight,
                     "fingerprint": self.fingerprint, "val_loss": val_loss, "micro_batch": self.micro_batch,
                     "bad_in_row": self.bad_in_row, "skipped_total": self.skipped_total,
                     "trained_tokens": self.trained_tokens, "mlx_version": mx.__version__}
            root = self.out / "checkpoints"
            path = ckpt.save_checkpoint(root, self.step, dict(tree_flatten(self.model.trainable_parameters())),
                                        self.adapter_config, dict(tree_flatten(self.optimizer.state)),
                                        mx.random.state[0], state)
            removed = ckpt.prune(root, self.config.train.keep_last)
            self.writer.write({"event": "checkpoint", "step": self.step, "path": str(path),
                               "removed": [p.name for p in removed]})
        self._barrier()
        return path

    def write_adapters(self) -> Path:
        """<out>/adapters in the mlx-lm layout, replaced atomically."""
        target = self.out / "adapters"
        if self.is_main:
            staging = self.out / f"{ckpt.TMP_PREFIX}adapters-{self.rank}"
            if staging.exists():
                shutil.rmtree(staging)
            staging.mkdir()
            ckpt.write_adapter_dir(staging, dict(tree_flatten(self.model.trainable_parameters())), self.adapter_config)
            ckpt.publish(staging, target)
        self._barrier()
        return target

    # ------------------------------------------------------------ validation

    def evaluate(self, step: int) -> dict | None:
        """Token-mean validation CE overall and per tier; val_gap = primary - consensus."""
        if not self.valid_batches:
            return None
        started = time.perf_counter()
        self.model.eval()
        sums = np.zeros((1 + len(TIERS), 2))  # rows: overall, tiers; columns: CE sum, tokens
        for examples in self.valid_batches[self.rank :: self.size]:
            batch = collate(examples)
            ce, tokens = self.eval_ce(batch.inputs, batch.targets, batch.mask)
            ce, tokens = np.array(ce, dtype=np.float64), np.array(tokens, dtype=np.float64)
            for row, tier in enumerate(batch.tiers):
                for target in (0, 1 + TIERS.index(tier)):
                    sums[target] += (ce[row] * tokens[row], tokens[row])
        self.model.train()
        if self.size > 1:
            sums = np.array(mx.distributed.all_sum(mx.array(sums.astype(np.float32)), stream=mx.cpu), dtype=np.float64)
        metrics = {"step": step, "val_loss": float(sums[0, 0] / max(sums[0, 1], 1.0)), "val_tokens": int(sums[0, 1])}
        for index, tier in enumerate(TIERS, 1):
            metrics[f"val_loss_{tier}"] = float(sums[index, 0] / sums[index, 1]) if sums[index, 1] else None
        primary, consensus = metrics["val_loss_primary"], metrics["val_loss_consensus"]
        metrics["val_gap"] = primary - consensus if primary is not None and consensus is not None else None
        metrics["val_time_s"] = round(time.perf_counter() - started, 4)
        return metrics

    # ------------------------------------------------------------ one update

    def _batches(self) -> Iterator[tuple[int, int, list[Example]]]:
        """(epoch, position after this batch, examples) forever, starting at the saved position."""
        epoch, start = self.epoch, self.batch_index
        while True:
            for offset, batch in enumerate(self.train_data.batches(self.config.train.batch_size, self.config.train.seed, epoch, start)):
                yield epoch, start + offset + 1, batch
            epoch, start = epoch + 1, 0

    def _global_batch(self) -> list[Example]:
        records = []
        for _ in range(self.config.train.grad_accumulation):
            self.epoch, self.batch_index, batch = next(self.batch_stream)
            records.extend(batch)
        return records

    def _micro_batches(self, records: list[Example]) -> list[list[Example]]:
        """This rank's share of the global batch (every size-th record), cut into micro-batches."""
        mine = records[self.rank :: self.size]
        return [mine[i : i + self.micro_batch] for i in range(0, len(mine), self.micro_batch)]

    def _micro_arrays(self, micro: list[Example], global_norm: float) -> tuple[mx.array, ...]:
        """A micro-batch as the step's arrays; its loss is scaled by its share of the global normaliser."""
        batch = collate(micro)
        scale = mx.array(normaliser(micro, self.mode in WEIGHTED_MODES) / global_norm, dtype=mx.float32)
        return batch.inputs, batch.targets, batch.mask, batch.weights, batch.w_auth, batch.entropy_bits, scale

    def _accumulated_update(self, micros: list[list[Example]], global_norm: float) -> mx.array:
        """Summed gradients of this rank's micro-batches (and of all ranks), then one guarded update."""
        grads, loss, parts = None, None, []
        for micro in micros:
            micro_loss, micro_parts, micro_grads = self.fns.grad_step(*self._micro_arrays(micro, global_norm))
            grads = micro_grads if grads is None else tree_map(mx.add, grads, micro_grads)
            loss = micro_loss if loss is None else loss + micro_loss
            parts.append(micro_parts)
        if self.size > 1:  # summed losses too, so every rank takes the same skip decision
            grads, loss = tree_map(lambda g: mx.distributed.all_sum(g), grads), mx.distributed.all_sum(loss)
        norm, finite = self.fns.apply(grads, loss)
        return mx.concatenate([mx.concatenate(parts), mx.stack([norm, finite.astype(mx.float32)])])

    def _update(self, records: list[Example], norms: tuple[float, float, int]) -> tuple[list, float, bool]:
        """One guarded update; then a single sync reads every micro-batch's parts, the grad norm and `finite`."""
        global_norm = norms[1] if self.mode in WEIGHTED_MODES else norms[0]
        micros = self._micro_batches(records)
        if len(micros) == 1 and self.size == 1:  # the common case: one compiled call
            vector = self.fns.fused(*self._micro_arrays(micros[0], global_norm))
        else:
            vector = self._accumulated_update(micros, global_norm)
        mx.eval(vector, self.model.state, self.optimizer.state, mx.random.state)
        values = np.array(vector, dtype=np.float64)
        rows = values[:-2].reshape(len(micros), len(PART_NAMES))
        pieces = [(row, normaliser(m, False), normaliser(m, True), len(m)) for row, m in zip(rows, micros)]
        return pieces, float(values[-2]), bool(values[-1] == 1.0)

    def train_step(self) -> dict:
        """One optimizer update over the global batch; a non-finite loss or gradient leaves everything unchanged."""
        started = time.perf_counter()
        records = self._global_batch()
        norms = (normaliser(records, False), normaliser(records, True), len(records))
        pieces, grad_norm, finite = self._update(records, norms)
        contributions = part_contributions(pieces, norms)
        if self.size > 1:
            contributions = np.array(mx.distributed.all_sum(mx.array(contributions.astype(np.float32)), stream=mx.cpu))
        parts = finish_parts(contributions, self.mode, self.lambda_weight)
        if finite:
            self.bad_in_row = 0
            self.trained_tokens += int(norms[0])
        else:
            self.bad_in_row += 1
            self.skipped_total += 1
        self.step += 1
        elapsed_s = time.perf_counter() - started
        return {"step": self.step, "epoch": self.epoch, "batch": self.batch_index, "objective": self.mode,
                **{k: _finite(v) for k, v in parts.items()}, "lambda_weight": self.lambda_weight,
                "lr": float(self.optimizer.state["learning_rate"]), "grad_norm": _finite(grad_norm),
                "skipped": not finite, "skipped_total": self.skipped_total, "tokens": int(norms[0]),
                "trained_tokens": self.trained_tokens, "step_time_s": round(elapsed_s, 5),
                "tokens_per_s": round(norms[0] / elapsed_s, 2), "it_per_s": round(1.0 / elapsed_s, 4),
                "micro_batch": self.micro_batch}

    # ------------------------------------------------------------ the loop

    def _begin(self) -> list[dict]:
        """Log setup events, run the step-0 validation, fix lambda, build the compiled step."""
        resumed = self.resumed_from is not None
        self.writer = MetricsWriter(self.out / "metrics.jsonl", self.is_main, self.resumed_from if resumed else None)
        for event in self.events + self.data_events + self.memory.on_train_begin(start_timer=self._timer):
            self.writer.write(event)
        evals = []
        if not resumed:
            first = self.evaluate(0)
            if first is not None:
                evals.append(first)
                self._log_eval(first)
            self._set_lambda(first)
        loss, tc = self.config.loss, self.config.train
        self.fns = StepFunctions(self.model, self.optimizer, self.mode, self.lambda_weight, loss.alpha,
                                 tc.grad_clip, tc.compile)
        self.batch_stream = self._batches()
        info = {"step": self.step, "steps": tc.steps, "objective": self.mode, "resumed_from": self.resumed_from,
                "world_size": self.size, "trainable_parameters": sum(v.size for _, v in tree_flatten(self.model.trainable_parameters()))}
        self.writer.write({"event": "train_begin", **info})
        for callback in self.callbacks:
            callback.on_train_begin(info)
        return evals

    def _set_lambda(self, first_eval: dict | None) -> None:
        """auto_lambda: lambda * mean L_emp = target_ratio * initial validation CE (reference behaviour)."""
        loss = self.config.loss
        if not (loss.auto_lambda and self.mode in TERM_MODES):
            return
        if first_eval is None:
            raise ConfigError("loss.auto_lambda needs a validation split (valid.jsonl) to estimate the initial CE")
        distrust_mean = empirical_distrust_loss(self.train_data.w_auth, self.train_data.entropy_bits, loss.alpha)
        self.lambda_weight = auto_lambda(first_eval["val_loss"], distrust_mean, loss.auto_lambda_target_ratio)
        self.writer.write({"event": "auto_lambda", "lambda_weight": self.lambda_weight, "ce_estimate": first_eval["val_loss"],
                           "distrust_mean": distrust_mean})

    def _log_eval(self, metrics: dict) -> None:
        self.writer.write(metrics)
        for callback in self.callbacks:
            callback.on_eval(metrics["step"], metrics)

    def _guard(self, metrics: dict) -> None:
        """Memory guard after each update: log its events, shrink micro-batches, or checkpoint and abort."""
        count = math.ceil(self.config.train.batch_size * self.config.train.grad_accumulation / self.size / self.micro_batch)
        decision = self.memory.on_step_end(self.step, self.micro_batch, count)
        metrics.update(self.memory.metrics())
        for event in decision.events:
            self.writer.write(event)
        if decision.action == "shrink":
            self.micro_batch = max(1, decision.batch_size)
        elif decision.action == "abort":
            self.save_checkpoint()
            raise MemoryAbort(decision)

    def _after_step(self, metrics: dict, evals: list[dict]) -> None:
        tc = self.config.train
        self._guard(metrics)
        if self.step % tc.log_every == 0 or self.step == tc.steps or metrics["skipped"]:
            self.writer.write(metrics)
        for callback in self.callbacks:
            callback.on_step_end(self.step, metrics)
        if self.bad_in_row >= tc.max_bad_steps:
            path = self.save_checkpoint()
            raise NonFiniteAbort(
                f"{self.bad_in_row} non-finite steps in a row (train.max_bad_steps={tc.max_bad_steps}) at step "
                f"{self.step}; the last good adapters are in {path}. Lower train.learning_rate or check the data.")
        val = self.evaluate(self.step) if self.step % tc.eval_every == 0 or self.step == tc.steps else None
        if val is not None:
            evals.append(val)
            self._log_eval(val)
        if self.step % tc.save_every == 0 or self.step == tc.steps:
            self.save_checkpoint(val["val_loss"] if val else None)

    def fit(self) -> TrainResult:
        """Train to train.steps (from wherever a resume left off) and write the adapters.

        Gradient checkpointing (train.grad_checkpoint) is on for this fit only, not for later models.
        """
        with grad_checkpointing(self.model.layers[0], self.config.train.grad_checkpoint):
            return self._fit()

    def _fit(self) -> TrainResult:
        from tqdm.auto import tqdm

        evals = self._begin()
        tc, metrics = self.config.train, {}
        bar = tqdm(total=tc.steps, initial=self.step, disable=not (self.progress and self.is_main), desc="train", unit="step")
        rates = []
        try:
            while self.step < tc.steps:
                metrics = self.train_step()
                rates.append(metrics["tokens_per_s"])
                self._after_step(metrics, evals)
                bar.update(1)
                bar.set_postfix(loss=f"{metrics['loss'] or float('nan'):.4f}", tok_s=f"{metrics['tokens_per_s']:.0f}")
            adapters = self.write_adapters()
        finally:
            bar.close()
            self.memory.on_train_end()
        summary = {"event": "train_end", "step": self.step, "skipped_total": self.skipped_total,
                   "tokens_per_s_median": float(np.median(rates)) if rates else None}
        self.writer.write(summary)
        self.writer.close()
        for callback in self.callbacks:
            callback.on_train_end(summary)
        return TrainResult(self.out, adapters, self.out / "metrics.jsonl", self.step, metrics, evals,
                           self.resumed_from, summary["tokens_per_s_median"] or 0.0)


def train(config: Config, out_dir: str | Path, **kwargs: Any) -> TrainResult:
    """Build a Trainer and fit it; keyword arguments as Trainer's."""
    return Trainer(config, out_dir, **kwargs).fit()


# ---------------------------------------------------------------- command line


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="yourai train", description=__doc__.splitlines()[0])
    parser.add_argument("-c", "--config", help="YAML config (default: configs/default.yaml)")
    parser.add_argument("--out", required=True, help="run directory: adapters/, checkpoints/, metrics.jsonl")
    parser.add_argument("--model", help="hub id or local path (default: model.path, the embedded model)")
    parser.add_argument("--data", help="curated dir with train.jsonl/valid.jsonl (default: curate the sample corpus)")
    parser.add_argument("--steps", type=int, help="train.steps")
    parser.add_argument("--seed", type=int, help="train.seed")
    parser.add_argument("--objective", choices=("plain", "faithful", "weighted", "both"), help="loss.objective")
    parser.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --out")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="dotted config overrides, e.g. train.lora.rank=16")
    return parser.parse_intermixed_args(list(argv))


def config_from_args(args: argparse.Namespace) -> Config:
    overrides = list(args.overrides)
    for flag, key in (("model", "model.path"), ("steps", "train.steps"), ("seed", "train.seed"), ("objective", "loss.objective")):
        value = getattr(args, flag)
        if value is not None:
            overrides.append(f"{key}={value}")
    return load_config(args.config, overrides)


def cli_main(argv: Sequence[str]) -> int:
    """`yourai train [-c CONFIG] --out DIR [...] [key=value ...]`: 0 ok, 1 data/checkpoint, 2 usage, 3 aborted."""
    args = parse_args(argv)
    try:
        config = config_from_args(args)
        result = train(config, args.out, data_dir=args.data, resume=args.resume, progress=not args.no_progress)
    except ConfigError as err:
        print(f"yourai train: {err}", file=sys.stderr)
        return EXIT_USAGE
    except (DataError, ckpt.CheckpointError, OSError) as err:
        print(f"yourai train: {err}", file=sys.stderr)
        return EXIT_DATA
    except (MemoryAbort, NonFiniteAbort) as err:
        print(f"yourai train: aborted: {err}", file=sys.stderr)
        return EXIT_ABORTED
    last = result.last
    print(f"trained {result.steps} steps into {result.adapters_dir} (loss {last.get('loss')}, "
          f"median {result.tokens_per_s:.0f} tokens/s); metrics in {result.metrics_path}")
    return EXIT_OK


# ---------------------------------------------------------------- the objective experiment (notebook 04)


def adapters_identical(first: Path, second: Path) -> bool:
    """Bitwise equality of two runs' adapters.safetensors (same tensors, same bytes)."""
    return (Path(first) / "adapters.safetensors").read_bytes() == (Path(second) / "adapters.safetensors").read_bytes()


def objective_experiment(overrides: dict, data_dir: Path, out_dir: Path, seeds: Sequence[int],
                         objectives: Sequence[str] = ("plain", "faithful", "weighted")) -> list[dict]:
    """Train every (seed, objective) pair on the same data; one row per run with its final validation."""
    rows = []
    for seed in seeds:
        for objective in objectives:
            run_dir = Path(out_dir) / f"seed{seed}-{objective}"
            config = load_config(None, {**overrides, "train.seed": seed, "loss.objective": objective})
            result = train(config, run_dir, data_dir=data_dir, progress=False)
            final = result.evals[-1] if result.evals else {}
            rows.append({"seed": seed, "objective": objective, "train_loss": result.last.get("loss"),
                         "train_ce": result.last.get("ce"), **{k: final.get(k) for k in
                         ("val_loss", "val_loss_primary", "val_loss_middle", "val_loss_consensus", "val_gap")},
                         "tokens_per_s": result.tokens_per_s,
                         "adapters_sha256": ckpt.sha256_file(result.adapters_dir / "adapters.safetensors"),
                         "adapters_dir": str(result.adapters_dir)})
    return rows


# Two-sided 95 % Student-t quantiles t(0.975, df) for df = 1..10 (standard tables); 1.96 beyond.
T_975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228)


def mean_ci95(values: Sequence[float]) -> tuple[float, float]:
    """Mean and the half-width of its 95 % t interval (nan for a single value): seeds are few."""
    values = np.asarray(list(values), dtype=float)
    if values.size < 2:
        return float(values.mean()), float("nan")
    df = values.size - 1
    quantile = T_975[df - 1] if df <= len(T_975) else 1.96
    return float(values.mean()), float(quantile * values.std(ddof=1) / math.sqrt(values.size))


def experiment_summary(rows: Sequence[dict]) -> dict:
    """Gap (primary - consensus val loss) per objective, paired weighted - plain change, faithful identity."""
    by = {(r["seed"], r["objective"]): r for r in rows}
    seeds = sorted({r["seed"] for r in rows})
    summary: dict[str, Any] = {"seeds": seeds}
    for objective in sorted({r["objective"] for r in rows}):
        gaps = [by[(s, objective)]["val_gap"] for s in seeds if by.get((s, objective), {}).get("val_gap") is not None]
        if gaps:
            summary[f"gap_{objective}_mean"], summary[f"gap_{objective}_ci95"] = mean_ci95(gaps)
    paired = [by[(s, "weighted")]["val_gap"] - by[(s, "plain")]["val_gap"] for s in seeds
              if (s, "weighted") in by and (s, "plain") in by]
    if paired:
        summary["gap_change_weighted_minus_plain_mean"], summary["gap_change_weighted_minus_plain_ci95"] = mean_ci95(paired)
    pairs = [(by[(s, "plain")], by[(s, "faithful")]) for s in seeds if (s, "plain") in by and (s, "faithful") in by]
    if pairs:
        summary["faithful_bit_identical_to_plain"] = all(
            adapters_identical(Path(p["adapters_dir"]), Path(f["adapters_dir"])) for p, f in pairs)
    return summary
