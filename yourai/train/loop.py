"""LoRA training with the distrust objective: a small loop in mlx-lm's image that fills its gaps.

From mlx-lm we take the LoRA/DoRA layers (``linear_to_lora_layers``), the adapter file layout
(``load_adapters``, ``mlx_lm.generate --adapter-path`` and ``mlx_lm.fuse`` read our output), the
tokenizer, gradient checkpointing and ``all_sum`` data parallelism. Our own loop adds what its
trainer lacks: per-sample distrust weights from the data, per-tier validation, NaN/inf skipping,
a memory guard, checkpoints that resume bit for bit (optimizer, schedule, RNG, data position) and
are written off the training thread (saver.py), and a graceful stop on SIGTERM/SIGINT/SIGHUP (signals.py).

One mechanism serves gradient accumulation, memory-guard batch shrinking and data parallelism:
an optimizer update covers a fixed *global batch* of records; every micro-batch loss is scaled by
``its normaliser / the global normaliser`` (counted tokens for CE, summed weights for weighted CE),
so the summed gradients are exactly the gradient of the global-batch objective, however the
records are split across micro-batches and ranks. With one micro-batch the scale is exactly 1.
"""

from __future__ import annotations

import math
import time
import weakref
from pathlib import Path
from typing import Any, Iterator, NoReturn, Sequence

import mlx.core as mx
import mlx.optimizers as optim
import numpy as np
from mlx.utils import tree_flatten, tree_map

from yourai.config import Config, ConfigError
from yourai.data.batches import (Example, InMemoryData, StreamingData, collate, load_examples, normaliser,
                                 open_train_data, padding_fraction, validation_batches)
from yourai.formula import TERM_OBJECTIVES, WEIGHTED_OBJECTIVES
from yourai.loss import auto_lambda, empirical_distrust_loss
from yourai.train import checkpoints as ckpt
from yourai.train import rundir
from yourai.train.callbacks import Control, TrainingAbort, TrainingCallback
from yourai.train.guard import MemoryCallback
from yourai.train.lora import build_lora_model, grad_checkpointing, model_event
from yourai.train.metrics import MetricsWriter
from yourai.train.saver import CheckpointSaver
from yourai.stopping import StopAborted, StopRequest, graceful_stop, signal_name
from yourai.train.signals import TrainingStopped, agreed_stop
from yourai.train.state import RunState, TrainResult, restore_run, run_fingerprint, snapshot_run
from yourai.train.steps import PART_NAMES, StepFunctions, finish_parts, part_contributions, warmup_cosine
from yourai.train.validation import make_eval_fn, tier_validation


class NonFiniteAbort(TrainingAbort):
    """Too many non-finite steps in a row; a checkpoint of the last good state was saved."""


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def with_memory_callback(callbacks: Sequence[TrainingCallback], config: Config) -> list[TrainingCallback]:
    """Memory callbacks first (they add readings to the metrics others see); the default one when none is given."""
    memory = [c for c in callbacks if isinstance(c, MemoryCallback)] or [MemoryCallback.from_config(config.memory)]
    return memory + [c for c in callbacks if not isinstance(c, MemoryCallback)]


