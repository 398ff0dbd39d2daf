"""The one callback protocol of the training loop, and the small answer a callback may give it.

Live plots, loggers and the memory monitor/guard are all `TrainingCallback`s passed to the
Trainer (mlx-lm's TrainingCallback idea, with HF's "control" answer in miniature): the loop calls

    on_train_begin(info)          once, after setup            -> Control | None
    on_step_end(step, metrics)    after every optimizer update -> Control | None
    on_eval(step, metrics)        after every validation pass
    on_train_end(summary)         always, last; summary["status"] says ok | aborted | stopped

Callbacks run in list order and may add keys to `metrics` (the memory callback adds its
readings), so a logger placed after them sees the enriched dict. A `Control` can ask for events
to be logged, for smaller micro-batches, or for the run to checkpoint and stop.
"""

from __future__ import annotations

from dataclasses import dataclass, field


class TrainingAbort(RuntimeError):
    """A callback or the loop stopped the run on purpose; a checkpoint was saved first."""


@dataclass
class Control:
    """What a callback asks of the loop; every field is optional."""

    events: list[dict] = field(default_factory=list)  # appended to metrics.jsonl as they are
    micro_batch: int | None = None  # run later micro-batches at this size (the global batch stays)
    abort: TrainingAbort | None = None  # save a checkpoint, then raise this


class TrainingCallback:
    """Override what you need; every hook defaults to doing nothing."""

    def on_train_begin(self, info: dict) -> Control | None:
        return None

    def on_step_end(self, step: int, metrics: dict) -> Control | None:
        return None

    def on_eval(self, step: int, metrics: dict) -> None:
        return None

    def on_train_end(self, summary: dict) -> None:
        return None
