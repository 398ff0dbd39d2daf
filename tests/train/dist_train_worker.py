"""One rank of the distributed training test: `mlx.launch -n 2 --backend ring --python PY this.py ARGS`."""

import sys

import yourai  # noqa: F401  (OpenBLAS before mlx)
from yourai.cli.train import cli_main

if __name__ == "__main__":
    sys.exit(cli_main(sys.argv[1:]))
