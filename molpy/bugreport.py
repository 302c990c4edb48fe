"""The CLI's net for molpy bugs: an exception that is not a :class:`molpy.Error`.

A molpy.Error is a failure molpy means to report (the user's file, a disk, a session):
one line. Anything else is molpy's own fault, and must never be blamed on the user's
files: its traceback goes to a file of its own in the data folder, and the user sees
one line saying it is a molpy bug and where the traceback is.
"""

from __future__ import annotations

import errno
import os
import sys
import time
import traceback

from .files import create_new, data_dir, pwrite_all
from .molrc.errors import printable


def write_report(exc: BaseException, argv: list[str] | None = None) -> str | None:
    """Write ``exc``'s traceback to a new file in the data folder; its path, or None when
    no file could be made (the traceback then goes to stderr instead)."""
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    head = (f"molpy bug report, {time.strftime('%Y-%m-%d %H:%M:%S')}, pid {os.getpid()}\n"
            f"command: {' '.join(sys.argv if argv is None else ['molpy', *argv])}\n"
            f"python: {sys.version.split()[0]}\n\n")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    try:
        folder = data_dir()
        for n in range(100):
            path = os.path.join(folder, f"bug-{stamp}-{os.getpid()}{f'-{n}' if n else ''}.txt")
            try:
                fd = create_new(path, mode=0o600, what="bug report")
            except OSError as e:
                if e.errno == errno.EEXIST:      # another report this second
                    continue
                raise
            try:
                pwrite_all(fd, (head + text).encode("utf-8", "replace"), 0)
            finally:
                os.close(fd)
            return path
    except OSError:
        pass
    try:
        sys.stderr.write(head + text)
    except (OSError, ValueError):
        pass
    return None


def bug_line(exc: BaseException, path: str | None) -> str:
    """The one line the user sees."""
    what = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    what = what.splitlines()[0] if what.strip() else type(exc).__name__
    if len(what) > 200:
        what = what[:200] + "..."
    where = f"traceback in {path}" if path else "traceback above"
    return printable(f"molpy bug: {what} ({where}; please report it)")
