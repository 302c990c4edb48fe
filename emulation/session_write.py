"""Writing a session file atomically: the small chunks, the bulk chunks devices stream
into the file, and RAM (its non-zero pages, found and checksummed on a second thread while
this one writes). The file is checked with the reader's own rules (emulation/session.py)
before it replaces the previous session; a save that fails at any point leaves the
previous session as it was and nothing behind.
"""

from __future__ import annotations

import json
import os
import queue
import threading
import time
import zlib
from dataclasses import dataclass
from typing import Callable

from ..errors import SessionError
from ..files import HostFileError, NewFile, pwrite_all, remove_stale
from .ram_pages import PAGE, ram_checksum, runs_by_slice
from .session import CPU_KIND, ENTRY, ENTRY_BULK, HEADER_SIZE, MAX_CHUNKS, MAX_SMALL_CHUNK, RAM_KIND, Chunk, \
    check_file, pack_header


@dataclass
class Bulk:
    """Device data written straight into the session file, never held in memory whole.

    ``write(fd, offset)`` puts exactly ``length`` bytes at ``offset`` of the session file
    and returns their CRC-32 (a -cow overlay's: drivers/cow.py, copied in the kernel).
    """

    kind: str
    instance: int
    length: int
    write: Callable[[int, int], int]
    version: int = 1


@dataclass
class Later:
    """Device state finished while RAM is written (osi_blk's disk digests): at most
    ``bound`` bytes, which ``finish()`` returns. Its place in the file is reserved first;
    a SessionError from ``finish`` refuses the save."""

    bound: int
    finish: Callable[[], bytes]


