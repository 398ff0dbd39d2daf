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

Python runs signal handlers only between bytecodes, so during one long native MLX step (seconds to
minutes on a real model) both signals wait and then look like one delivery. A caller that can leave
without unwinding (`yourai train`) passes `abort_now`: a watcher thread then sees every delivery as it
happens, through `signal.set_wakeup_fd` (MLX releases the GIL while it computes), and calls it on a
real second signal that the main thread has not answered within `ABORT_GRACE_S`.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from contextlib import contextmanager
from typing import Callable, Iterator

STOP_SIGNALS: tuple[int, ...] = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGINT", "SIGHUP")
                                      if hasattr(signal, name))
DUPLICATE_WINDOW_S = 0.5
ABORT_GRACE_S = 0.5  # how long the watcher lets the main thread raise StopAborted itself before abort_now


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
        self.finished = self.aborted = False
        self._first_at = 0.0
        self._on_signal, self.repeat_aborts = on_signal, repeat_aborts

    def handle(self, signum: int, frame: object = None) -> None:
        """The signal handler: Python runs it on the main thread between bytecodes, so it may raise."""
        if self._on_signal is not None:
            self._on_signal(signum)
        now = time.monotonic()
        if self.signum is None:
            self.signum, self._first_at = signum, now
        elif self.repeat_aborts and not self.finished and now - self._first_at >= DUPLICATE_WINDOW_S:
            self.aborted = True
            raise StopAborted(signum)

    def finish(self) -> None:
        """The stop is complete (its checkpoint written): a later signal has nothing left to abort."""
        self.finished = True


class DeliveryWatcher:
    """Sees each stop signal when it is delivered, not when the main thread gets to its handler.

    The C-level handler writes one byte (the signal number) per delivery to the wakeup fd; a daemon
    thread reads them. Inactive (`active` False) when another wakeup fd is in use, e.g. an asyncio
    loop in a notebook kernel: that owner keeps it, and the Python handlers alone decide.
    """

    def __init__(self, request: StopRequest, abort_now: Callable[[int], None]) -> None:
        self._request, self._abort_now = request, abort_now
        self._read, self._write = os.pipe()
        os.set_blocking(self._write, False)
        self._previous = signal.set_wakeup_fd(self._write, warn_on_full_buffer=False)
        self.active = self._previous == -1
        if not self.active:
            signal.set_wakeup_fd(self._previous)
            self._close_pipe()
            return
        self._thread = threading.Thread(target=self._run, name="yourai-stop-watcher", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        first_at: float | None = None
        while data := os.read(self._read, 64):
            now = time.monotonic()
            for signum in data:
                if signum not in STOP_SIGNALS:
                    continue
                if first_at is None:
                    first_at = now
                elif now - first_at >= DUPLICATE_WINDOW_S and self._request.repeat_aborts:
                    time.sleep(ABORT_GRACE_S)  # the main thread may be in Python code and raise StopAborted itself
                    if not (self._request.aborted or self._request.finished):
                        self._abort_now(signum)

    def _close_pipe(self) -> None:
        os.close(self._write)
        os.close(self._read)

    def close(self) -> None:
        """Give the wakeup fd back; closing the pipe's write end ends the thread (EOF)."""
        if not self.active:
            return
        signal.set_wakeup_fd(self._previous)
        os.close(self._write)
        self._thread.join(timeout=1.0)
        os.close(self._read)


_active: list[StopRequest] = []


@contextmanager
def graceful_stop(on_signal: Callable[[int], None] | None = None, repeat_aborts: bool = True,
                  abort_now: Callable[[int], None] | None = None) -> Iterator[StopRequest]:
    """Handle the stop signals for the duration; nested uses share the outermost request.

    `on_signal` sees every signal first (the runner forwards them); with `repeat_aborts` off a
    second signal is only recorded. `abort_now(signum)` (it must not return: say why and
    `os._exit`) answers a second signal that arrives while the main thread is inside native code
    (see `DeliveryWatcher`). Off the main thread Python cannot install handlers: the request then
    never fires, and the signals keep whatever meaning the main thread gave them.
    """
    if _active:
        yield _active[-1]
        return
    request = StopRequest(on_signal, repeat_aborts)
    if threading.current_thread() is not threading.main_thread():
        yield request
        return
    previous = {signum: signal.signal(signum, request.handle) for signum in STOP_SIGNALS}
    watcher = DeliveryWatcher(request, abort_now) if abort_now is not None else None
    _active.append(request)
    try:
        yield request
    finally:
        _active.clear()
        if watcher is not None:
            watcher.close()
        for signum, handler in previous.items():
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)


def active_request() -> StopRequest | None:
    """The request in force on this process, if any (tests and tools that pause work mid-stop read it)."""
    return _active[-1] if _active else None
