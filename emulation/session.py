"""Session files: RAM, CPU state and device state, saved atomically, resumed lazily.

Layout (docs/formats.md): a 4 KiB header, a chunk table with a CRC-32 per chunk, the
small chunks (CPU state, one per device), the bulk chunks (device data too big to hold
in memory, such as a -cow overlay's contents, streamed in and out), then the RAM chunk,
page-aligned, with zero pages left as holes. RAM is never read at resume: it is mapped
MAP_PRIVATE from the file, so resume costs the same at 64 MiB and at 2 GiB; its checksum
is checked by ``molpy session verify``. The session layer knows devices only as
(kind, instance, version, bytes) and bulk chunks through the Device interface
(drivers/device.py).

A session file is untrusted input: every header and table field is checked before use,
chunks may not overlap or leave the file, small chunks are bounded, bulk chunks are never
read into memory, and the writer checks the new file with the reader's own rules before
it replaces the previous session.
"""

from __future__ import annotations

import json
import mmap
import os
import queue
import struct
import threading
import time
import zlib
from dataclasses import dataclass, field
from typing import Callable

from .. import __version__
from ..errors import SessionError
from ..files import FileLocked, HostFileError, NewFile, crc_range, lock, open_existing, pwrite_all, remove_stale
from .memory import MAX_RAM_MIB
from .state import StateError, loads

MAGIC = b"MOLPYSES"
VERSION = 3                       # 3: per-chunk state versions and bulk chunks
READABLE_VERSIONS = (2, 3)        # 2: the same layout, no bulk chunks, versions 0
HEADER_SIZE = 4096
PAGE = 4096
FLAG_USED = 1                     # a non-read-only session that has been resumed once
_HEADER = struct.Struct(">8sII16s64sQIIQQ")
_ENTRY = struct.Struct(">4sIQQII")
ENTRY_BULK = 1 << 16              # entry's last word: version (low 16 bits) | flags
MAX_CHUNKS = 1024
MAX_SMALL_CHUNK = 16 << 20        # CPU and device state: read into memory at open
MAX_RAM = MAX_RAM_MIB << 20
CPU_KIND = b"CPU "
RAM_KIND = b"RAM "


class SessionUsed(SessionError):
    """A resume-once session that was already resumed (MOL's rule: boot fresh instead)."""


@dataclass
class Chunk:
    kind: bytes
    instance: int
    offset: int
    length: int
    crc: int
    version: int = 0
    bulk: bool = False

    @property
    def name(self) -> str:
        return f"{self.kind.decode('ascii', 'replace').strip()}/{self.instance}"


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


@dataclass(frozen=True)
class BulkRef:
    """Where a bulk chunk lies in an open session file, for the device that wrote it."""

    path: str
    fd: int
    offset: int
    length: int
    crc: int
    version: int


