"""``python -m molpy ARGS`` as a real process: the suite's CLI runner (conftest's ``cli``
fixture, serverkit). A module of its own because the adversarial suite's conftest is
another module named conftest."""

from __future__ import annotations

import os
import subprocess
import sys


def run_cli(*args: str, input: bytes | None = b"", cwd: str | os.PathLike | None = None,
            timeout: float = 60, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run ``python -m molpy ARGS`` as a real process with stdin as a pipe."""
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    return subprocess.run([sys.executable, "-m", "molpy", *args], input=input, capture_output=True,
                          cwd=cwd, timeout=timeout, env=full_env)
