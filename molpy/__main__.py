"""``python -m molpy``: the same entry as the ``molpy`` script (molpy.warm.client)."""

import sys

from .warm.client import main

sys.exit(main())
