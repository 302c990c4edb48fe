"""The guest's log file (OSI LOG_PUTC lines): opened so nothing planted can redirect it, capped.

The file is opened with O_NOFOLLOW (a symlink at its name is refused, not followed),
O_NONBLOCK (a FIFO there cannot block molpy) and O_APPEND, and must be a regular file
with one link. When it reaches MAX_BYTES it is rotated: NAME becomes NAME.1 (replacing
the previous NAME.1; rename never follows a symlink) and a new NAME is started, so the
log takes at most twice MAX_BYTES however long a guest logs.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import sys

from .errors import ConfigError

MAX_BYTES = 8 << 20          # one file; with NAME.1 the log holds at most 16 MiB
_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


class LogFileError(ConfigError):
    """The log cannot be opened safely; the message names the file and says why."""


def open_log(path: str) -> int:
    """A descriptor appending to ``path``, which is (or becomes) a plain regular file."""
    try:
        fd = os.open(path, _FLAGS, 0o644)
    except OSError as e:
        if e.errno == errno.ELOOP:             # a symlink at the name
            raise LogFileError(f"the log {path} is a symbolic link; molpy does not write through one "
                               f"(--log FILE names another file, '--log -' is stderr)") from None
        if e.errno in (errno.ENXIO, errno.EISDIR):     # a FIFO nobody reads, a directory
            kind = "a FIFO" if e.errno == errno.ENXIO else "a directory"
            raise LogFileError(f"the log {path} is not a regular file ({kind})") from None
        raise LogFileError(f"cannot open the log {path}: {e.strerror}") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
        os.close(fd)
        why = "it has other hard links" if stat.S_ISREG(st.st_mode) else "not a regular file"
        raise LogFileError(f"the log {path} cannot be used: {why} (use --log FILE or '--log -')")
    return fd


class CappedLogHandler(logging.Handler):
    """A logging handler writing to a log file of at most MAX_BYTES, rotated to NAME.1."""

    def __init__(self, path: str, max_bytes: int = MAX_BYTES) -> None:
        super().__init__()
        self.path = path
        self.max_bytes = max_bytes
        self.failed = False
        self.fd, self.size = -1, 0
        if os.path.lexists(path):            # checked now; a missing log is made by its first line
            self._open()
        else:
            folder = os.path.dirname(os.path.abspath(path))
            if not os.path.isdir(folder) or not os.access(folder, os.W_OK | os.X_OK):
                raise LogFileError(f"cannot create the log {path}: its folder {folder} is missing "
                                   f"or not writable")

    def _open(self) -> None:
        self.fd = open_log(self.path)
        self.size = os.fstat(self.fd).st_size
        if self.size >= self.max_bytes:
            self._rotate()

    def emit(self, record: logging.LogRecord) -> None:
        if self.failed:
            return
        try:
            if self.fd < 0:
                self._open()
            data = (self.format(record) + "\n").encode("utf-8", "replace")
            if self.size + len(data) > self.max_bytes:
                self.size = os.fstat(self.fd).st_size     # another molpy may share the file
                if self.size + len(data) > self.max_bytes:
                    self._rotate()
            view = memoryview(data)
            while view:
                n = os.write(self.fd, view)
                view = view[n:]
                self.size += n
        except (OSError, LogFileError) as e:
            # The guest goes on; its log stops, with one line saying why.
            self.failed = True
            reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
            try:
                os.write(sys.stderr.fileno(), f"molpy: the log {self.path} cannot be written "
                                              f"({reason}); logging stopped\n".encode())
            except (OSError, ValueError):
                pass

    def _rotate(self) -> None:
        """NAME -> NAME.1, a new NAME; when another molpy already rotated, just reopen."""
        try:
            here = os.lstat(self.path)
            mine = os.fstat(self.fd)
            if (here.st_dev, here.st_ino) == (mine.st_dev, mine.st_ino):
                os.replace(self.path, self.path + ".1")
        except FileNotFoundError:
            pass
        old, self.fd = self.fd, open_log(self.path)
        os.close(old)
        self.size = os.fstat(self.fd).st_size

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        super().close()
