"""``python -m molpy``."""

import sys

from .cli import main

sys.exit(main())
