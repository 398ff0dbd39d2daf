"""Stopping a long run gracefully on SIGTERM, SIGINT (Ctrl-C) and SIGHUP, as batch schedulers expect.

SLURM preemption, `timeout`, a closing terminal and Ctrl-C all send one of these and then wait a
grace period; dying at once loses the work since the last checkpoint and leaves no word in the
log. So while `graceful_stop()` is in force the first signal only *asks* for a stop (a
`StopRequest` records it) and the work in hand decides where to stop: training finishes its
optimizer step and checkpoints it (yourai/train/signals.py); `yourai run` passes the signal on to
its notebook kernel (yourai/pipeline.py). A second signal aborts at once (`StopAborted`). A repeat
arriving within `DUPLICATE_WINDOW_S` of the first is the same request delivered twice (a
scheduler signals every process, and `yourai run` forwards it to its kernel as well), not a second
one. Exit codes follow the shell's convention for a process ended by signal N: 128 + N.
"""

from __future__ import annotations

import signal
import threading
import time
from contextlib import contextmanager
from typing import Callable, Iterator

STOP_SIGNALS: tuple[int, ...] = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGINT", "SIGHUP")
                                      if hasattr(signal, name))
DUPLICATE_WINDOW_S = 0.5


def signal_name(signum: int) -> str:
    return signal.Signals(signum).name


def exit_code(signum: int) -> int:
    """What a shell reports for a process ended by this signal (143, 130, 129), so schedulers read a stop as one."""
    return 128 + int(signum)


class StopAborted(BaseException):
    """A second stop signal: leave at once. A BaseException so no `except Exception` on the way swallows it."""

    def __init__(self, signum: int) -> None:
        self.signum, self.exit_code = signum, exit_code(signum)
        super().__init__(f"second {signal_name(signum)}: aborted at once")

    def _render_traceback_(self) -> list[str]:
        """IPython shows this instead of a traceback (a notebook's second interrupt)."""
        return [f"{type(self).__name__}: {self}"]


class StopRequest:
    """The first stop signal received (`signum`, None until one arrives); a later one aborts unless `finished`."""

    def __init__(self, on_signal: Callable[[int], None] | None = None, repeat_aborts: bool = True) -> None:
        self.signum: int | None = None
        self.finished = False
        self._first_at = 0.0
        self._on_signal, self._repeat_aborts = on_signal, repeat_aborts

    def handle(self, signum: int, frame: object = None) -> None:
        """The signal handler: Python runs it on the main thread between bytecodes, so it may raise."""
        if self._on_signal is not None:
            self._on_signal(signum)
        now = time.monotonic()
        if self.signum is None:
            self.signum, self._first_at = signum, now
        elif self._repeat_aborts and not self.finished and now - self._first_at >= DUPLICATE_WINDOW_S:
            raise StopAborted(signum)

    def finish(self) -> None:
        """The stop is complete (its checkpoint written): a later signal has nothing left to abort."""
        self.finished = True


_active: list[StopRequest] = []


@contextmanager
def graceful_stop(on_signal: Callable[[int], None] | None = None, repeat_aborts: bool = True) -> Iterator[StopRequest]:
    """Handle the stop signals for the duration; nested uses share the outermost request.

    `on_signal` sees every signal first (the runner forwards them); with `repeat_aborts` off a
    second signal is only recorded. Off the main thread Python cannot install handlers: the request
    then never fires, and the signals keep whatever meaning the main thread gave them.
    """
    if _active:
        yield _active[-1]
        return
    request = StopRequest(on_signal, repeat_aborts)
    if threading.current_thread() is not threading.main_thread():
        yield request
        return
    previous = {signum: signal.signal(signum, request.handle) for signum in STOP_SIGNALS}
    _active.append(request)
    try:
        yield request
    finally:
        _active.clear()
        for signum, handler in previous.items():
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)


def active_request() -> StopRequest | None:
    """The request in force on this process, if any (tests and tools that pause work mid-stop read it)."""
    return _active[-1] if _active else None
