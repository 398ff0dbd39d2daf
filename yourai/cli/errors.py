"""How a command reports a failure: one line naming the command and what went wrong, a traceback only with --debug.

Every command catches the errors it expects (a bad config, bad data, a missing file) and hands them to
`fail`; the dispatcher (`yourai.cli.main`) hands it anything a command did not expect. `--debug`
(before or after the command name) re-raises instead, so the full traceback is one flag away.
"""

from __future__ import annotations

import errno
import sys

DEBUG_FLAG = "--debug"
EXIT_ERROR = 1
_state = {"debug": False}


def set_debug(enabled: bool) -> None:
    _state["debug"] = enabled


def debug_enabled() -> bool:
    return _state["debug"]


def take_debug_flag(argv: list[str]) -> tuple[list[str], bool]:
    """argv without any --debug, and whether there was one (it may come before or after the command)."""
    kept = [arg for arg in argv if arg != DEBUG_FLAG]
    return kept, len(kept) != len(argv)


def describe(error: BaseException) -> str:
    """The error as a user reads it: an OSError names its file and says what the system said."""
    if isinstance(error, OSError) and error.filename is not None:
        what = error.strerror or str(error)
        hint = " (the disk is full: free space and resume with --resume)" if error.errno == errno.ENOSPC else ""
        return f"{error.filename}: {what}{hint}"
    text = str(error) or type(error).__name__
    return text if isinstance(error, (ValueError, OSError, RuntimeError, LookupError)) else f"{type(error).__name__}: {text}"


def fail(command: str, error: BaseException, code: int = EXIT_ERROR, *, expected: bool = True, prefix: str = "") -> int:
    """Print `yourai COMMAND: message` to stderr and return `code`; under --debug re-raise with the traceback."""
    if debug_enabled():
        raise error
    line = f"yourai {command}: {prefix}{describe(error)}"
    if not expected:
        line += f"\n(an unexpected error: `yourai {DEBUG_FLAG} {command} ...` shows the traceback; please report it)"
    print(line, file=sys.stderr)
    return code
