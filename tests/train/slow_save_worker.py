"""`yourai train` whose checkpoint publish pauses, so a test can signal or kill the process mid-save.

    python slow_save_worker.py MARKER WHEN ARGS...

WHEN is `stop` (pause the save a stop signal asked for) or a step number (pause that step's save).
On reaching the pause the worker writes the checkpoint's name to MARKER, then sleeps far longer
than any test waits, so a checkpoint that appears anyway was not aborted.
"""

import sys
import time
from pathlib import Path

import yourai  # noqa: F401  (OpenBLAS before mlx)
from yourai.cli.train import cli_main
from yourai.stopping import active_request
from yourai.train import checkpoints as ckpt

PAUSE_S = 120.0


def pausing(marker: Path, when: str):
    original = ckpt.publish

    def publish(staging: Path, target: Path) -> Path:
        stopping = active_request() is not None and active_request().signum is not None
        if target.name.startswith(ckpt.PREFIX) and (stopping if when == "stop" else target.name == ckpt.checkpoint_name(int(when))):
            marker.write_text(target.name)
            time.sleep(PAUSE_S)
        return original(staging, target)

    return publish


if __name__ == "__main__":
    ckpt.publish = pausing(Path(sys.argv[1]), sys.argv[2])
    sys.exit(cli_main(sys.argv[3:]))
