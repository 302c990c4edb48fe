"""Reading a molrc file without trusting it, and joining its continued lines.

A molrc may name any path (``include /dev/zero``, a FIFO, a directory, a huge or
growing file): only regular files are read, never more than ``MAX_FILE_BYTES``, opened
non-blocking so that nothing planted at the name can make the open wait.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass

from ..files import kind_of
from .bounds import MAX_FILE_BYTES, MAX_FILES, MAX_LINE_CHARS, MAX_TOTAL_BYTES
from .errors import ConfigError

def _kind(mode: int) -> str | None:
    """What a non-regular file is, or None for a regular file."""
    return None if stat.S_ISREG(mode) else kind_of(mode)


@dataclass
class ReadBudget:
    """What one configuration may read in all (includes are counted every time)."""

    files: int = 0
    total_bytes: int = 0


def read_file(path: str, budget: ReadBudget, prefix: str) -> str:
    """The text of a molrc file; ConfigError (starting with ``prefix``) for anything else."""
    budget.files += 1
    if budget.files > MAX_FILES:
        raise ConfigError(f"{prefix}: more than {MAX_FILES} files read for one configuration")
    try:
        before = os.stat(path)            # a device is never even opened
        kind = _kind(before.st_mode)
        if kind is None:
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
            try:
                st = os.fstat(fd)         # what was opened, not what the name said before
                kind = _kind(st.st_mode)
                if kind is None and st.st_size <= MAX_FILE_BYTES:
                    data = _read_at_most(fd, MAX_FILE_BYTES + 1)
            finally:
                os.close(fd)
    except OSError as e:
        raise ConfigError(f"{prefix}: cannot read: {e.strerror}") from None
    if kind is not None:
        raise ConfigError(f"{prefix}: cannot read: it is {kind}, not a regular file")
    if st.st_size > MAX_FILE_BYTES or len(data) > MAX_FILE_BYTES:
        raise ConfigError(f"{prefix}: cannot read: larger than {MAX_FILE_BYTES >> 20} MiB "
                          f"(the limit for a molrc file)")
    budget.total_bytes += len(data)
    if budget.total_bytes > MAX_TOTAL_BYTES:
        raise ConfigError(f"{prefix}: more than {MAX_TOTAL_BYTES >> 20} MiB of molrc text read "
                          f"for one configuration")
    return decode(data, prefix)


def _read_at_most(fd: int, limit: int) -> bytes:
    parts, size = [], 0
    while size < limit:
        chunk = os.read(fd, min(1 << 16, limit - size))
        if not chunk:
            break
        parts.append(chunk)
        size += len(chunk)
    return b"".join(parts)


def decode(data: bytes, name: str) -> str:
    """UTF-8 text (undecodable bytes become U+FFFD); a NUL byte is refused, naming its line."""
    nul = data.find(b"\0")
    if nul >= 0:
        line = data.count(b"\n", 0, nul) + 1
        raise ConfigError(f"{name}:{line}: a NUL byte (this is not a text file)")
    return data.decode("utf-8", errors="replace")


def logical_lines(text: str, name: str) -> Iterator[tuple[int, str]]:
    """(number of its first line, text) of each line, '\\'-continued lines joined.

    MOL's rule: a line whose last character before the newline is a backslash goes on
    with the next line, the backslash becoming a space (also inside a comment or quotes).
    Only '\\n' ends a line (a '\\r' is a word separator, as in MOL).
    """
    lines = text.split("\n")
    last = len(lines) - 1                 # the text after the final newline (has none itself)
    i = 0
    while i <= last:
        start = i
        parts = [lines[i]]
        size = len(lines[i])
        while i < last and parts[-1].endswith("\\"):
            parts[-1] = parts[-1][:-1] + " "
            i += 1
            parts.append(lines[i])
            size += len(lines[i])
            if size > MAX_LINE_CHARS:
                break
        if size > MAX_LINE_CHARS:
            raise ConfigError(f"{name}:{start + 1}: a line longer than {MAX_LINE_CHARS} characters "
                              f"(the limit for a molrc line)")
        yield start + 1, "".join(parts)
        i += 1
