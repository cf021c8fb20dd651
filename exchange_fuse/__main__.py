"""``python -m exchange_fuse``: the same as ``exchange-mount``."""

import sys

from .cli import main

sys.exit(main())
