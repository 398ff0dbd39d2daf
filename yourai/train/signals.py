"""What a stop signal means for a training run (the signal handling itself is yourai/stopping.py).

The loop checks for a stop before each optimizer step: the step in hand is finished, a verified
checkpoint of it is written (or the save of it already under way is waited for), a `stopped`
event goes to metrics.jsonl and `TrainingStopped` is raised, which `yourai train` turns into one
line and exit code 128 + N. Under `mlx.launch` the ranks add up their requests every step
(`agreed_stop`), so a signal to any one rank stops all of them at the same step and none is left
waiting in a collective.
"""

from __future__ import annotations

import signal
from pathlib import Path

import mlx.core as mx

from yourai.stopping import STOP_SIGNALS, StopRequest, exit_code, signal_name


class TrainingStopped(RuntimeError):
    """A stop signal ended the run after a complete, verified checkpoint of the last finished step."""

    def __init__(self, signum: int, step: int, checkpoint: Path) -> None:
        self.signum, self.step, self.checkpoint = signum, step, checkpoint
        self.exit_code = exit_code(signum)
        verb = "interrupted (SIGINT)" if signum == signal.SIGINT else f"stopped by {signal_name(signum)}"
        super().__init__(f"{verb} at step {step}; checkpoint {checkpoint}")

    def _render_traceback_(self) -> list[str]:
        """IPython shows this instead of a traceback: a requested stop is an outcome, not a bug."""
        return [f"{type(self).__name__}: {self}", "resume=True (or `yourai train ... --resume`) continues from it"]


def agreed_stop(request: StopRequest, group: mx.distributed.Group) -> int | None:
    """The signal every rank stops for: one rank's request stops all of them at the same step."""
    if group.size() == 1:
        return request.signum
    flags = mx.array([float(request.signum == signum) for signum in STOP_SIGNALS])
    counts = mx.distributed.all_sum(flags, stream=mx.cpu, group=group).tolist()
    return next((signum for signum, count in zip(STOP_SIGNALS, counts) if count > 0), None)
