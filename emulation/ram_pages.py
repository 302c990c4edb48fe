"""RAM as a session stores it: the runs of non-zero pages, found in slices, and their
checksum. Zero pages are holes in the file and fed to no checksum, so saving and
verifying cost what the guest's RAM holds, not its size."""

from __future__ import annotations

import struct
import zlib
from typing import Iterator

PAGE = 4096
SLICE = 32 << 20                  # RAM is scanned (and written) this much at a time


def nonzero_page_runs(view: memoryview) -> list[tuple[int, int]]:
    """(offset, length) of the runs of non-zero pages of RAM."""
    import numpy as np

    pages = np.frombuffer(view, dtype=np.uint64).reshape(-1, PAGE // 8).any(axis=1)
    edges = np.flatnonzero(np.diff(np.concatenate(([False], pages, [False])).astype(np.int8)))
    return [(int(a) * PAGE, int(b - a) * PAGE) for a, b in zip(edges[::2], edges[1::2])]


def runs_by_slice(ram: memoryview) -> Iterator[list[tuple[int, int]]]:
    """The non-zero page runs of RAM, one list per slice (runs never cross a slice)."""
    for start in range(0, len(ram), SLICE):
        part = ram[start:start + SLICE]
        yield [(start + off, length) for off, length in nonzero_page_runs(part)]


def ram_checksum(ram: memoryview, runs: list[tuple[int, int]], crc: int = 0) -> int:
    """CRC-32 over every run of non-zero pages: its offset and length, then its bytes.

    Zero pages are not fed in (that would cost as much as the save itself), yet a hole
    that gained data changes the runs and so the checksum.
    """
    for off, length in runs:
        crc = zlib.crc32(struct.pack(">QQ", off, length), crc)
        crc = zlib.crc32(ram[off:off + length], crc)
    return crc