@dataclass
class SessionFile:
    """An opened, checked session: the small chunks read into memory, RAM and bulk data not."""

    path: str
    fd: int
    version: int
    flags: int
    molpy_version: str
    config_checksum: str
    ram_size: int
    saved_ns: int
    chunks: list[Chunk]
    table_crc: int
    small: dict[tuple[bytes, int], bytes] = field(default_factory=dict)

    @property
    def used(self) -> bool:
        return bool(self.flags & FLAG_USED)

    @property
    def ram(self) -> Chunk:
        return next(c for c in self.chunks if c.kind == RAM_KIND)

    def cpu_dict(self) -> dict:
        try:
            doc = loads(self.small[(CPU_KIND, 0)], "CPU state")
        except (KeyError, StateError) as e:
            raise SessionError(f"{self.path}: the CPU state is damaged ({e})") from None
        if not isinstance(doc, dict):
            raise SessionError(f"{self.path}: the CPU state is damaged (not a record)")
        return doc

    def device_chunks(self) -> dict[tuple[str, int], bytes]:
        return {(k.decode("ascii", "replace"), i): v for (k, i), v in self.small.items()
                if k not in (CPU_KIND, RAM_KIND)}

    def versions(self) -> dict[tuple[str, int], int]:
        """The state version each chunk was written with (0 in format-2 files)."""
        return {(c.kind.decode("ascii", "replace"), c.instance): c.version for c in self.chunks}

    def bulk_chunks(self) -> dict[tuple[str, int], BulkRef]:
        return {(c.kind.decode("ascii", "replace"), c.instance):
                BulkRef(self.path, self.fd, c.offset, c.length, c.crc, c.version)
                for c in self.chunks if c.bulk}

    def lock(self, exclusive: bool) -> None:
        """flock the session (exclusive: a resume-once session; shared: read-only), or
        SessionError naming the molpy that holds it."""
        try:
            lock(self.fd, exclusive)
        except FileLocked as e:
            who = f"another molpy (pid {e.pid})" if e.pid else "another molpy"
            raise SessionError(f"session {self.path} is in use by {who}; it resumes in one molpy "
                               f"at a time" + ("" if exclusive else " unless it is read-only in both")) from None
        except OSError as e:
            raise SessionError(f"session {self.path}: cannot lock it: {e.strerror}") from None

    def mark_used(self) -> None:
        """MOL's behaviour for sessions that are not read-only: they resume once.

        The flag is written through a second descriptor on the same file (not by path, which
        could name another file by now), then closed: a writer open would break the read
        lease that guards the RAM mapping.
        """
        self.flags |= FLAG_USED
        header = _pack_header(self.flags, self.config_checksum, self.ram_size, len(self.chunks),
                              self.table_crc, self.saved_ns, self.molpy_version, self.version)
        try:
            fd = os.open(f"/proc/self/fd/{self.fd}", os.O_WRONLY | os.O_CLOEXEC)
        except OSError as e:
            raise SessionError(f"session {self.path}: cannot mark it used: {e.strerror}") from None
        try:
            os.pwrite(fd, header, 0)
            os.fsync(fd)
        except OSError as e:
            raise SessionError(f"session {self.path}: cannot mark it used: {e.strerror}") from None
        finally:
            os.close(fd)

    def verify_ram(self) -> bool:
        """Read the whole RAM chunk and check its checksum (slow: ``session verify`` only)."""
        ram = self.ram
        with mmap.mmap(self.fd, ram.length, mmap.MAP_SHARED, mmap.PROT_READ, offset=ram.offset) as m:
            view = memoryview(m)
            try:
                crc = 0
                for runs in _runs_by_slice(view):
                    crc = ram_checksum(view, runs, crc)
                return crc == ram.crc
            finally:
                view.release()

    def verify_bulk(self) -> list[str]:
        """Chunks whose bytes fail their checksum (reads each bulk chunk once, in steps)."""
        bad = []
        for c in self.chunks:
            if c.bulk and crc_range(self.fd, c.offset, c.length) != c.crc:
                bad.append(c.name)
        return bad

    def close(self) -> None:
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            os.close(fd)


def _pack_header(flags: int, checksum: str, ram_size: int, nchunks: int, table_crc: int, saved_ns: int,
                 molpy_version: str = __version__, version: int = VERSION) -> bytes:
    fixed = _HEADER.pack(MAGIC, version, flags, molpy_version.encode()[:16], checksum.encode()[:64], ram_size,
                         nchunks, table_crc, HEADER_SIZE, saved_ns)
    body = fixed.ljust(HEADER_SIZE - 4, b"\0")
    return body + struct.pack(">I", zlib.crc32(body))


def open_session(path: str) -> SessionFile:
    """Open and check a session file; SessionError with a one-line reason when it is bad.

    The file is opened read-only and non-blocking: a FIFO, directory or device at ``path``
    is refused, never waited on.
    """
    try:
        fd = open_existing(path, what="session file")
    except HostFileError as e:
        raise SessionError(f"session {e}") from None
    try:
        return _read(path, fd)
    except BaseException:
        os.close(fd)
        raise