def write_session(path: str, ram: memoryview, cpu: dict, devices: list[tuple[str, int, bytes | Later]],
                  config_checksum: str, bulks: list[Bulk] | None = None,
                  versions: dict[tuple[str, int], int] | None = None) -> int:
    """Write a session atomically; returns its size in bytes.

    The file is written unnamed (O_TMPFILE), fsynced, read back with the reader's own
    checks, and only then put in place of the previous session: a save that fails, is
    interrupted or is killed at any point leaves the previous session as it was and no
    temporary file behind. A device's state may be a :class:`Later`, finished after RAM
    is written (its work runs beside the RAM write).
    """
    bulks = bulks or []
    versions = versions or {}
    folder = os.path.dirname(os.path.abspath(path))
    remove_stale(folder, os.path.basename(path))
    small = [(CPU_KIND, 0, versions.get(("CPU ", 0), 1), json.dumps(cpu, separators=(",", ":")).encode())]
    for kind, instance, data in devices:
        small.append((_kind_bytes(kind), instance, versions.get((kind, instance), 1),
                       data if isinstance(data, Later) else bytes(data)))
    for kind, instance, _, data in small:
        size = data.bound if isinstance(data, Later) else len(data)
        if size > MAX_SMALL_CHUNK:
            raise SessionError(f"cannot save: the state of {kind.decode()}/{instance} is {size} bytes "
                               f"(at most {MAX_SMALL_CHUNK}); nothing was written")
    nchunks = len(small) + len(bulks) + 1
    if nchunks > MAX_CHUNKS:
        raise SessionError(f"cannot save: {nchunks} chunks (at most {MAX_CHUNKS}); nothing was written")
    pos = HEADER_SIZE + nchunks * ENTRY.size
    entries, blobs, later = [], [], []
    for kind, instance, version, data in small:
        if isinstance(data, Later):
            later.append((len(entries), data))
            entries.append(Chunk(kind, instance, pos, data.bound, 0, version))
            pos += data.bound
            continue
        entries.append(Chunk(kind, instance, pos, len(data), zlib.crc32(data), version))
        blobs.append((pos, data))
        pos += len(data)
    placed = []
    for b in bulks:
        pos = _align(pos)
        placed.append((b, pos))
        pos += b.length
    ram_offset = _align(pos)
    # RAM goes out in slices. A worker thread finds the non-zero pages of each slice and
    # hands them over, then checksums them all; this thread writes them and syncs meanwhile
    # (numpy, zlib, pwrite and fsync release the GIL). The guest is stopped, so RAM does
    # not change under either thread.
    slices: queue.Queue = queue.Queue()
    crc_box = [0]
    stop = threading.Event()

    def worker_loop() -> None:
        found = []
        try:
            for runs in runs_by_slice(ram):
                if stop.is_set():
                    return
                slices.put(runs)
                found.append(runs)
        finally:
            slices.put(None)
        for runs in found:
            if stop.is_set():
                return
            crc_box[0] = ram_checksum(ram, runs, crc_box[0])

    pending = [data for _, data in later]         # Laters not finished yet

    def settle() -> None:
        """A save that fails leaves no device work under way."""
        for data in pending:
            try:
                data.finish()
            except Exception:
                pass

    def abandon() -> None:
        """Leave nothing behind: no file, no thread."""
        stop.set()
        worker.join()
        out.discard()
        out.close()
        settle()

    try:
        out = NewFile(path, what="session")
    except HostFileError as e:
        settle()
        raise SessionError(f"cannot write the session {path}: {e.reason}; the previous session (if any) "
                           f"is unchanged") from None
    fd = out.fd
    worker = threading.Thread(target=worker_loop, daemon=True)
    worker.start()
    try:
        os.ftruncate(fd, ram_offset + len(ram))
        for off, data in blobs:
            pwrite_all(fd, data, off)
        for b, off in placed:
            entries.append(Chunk(_kind_bytes(b.kind), b.instance, off, b.length, b.write(fd, off),
                                 b.version, bulk=True))
        while (runs := slices.get()) is not None:
            for off, length in runs:
                pwrite_all(fd, ram[off:off + length], ram_offset + off)
        for n, data in later:
            pending.remove(data)
            try:
                blob = data.finish()
            except SessionError as e:
                raise _Refused(str(e)) from None
            if len(blob) > data.bound:
                raise _Refused(f"the state of {entries[n].name} outgrew its {data.bound} bytes")
            c = entries[n]
            entries[n] = Chunk(c.kind, c.instance, c.offset, len(blob), zlib.crc32(blob), c.version)
            pwrite_all(fd, blob, c.offset)
        os.fsync(fd)
        worker.join()
        entries.append(Chunk(RAM_KIND, 0, ram_offset, len(ram), crc_box[0], 1))
        table = b"".join(ENTRY.pack(c.kind, c.instance, c.offset, c.length, c.crc,
                                     c.version | (ENTRY_BULK if c.bulk else 0)) for c in entries)
        pwrite_all(fd, table, HEADER_SIZE)
        pwrite_all(fd, pack_header(0, config_checksum, len(ram), nchunks, zlib.crc32(table),
                                     time.time_ns()), 0)
        os.fsync(fd)
        check_file(path, fd)            # what a resume will check: refuse to publish what it refuses
        previous = _hold(path)
        out.publish()
    except OSError as e:
        abandon()
        raise SessionError(f"cannot write the session {path}: {e.strerror}; the previous session "
                           f"(if any) is unchanged") from None
    except _Refused as e:
        abandon()
        raise SessionError(f"cannot save: {e}; the previous session (if any) is unchanged") from None
    except SessionError as e:
        abandon()
        raise SessionError(f"cannot save: the file written fails the resume checks ({e}); the previous "
                           f"session (if any) is unchanged") from None
    except BaseException:
        abandon()
        raise
    out.close()
    if previous is not None:
        # Freeing the replaced session's blocks happens at its last close and takes tens
        # of milliseconds for a big file; the save is complete, so another thread waits.
        threading.Thread(target=os.close, args=(previous,), daemon=True).start()
    return ram_offset + len(ram)


class _Refused(Exception):
    """A device could not finish its state: the save is refused with its message."""


def _kind_bytes(kind: str) -> bytes:
    raw = kind.encode("ascii")
    if len(raw) != 4:
        raise ValueError(f"a chunk kind is four ASCII letters, not {kind!r}")
    return raw


def _align(pos: int) -> int:
    return (pos + PAGE - 1) // PAGE * PAGE


def _hold(path: str) -> int | None:
    """An open descriptor on the file about to be replaced, or None if there is none."""
    try:
        return os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
