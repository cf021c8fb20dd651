"""``python -m exchange_fuse.emulator``: run the Graph mail emulator."""

from __future__ import annotations

import sys

from exchange_fuse.emulator.cli import main

if __name__ == "__main__":
    sys.exit(main())
