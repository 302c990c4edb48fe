"""molpy's benchmarks: python -m benchmarks.run (see README)."""

import molpy  # noqa: F401  (first: it chooses the Unicorn library before a benchmark imports unicorn)