class Trainer:
    """One training run on a curated data directory: build (or resume), then `fit()`; it holds `out_dir`
    exclusively until fit() ends, and a fresh run needs `overwrite` to replace checkpoints (train/rundir.py)."""

    def __init__(self, config: Config, out_dir: str | Path, *, data_dir: str | Path, resume: bool = False,
                 overwrite: bool = False, callbacks: Sequence[TrainingCallback] = (), progress: bool = True) -> None:
        self.config, self.out, self.progress = config, Path(out_dir), progress
        self.mode, tc = config.loss.objective, config.train
        self.group = mx.distributed.init()
        self.rank, self.size = self.group.rank(), self.group.size()
        self.is_main = self.rank == 0
        if tc.batch_size % self.size:
            raise ConfigError(f"train.batch_size ({tc.batch_size}) must be divisible by the {self.size} processes")
        self.out.mkdir(parents=True, exist_ok=True)
        self.lock, self.events = rundir.claim(self.out, resume=resume, overwrite=overwrite, is_main=self.is_main)
        weakref.finalize(self, self.lock.release)
        try:
            self._build(config, data_dir, resume, callbacks)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Give the output directory back (fit() does this when it ends)."""
        self.lock.release()

    def _build(self, config: Config, data_dir: str | Path, resume: bool, callbacks: Sequence[TrainingCallback]) -> None:
        tc = config.train
        self._barrier()  # rank 0 has cleared what rundir.claim asked it to
        self.data_dir = Path(data_dir)
        # seeded after loading (a first-use build of the default model reseeds), before LoRA init
        self.model, self.tokenizer, self.adapter_config = build_lora_model(config.model.path, tc.lora, seed=tc.seed,
                                                                           dequantize=config.model.dequantize)
        self.events.append(model_event(config, self.model, self.adapter_config))
        self._open_data()
        self.optimizer = optim.AdamW(learning_rate=warmup_cosine(tc.learning_rate, tc.warmup_steps, tc.steps, tc.min_lr_ratio),
                                     weight_decay=tc.weight_decay)
        self.optimizer.init(self.model.trainable_parameters())
        self.fingerprint = run_fingerprint(config, self.data_dir / "train.jsonl", self.size)
        self.state = RunState(micro_batch=tc.batch_size // self.size, lambda_weight=config.loss.lambda_weight)
        self.resumed_from: int | None = None
        self.callbacks = with_memory_callback(callbacks, config)
        self.memory = self.callbacks[0]
        if resume:
            self._restore()
        self.eval_ce = make_eval_fn(self.model, tc.compile)
        self.fns: StepFunctions | None = None

    @property
    def step(self) -> int:
        return self.state.step

    @property
    def micro_batch(self) -> int:
        return self.state.micro_batch

    def _barrier(self) -> None:
        if self.size > 1:
            mx.eval(mx.distributed.all_sum(mx.array(0.0), stream=mx.cpu))

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

    # ------------------------------------------------------------ resume, checkpoints, outputs

    def _restore(self) -> None:
        """Adapters, optimizer (incl. its step, hence the schedule), RNG key and data position (rundir.claim
        has removed half-written checkpoints and refused a directory without any)."""
        latest = ckpt.latest_checkpoint(rundir.checkpoint_root(self.out))
        self.state = restore_run(latest, self.model, self.optimizer, self.fingerprint)
        self.resumed_from = self.state.step

    def save_checkpoint(self, val_loss: float | None = None, wait: bool = False) -> Path:
        """Rank 0 snapshots the run for the writer (`wait`: until published and verified); all ranks wait for that."""
        if self.is_main:
            if self._saved_step != self.step:  # a step already saved (or being saved) is not written twice
                self.saver.submit(lambda: snapshot_run(self.state, self.model, self.optimizer, self.adapter_config,
                                                       self.fingerprint, val_loss))
            if wait:
                self.saver.wait()
        self._saved_step = self.step
        self._barrier()
        return self.out / "checkpoints" / ckpt.checkpoint_name(self.step)

    def write_adapters(self) -> Path:
        """<out>/adapters in the mlx-lm layout, replaced atomically."""
        target = self.out / "adapters"
        if self.is_main:
            ckpt.publish_adapters(target, ckpt.host_copy(dict(tree_flatten(self.model.trainable_parameters()))),
                                  self.adapter_config)
        self._barrier()
        return target

    def evaluate(self, step: int) -> dict | None:
        """Token-mean validation CE overall and per tier (None without a validation split)."""
        if not self.valid_batches:
            return None
        return tier_validation(self.model, self.eval_ce, self.valid_batches, step, self.rank, self.size)

    # ------------------------------------------------------------ one update

    def _batches(self) -> Iterator[tuple[int, int, list[Example]]]:
        """(epoch, position after this batch, examples) forever, starting at the saved position."""
        tc, epoch, start = self.config.train, self.state.epoch, self.state.batch_index
        while True:
            for offset, batch in enumerate(self.train_data.batches(tc.batch_size, tc.seed, epoch, start)):
                yield epoch, start + offset + 1, batch
            epoch, start = epoch + 1, 0

    def _global_batch(self) -> list[Example]:
        records = []
        for _ in range(self.config.train.grad_accumulation):
            self.state.epoch, self.state.batch_index, batch = next(self.batch_stream)
            records.extend(batch)
        return records

    def _micro_batches(self, records: list[Example]) -> list[list[Example]]:
        """This rank's share of the global batch (every size-th record), cut into micro-batches."""
        mine, size = records[self.rank :: self.size], self.state.micro_batch
        return [mine[i : i + size] for i in range(0, len(mine), size)]

    def _micro_arrays(self, micro: list[Example], global_norm: float) -> tuple[mx.array, ...]:
        """A micro-batch as the step's arrays; its loss is scaled by its share of the global normaliser."""
        batch = collate(micro)
        scale = mx.array(normaliser(micro, self.mode in WEIGHTED_OBJECTIVES) / global_norm, dtype=mx.float32)
        return (batch.inputs, batch.targets, batch.mask, batch.weights, batch.authority_weight,
                batch.provenance_entropy, scale)

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

    def _update(self, micros: list[list[Example]], norms: tuple[float, float, int]) -> tuple[list, float, bool]:
        """One guarded update; then a single sync reads every micro-batch's parts, the grad norm and `finite`."""
        global_norm = norms[1] if self.mode in WEIGHTED_OBJECTIVES else norms[0]
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
        started, state = time.perf_counter(), self.state
        records = self._global_batch()
        norms = (normaliser(records, False), normaliser(records, True), len(records))
        micros = self._micro_batches(records)
        pieces, grad_norm, finite = self._update(micros, norms)
        contributions = part_contributions(pieces, norms)
        if self.size > 1:
            contributions = np.array(mx.distributed.all_sum(mx.array(contributions.astype(np.float32)), stream=mx.cpu))
        parts = finish_parts(contributions, self.mode, state.lambda_weight)
        if finite:
            state.bad_in_row = 0
            state.trained_tokens += int(norms[0])
        else:
            state.bad_in_row += 1
            state.skipped_total += 1
        state.step += 1
        elapsed_s = time.perf_counter() - started
        return {"step": state.step, "epoch": state.epoch, "batch": state.batch_index, "objective": self.mode,
                **{k: _finite(v) for k, v in parts.items()}, "lambda_weight": state.lambda_weight,
                "lr": float(self.optimizer.state["learning_rate"]), "grad_norm": _finite(grad_norm),
                "skipped": not finite, "skipped_total": state.skipped_total, "tokens": int(norms[0]),
                "trained_tokens": state.trained_tokens, "step_time_s": round(elapsed_s, 5),
                "tokens_per_s": round(norms[0] / elapsed_s, 2), "it_per_s": round(1.0 / elapsed_s, 4),
                "micro_batch": state.micro_batch, "micro_batches": len(micros),
                "padding_fraction": round(padding_fraction(micros), 4)}

    # ------------------------------------------------------------ the loop

    def _apply(self, control: Control | None) -> None:
        """Carry out what a callback asked: log its events, shrink micro-batches, or checkpoint and stop."""
        if control is None:
            return
        for event in control.events:
            self.writer.write(event)
        if control.micro_batch is not None:
            self.state.micro_batch = control.micro_batch
        if control.abort is not None:
            self.save_checkpoint(wait=True)
            raise control.abort

    def _begin(self) -> list[dict]:
        """Log setup events, run the step-0 validation, fix lambda, build the compiled step."""
        resumed = self.resumed_from is not None
        self.writer = MetricsWriter(self.out / "metrics.jsonl", self.is_main, self.resumed_from if resumed else None)
        self.saver = CheckpointSaver(self.out / "checkpoints", self.config.train.keep_last, self.config.train.async_save,
                                     self.writer.write)
        self._saved_step = self.resumed_from
        for event in self.events + self.data_events:
            self.writer.write(event)
        evals = self.writer.earlier("val_loss")  # a resumed run reports the validations before its resume too
        if not resumed:
            first = self.evaluate(0)
            if first is not None:
                evals.append(first)
                self._log_eval(first)
            self._set_lambda(first)
        loss, tc = self.config.loss, self.config.train
        self.fns = StepFunctions(self.model, self.optimizer, self.mode, self.state.lambda_weight, loss.alpha,
                                 tc.grad_clip, tc.compile)
        self.batch_stream = self._batches()
        info = {"step": self.step, "steps": tc.steps, "objective": self.mode, "resumed_from": self.resumed_from,
                "world_size": self.size, "trainable_parameters": sum(v.size for _, v in tree_flatten(self.model.trainable_parameters()))}
        self.writer.write({"event": "train_begin", **info})
        for callback in self.callbacks:
            self._apply(callback.on_train_begin(info))
        return evals

    def _set_lambda(self, first_eval: dict | None) -> None:
        """auto_lambda: lambda * mean L_emp = target_ratio * initial validation CE (reference behaviour)."""
        loss = self.config.loss
        if not (loss.auto_lambda and self.mode in TERM_OBJECTIVES):
            return
        if first_eval is None:
            raise ConfigError("loss.auto_lambda needs a validation split (valid.jsonl) to estimate the initial CE")
        distrust_mean = empirical_distrust_loss(self.train_data.authority_weight, self.train_data.provenance_entropy,
                                                loss.alpha)
        self.state.lambda_weight = auto_lambda(first_eval["val_loss"], distrust_mean, loss.auto_lambda_target_ratio)
        self.writer.write({"event": "auto_lambda", "lambda_weight": self.state.lambda_weight,
                           "ce_estimate": first_eval["val_loss"], "distrust_mean": distrust_mean})

    def _log_eval(self, metrics: dict) -> None:
        self.writer.write(metrics)
        for callback in self.callbacks:
            callback.on_eval(metrics["step"], metrics)

    def _after_step(self, metrics: dict, evals: list[dict]) -> None:
        tc = self.config.train
        if self.is_main:
            self.saver.collect()
        controls = [callback.on_step_end(self.step, metrics) for callback in self.callbacks]
        if self.step % tc.log_every == 0 or self.step == tc.steps or metrics["skipped"]:
            self.writer.write(metrics)
        for control in controls:
            self._apply(control)
        if self.state.bad_in_row >= tc.max_bad_steps:
            self.save_checkpoint(wait=True)  # the advice below reads the published checkpoints
            raise NonFiniteAbort(
                f"{self.state.bad_in_row} non-finite steps in a row (train.max_bad_steps={tc.max_bad_steps}) at step "
                f"{self.step}; {rundir.nonfinite_advice(self.out)}. Lower train.learning_rate or check the data.")
        val = self.evaluate(self.step) if self.step % tc.eval_every == 0 or self.step == tc.steps else None
        if val is not None:
            evals.append(val)
            self._log_eval(val)
        if self.step % tc.save_every == 0 or self.step == tc.steps:
            self.save_checkpoint(val["val_loss"] if val else None)

    def fit(self) -> TrainResult:
        """Train to train.steps (from wherever a resume left off) and write the adapters.

        Gradient checkpointing (train.grad_checkpoint) and the stop-signal handlers are on for this fit only.
        """
        try:
            with grad_checkpointing(self.model.layers[0], self.config.train.grad_checkpoint), graceful_stop() as request:
                return self._fit(request)
        finally:
            self.close()

    def _stop(self, signum: int, request: StopRequest) -> NoReturn:
        """Checkpoint the finished step (or finish its save already under way), log the stop, raise TrainingStopped."""
        path = self.save_checkpoint(wait=True)
        request.finish()
        self.writer.write({"event": "stopped", "signal": signal_name(signum), "step": self.step, "checkpoint": str(path)})
        raise TrainingStopped(signum, self.step, path)

    def _fit(self, request: StopRequest) -> TrainResult:
        from tqdm.auto import tqdm

        evals = self._begin()
        tc, history = self.config.train, self.writer.earlier("loss")
        metrics, rates = (history[-1] if history else {}), [m["tokens_per_s"] for m in history]
        bar = tqdm(total=tc.steps, initial=self.step, disable=not (self.progress and self.is_main), desc="train", unit="step")
        summary = {"event": "train_end", "status": "aborted", "step": self.step}
        try:
            while self.step < tc.steps:
                signum = agreed_stop(request, self.group)
                if signum is not None:
                    summary["status"] = "stopped"
                    self._stop(signum, request)
                metrics = self.train_step()
                rates.append(metrics["tokens_per_s"])
                self._after_step(metrics, evals)
                bar.update(1)
                bar.set_postfix(loss=f"{metrics['loss'] or float('nan'):.4f}", tok_s=f"{metrics['tokens_per_s']:.0f}")
            if self.is_main:
                self.saver.wait()  # the final checkpoint is complete and verified before the adapters are written
            adapters = self.write_adapters()
            summary.update(status="ok", step=self.step, skipped_total=self.state.skipped_total,
                           tokens_per_s_median=float(np.median(rates)) if rates else None)
            self.writer.write(summary)
        except BaseException as error:  # a save under way finishes first, unless a second stop signal says leave now
            if self.is_main and not isinstance(error, StopAborted):
                self.saver.close()
            raise
        finally:
            bar.close()
            summary["step"] = self.step
            for callback in self.callbacks:
                callback.on_train_end(summary)
            self.writer.close()
        return TrainResult(self.out, adapters, self.out / "metrics.jsonl", self.step, metrics, evals,
                           self.resumed_from, summary["tokens_per_s_median"] or 0.0)


def train(config: Config, out_dir: str | Path, **kwargs: Any) -> TrainResult:
    """Build a Trainer and fit it; keyword arguments as Trainer's."""
    return Trainer(config, out_dir, **kwargs).fit()
