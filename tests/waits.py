"""Waiting on conditions, not on time, for tests that drive real molpy processes.

A fixed sleep is a guess about how fast a loaded machine is; these wait for what the test
needs (a line of output, a signal handler in place, output piled up in a pipe). Their timeouts only
guard against a hang: reaching one fails the test with what was seen so far.
"""

from __future__ import annotations

import fcntl
import os
import select
import subprocess
import sys
import termios
import time
from typing import Callable

GUARD = 120.0           # seconds: only a hang takes this long


def wait_for(condition: Callable[[], bool], what: str, seconds: float = GUARD) -> None:
    """Poll ``condition`` until it holds; fail naming ``what`` if it never does."""
    end = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.002)


def read_until(proc: subprocess.Popen, needle: bytes, seconds: float = GUARD) -> bytes:
    """Read ``proc``'s stdout until ``needle`` has appeared; what was read."""
    fd = proc.stdout.fileno()
    seen = b""
    end = time.monotonic() + seconds
    while needle not in seen:
        left = end - time.monotonic()
        assert left > 0, f"did not see {needle!r}; output so far: {seen[-500:]!r}"
        if select.select([fd], [], [], left)[0]:
            chunk = os.read(fd, 65536)
            assert chunk, f"output ended before {needle!r}: {seen[-500:]!r}"
            seen += chunk
    return seen


def catches(pid: int, signum: int) -> bool:
    """``pid`` has its own handler for ``signum`` in place (Linux: /proc's SigCgt mask)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            mask = next(int(line.split()[1], 16) for line in f if line.startswith("SigCgt:"))
    except (OSError, StopIteration):
        return False
    return bool(mask >> (signum - 1) & 1)


def piled_up(fd: int) -> bool:
    """The pipe whose read end is ``fd`` holds at least half of what it can: nobody reads
    it and its writer is about to block (a write that does not fit waits whole)."""
    pending = int.from_bytes(fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"), sys.byteorder)
    return pending >= fcntl.fcntl(fd, fcntl.F_GETPIPE_SZ) // 2


def sleeping(pid: int) -> bool:
    """``pid``'s main thread waits in the kernel (state S or D in /proc), e.g. in a write."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(") ", 1)[1][:1] in ("S", "D")
    except (OSError, IndexError):
        return False
