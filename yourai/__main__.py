"""`python -m yourai COMMAND ...`: the same dispatcher as the `yourai` script."""

import sys

from yourai.cli import main

sys.exit(main())