def _read(path: str, fd: int) -> SessionFile:
    size = os.fstat(fd).st_size
    head = os.pread(fd, HEADER_SIZE, 0)
    if len(head) < _HEADER.size or head[:8] != MAGIC:
        raise SessionError(f"{path} is not a molpy session file")
    magic, version, flags, mver, checksum, ram_size, nchunks, table_crc, table, saved_ns = _HEADER.unpack_from(head)
    if version not in READABLE_VERSIONS:
        raise SessionError(f"{path}: session format version {version} is not supported (this molpy "
                           f"{__version__} reads versions {', '.join(map(str, READABLE_VERSIONS))}); "
                           f"start with --fresh")
    if len(head) < HEADER_SIZE or struct.unpack_from(">I", head, HEADER_SIZE - 4)[0] != \
            zlib.crc32(head[:HEADER_SIZE - 4]):
        raise SessionError(f"{path}: the session header is damaged (checksum mismatch)")
    if not 0 < nchunks <= MAX_CHUNKS or table != HEADER_SIZE or flags & ~FLAG_USED:
        raise SessionError(f"{path}: the session header is damaged (chunk table)")
    raw = os.pread(fd, nchunks * _ENTRY.size, table)
    if len(raw) != nchunks * _ENTRY.size:
        raise SessionError(f"{path} is truncated (chunk table incomplete)")
    if zlib.crc32(raw) != table_crc:
        raise SessionError(f"{path}: the session is damaged (the chunk table fails its checksum)")
    chunks = []
    for n in range(nchunks):
        kind, instance, off, length, crc, word = _ENTRY.unpack_from(raw, n * _ENTRY.size)
        if not all(0x20 <= b < 0x7F for b in kind) or word >> 16 & ~1 or (version == 2 and word):
            raise SessionError(f"{path}: the session is damaged (chunk table entry {n})")
        chunks.append(Chunk(kind, instance, off, length, crc, version=word & 0xFFFF,
                            bulk=bool(word & ENTRY_BULK)))
    s = SessionFile(path=path, fd=fd, version=version, flags=flags,
                    molpy_version=mver.rstrip(b"\0").decode("ascii", "replace"),
                    config_checksum=checksum.rstrip(b"\0").decode("ascii", "replace"), ram_size=ram_size,
                    saved_ns=saved_ns, chunks=chunks, table_crc=table_crc)
    rams = [c for c in chunks if c.kind == RAM_KIND]
    if len(rams) != 1:
        raise SessionError(f"{path}: the session is damaged (it has {len(rams)} RAM chunks)")
    ram = rams[0]
    if ram.length != ram_size or ram.offset % PAGE or not 0 < ram_size <= MAX_RAM or ram_size % PAGE \
            or ram.bulk:
        raise SessionError(f"{path}: the session is damaged (bad RAM chunk)")
    _check_placement(path, chunks, table + nchunks * _ENTRY.size, size, ram.offset)
    for c in chunks:
        if c.kind == RAM_KIND or c.bulk:
            continue
        data = os.pread(fd, c.length, c.offset)
        if len(data) != c.length:
            raise SessionError(f"{path} is truncated (chunk {c.name} incomplete)")
        if zlib.crc32(data) != c.crc:
            raise SessionError(f"{path}: the session is damaged (chunk {c.name} fails its checksum)")
        s.small[(c.kind, c.instance)] = data
    if (CPU_KIND, 0) not in s.small:
        raise SessionError(f"{path}: the session is damaged (no CPU state)")
    return s


def _check_placement(path: str, chunks: list[Chunk], data_start: int, size: int, ram_offset: int) -> None:
    """Every chunk inside the file where the writer puts it (after the table; RAM last),
    none overlapping another, small ones small: so no table, however crafted, makes molpy
    read a byte twice or allocate more than the file holds."""
    seen = set()
    end = data_start
    for c in sorted(chunks, key=lambda c: (c.offset, c.length)):
        key = (c.kind, c.instance)
        if key in seen:
            raise SessionError(f"{path}: the session is damaged (chunk {c.name} twice)")
        seen.add(key)
        if c.kind != RAM_KIND and not c.bulk and c.length > MAX_SMALL_CHUNK:
            raise SessionError(f"{path}: the session is damaged (chunk {c.name} is {c.length} bytes; "
                               f"device state is at most {MAX_SMALL_CHUNK})")
        if c.offset < end or (c.kind != RAM_KIND and c.offset + c.length > ram_offset):
            raise SessionError(f"{path}: the session is damaged (chunk {c.name} out of place)")
        if c.offset + c.length > size:
            what = "RAM" if c.kind == RAM_KIND else f"chunk {c.name}"
            raise SessionError(f"{path} is truncated ({what} ends at byte {c.offset + c.length}, "
                               f"the file has {size})")
        end = c.offset + c.length


def nonzero_page_runs(view: memoryview) -> list[tuple[int, int]]:
    """(offset, length) of the runs of non-zero pages of RAM."""
    import numpy as np

    pages = np.frombuffer(view, dtype=np.uint64).reshape(-1, PAGE // 8).any(axis=1)
    edges = np.flatnonzero(np.diff(np.concatenate(([False], pages, [False])).astype(np.int8)))
    return [(int(a) * PAGE, int(b - a) * PAGE) for a, b in zip(edges[::2], edges[1::2])]


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
    pos = HEADER_SIZE + nchunks * _ENTRY.size
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
            for runs in _runs_by_slice(ram):
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
        table = b"".join(_ENTRY.pack(c.kind, c.instance, c.offset, c.length, c.crc,
                                     c.version | (ENTRY_BULK if c.bulk else 0)) for c in entries)
        pwrite_all(fd, table, HEADER_SIZE)
        pwrite_all(fd, _pack_header(0, config_checksum, len(ram), nchunks, zlib.crc32(table),
                                     time.time_ns()), 0)
        os.fsync(fd)
        _read(path, fd)                 # what a resume will check: refuse to publish what it refuses
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


SLICE = 32 << 20


def _runs_by_slice(ram: memoryview):
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
