"""``python -m pat_sglang.experiments``: see ``cli.py``."""

import sys

from .cli import main

sys.exit(main())
