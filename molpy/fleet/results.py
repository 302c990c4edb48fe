"""The RESULTS file: one JSON line per finished input, appended as each one finishes.

Re-running a fleet with the same RESULTS goes on where it stopped: the ids already there
are skipped. Each result is one ``write`` of a whole line on an O_APPEND descriptor, so an
interrupted run leaves complete lines, except that a SIGKILL (or a full disk) in the
middle of a write can leave the last line torn: it is dropped (that input runs again),
with a note. Any other line that is not a result means the file is not a fleet's results
file: it is refused and left as it is.
"""

from __future__ import annotations

import json
import os
from typing import Callable

from .inputs import FleetInputError, id_key

MAX_RESULT_LINE = 64 << 20       # a result holds the guest's output (capped by the worker)


def _open_results(path: str) -> int:
    """RESULTS for reading and appending, created if needed; never through a symlink, never a
    FIFO, a device or a directory (FleetInputError says which)."""
    import errno
    import stat

    from ..files import kind_of

    try:
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK
                     | os.O_CLOEXEC | os.O_NOCTTY, 0o644)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise FleetInputError(f"{path}: the results file is a symbolic link; molpy does not write "
                                  f"through it") from None
        raise FleetInputError(f"{path}: cannot open the results file: {e.strerror}") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise FleetInputError(f"{path}: the results file is {kind_of(st.st_mode)}")
    os.set_blocking(fd, True)
    return fd


class ResultsFile:
    """RESULTS opened for appending; ``done`` holds the ids already in it (as JSON: id_key),
    ``done_ids`` the ids themselves."""

    def __init__(self, path: str, note: Callable[[str], None] | None = None) -> None:
        self.path = path
        self.fd = _open_results(path)
        try:
            self.done = self._read_done(note)
            self.done_ids = [json.loads(k) for k in self.done]
        except BaseException:
            os.close(self.fd)
            raise

    def _read_done(self, note) -> set[str]:
        done: set[str] = set()
        size = os.fstat(self.fd).st_size
        if size == 0:
            return done
        with open(os.dup(self.fd), "rb", closefd=True) as f:   # (an O_APPEND fd reads from 0)
            f.seek(0)
            pos = n = 0
            while True:
                raw = f.readline(MAX_RESULT_LINE + 1)
                if not raw:
                    break
                n += 1
                where = f"{self.path}:{n}"
                if not raw.endswith(b"\n"):               # torn by an interrupted write
                    os.ftruncate(self.fd, pos)
                    if note:
                        note(f"{where}: an incomplete last line (an interrupted run) was dropped; "
                             f"that input runs again")
                    break
                pos += len(raw)
                if not raw.strip():
                    continue
                try:
                    doc = json.loads(raw)
                    key = id_key(doc["id"]) if isinstance(doc, dict) and "stop" in doc else None
                except (ValueError, KeyError, TypeError, RecursionError):
                    key = None
                if key is None:
                    raise FleetInputError(f"{where}: not a result of molpy fleet; is this the right "
                                          f"RESULTS file? (it is left as it is)")
                done.add(key)
        return done

    def append(self, result: dict) -> None:
        """One result, as one line (one write: never interleaved, never half there)."""
        line = (json.dumps(result, separators=(",", ":")) + "\n").encode("ascii")
        view = memoryview(line)
        while view:
            n = os.write(self.fd, view)
            view = view[n:]

    def close(self) -> None:
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            os.close(fd)
