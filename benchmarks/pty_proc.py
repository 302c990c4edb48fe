"""A whole process on a pty, read until markers appear: how the Linux benchmarks time
`molpy run` and `qemu-system-ppc` the same way (wall time from the process's start)."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import time

TIMEOUT = 120.0


class PtyProcess:
    """``argv`` on a fresh pty (its own session, so it can be killed as a group)."""

    def __init__(self, argv: list[str], env: dict | None, cwd: str, what: str) -> None:
        self.what = what
        self.master, slave = os.openpty()
        self.start = time.perf_counter()
        self.proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env, cwd=cwd,
                                     start_new_session=True)
        os.close(slave)
        self.output = b""

    def _read(self, timeout: float) -> bool:
        """Read what is there within ``timeout``; False once the process is gone and silent."""
        if select.select([self.master], [], [], timeout)[0]:
            try:
                self.output += os.read(self.master, 65536)
                return True
            except OSError:                   # the process is gone
                pass
        return self.proc.poll() is None

    def until(self, *markers: bytes, pos: int = 0) -> float:
        """Seconds since the start when every marker was seen, in order (from ``pos`` on)."""
        deadline = time.monotonic() + TIMEOUT
        for marker in markers:
            while (found := self.output.find(marker, pos)) < 0:
                left = deadline - time.monotonic()
                if left <= 0 or not self._read(min(left, 1.0)) and self.output.find(marker, pos) < 0:
                    raise RuntimeError(f"{self.what}: {marker!r} not seen (exit {self.proc.poll()}); "
                                       f"output: {self.output[-600:]!r}")
            pos = found + len(marker)
        return time.perf_counter() - self.start

    def send(self, data: bytes) -> None:
        os.write(self.master, data)

    def command(self, line: bytes) -> float:
        """Seconds from typing ``line`` to the shell's next prompt."""
        pos = len(self.output)
        t = time.perf_counter()
        self.send(line + b"\n")
        self.until(line, b"\n", b"# ", pos=pos)
        return time.perf_counter() - t

    def finish(self, keys: bytes = b"") -> int:
        """Send ``keys`` (e.g. the shell's exit), read to the end; the exit status."""
        if keys:
            self.send(keys)
        deadline = time.monotonic() + TIMEOUT
        try:
            while self.proc.poll() is None and time.monotonic() < deadline:
                self._read(1.0)
            if self.proc.poll() is None:      # (found: a guest that never powered off hung the run)
                raise RuntimeError(f"{self.what}: still running {TIMEOUT:.0f} s after {keys!r}; "
                                   f"output: {self.output[-600:]!r}")
            return self.proc.returncode
        finally:
            self.kill()

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        try:
            os.close(self.master)
        except OSError:
            pass
