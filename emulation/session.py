"""Session files: RAM, CPU state and device state, saved atomically, resumed lazily.

Layout (docs/formats.md): a 4 KiB header, a chunk table with a CRC-32 per chunk, the
small chunks (CPU state, one per device), then the RAM chunk, page-aligned, with zero
pages left as holes. RAM is never read at resume: it is mapped MAP_PRIVATE from the
file, so resume costs the same at 64 MiB and at 2 GiB; its checksum is checked by
``molpy session verify``. The session layer knows devices only as (kind, instance,
bytes) through the Device interface (drivers/device.py).
"""

from __future__ import annotations

import json
import os
import queue
import struct
import threading
import time
import zlib
from dataclasses import dataclass, field

from .. import __version__

MAGIC = b"MOLPYSES"
VERSION = 2                       # 2: the header holds the chunk table's CRC-32
HEADER_SIZE = 4096
PAGE = 4096
FLAG_USED = 1                     # a non-read-only session that has been resumed once
_HEADER = struct.Struct(">8sII16s64sQIIQQ")
_ENTRY = struct.Struct(">4sIQQII")
MAX_CHUNKS = 4096
MAX_SMALL_CHUNK = 1 << 30         # device state (with cow overlay contents) is at most this
CPU_KIND = b"CPU "
RAM_KIND = b"RAM "


class SessionError(Exception):
    """A session file that cannot be used; the message names it and says why."""


@dataclass
class Chunk:
    kind: bytes
    instance: int
    offset: int
    length: int
    crc: int


@dataclass
class SessionFile:
    """An opened, checked session: everything but RAM read into memory."""

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
    writable: bool = False

    @property
    def used(self) -> bool:
        return bool(self.flags & FLAG_USED)

    @property
    def ram(self) -> Chunk:
        return next(c for c in self.chunks if c.kind == RAM_KIND)

    def cpu_dict(self) -> dict:
        try:
            return json.loads(self.small[(CPU_KIND, 0)])
        except (KeyError, ValueError) as e:
            raise SessionError(f"{self.path}: the CPU state is damaged ({e})") from None

    def device_chunks(self) -> dict[tuple[str, int], bytes]:
        return {(k.decode("ascii", "replace"), i): v for (k, i), v in self.small.items()
                if k not in (CPU_KIND, RAM_KIND)}

    def mark_used(self) -> None:
        """MOL's behaviour for sessions that are not read-only: they resume once."""
        self.flags |= FLAG_USED
        os.pwrite(self.fd, _pack_header(self.flags, self.config_checksum, self.ram_size, len(self.chunks),
                                        self.table_crc, self.saved_ns, self.molpy_version), 0)
        os.fsync(self.fd)

    def verify_ram(self) -> bool:
        """Read the whole RAM chunk and check its checksum (slow: ``session verify`` only)."""
        import mmap

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

    def close(self) -> None:
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            os.close(fd)


def _pack_header(flags: int, checksum: str, ram_size: int, nchunks: int, table_crc: int, saved_ns: int,
                 version: str = __version__) -> bytes:
    fixed = _HEADER.pack(MAGIC, VERSION, flags, version.encode()[:16], checksum.encode()[:64], ram_size,
                         nchunks, table_crc, HEADER_SIZE, saved_ns)
    body = fixed.ljust(HEADER_SIZE - 4, b"\0")
    return body + struct.pack(">I", zlib.crc32(body))


def open_session(path: str, writable: bool = False) -> SessionFile:
    """Open and check a session file; SessionError with a one-line reason when it is bad."""
    try:
        fd = os.open(path, (os.O_RDWR if writable else os.O_RDONLY) | os.O_CLOEXEC)
    except OSError as e:
        raise SessionError(f"session {path}: cannot open it: {e.strerror}") from None
    try:
        return _read(path, fd, writable)
    except BaseException:
        os.close(fd)
        raise


def _read(path: str, fd: int, writable: bool) -> SessionFile:
    size = os.fstat(fd).st_size
    head = os.pread(fd, HEADER_SIZE, 0)
    if len(head) < _HEADER.size or head[:8] != MAGIC:
        raise SessionError(f"{path} is not a molpy session file")
    magic, version, flags, mver, checksum, ram_size, nchunks, table_crc, table, saved_ns = _HEADER.unpack_from(head)
    if version != VERSION:
        raise SessionError(f"{path}: session format version {version} is not supported (this molpy "
                           f"{__version__} reads version {VERSION}); start with --fresh")
    if len(head) < HEADER_SIZE or struct.unpack_from(">I", head, HEADER_SIZE - 4)[0] != \
            zlib.crc32(head[:HEADER_SIZE - 4]):
        raise SessionError(f"{path}: the session header is damaged (checksum mismatch)")
    if not 0 < nchunks <= MAX_CHUNKS or table != HEADER_SIZE:
        raise SessionError(f"{path}: the session header is damaged (chunk table)")
    raw = os.pread(fd, nchunks * _ENTRY.size, table)
    if len(raw) != nchunks * _ENTRY.size:
        raise SessionError(f"{path} is truncated (chunk table incomplete)")
    if zlib.crc32(raw) != table_crc:
        raise SessionError(f"{path}: the session is damaged (the chunk table fails its checksum)")
    chunks = [Chunk(k, i, off, length, crc) for k, i, off, length, crc, _ in
              (_ENTRY.unpack_from(raw, n * _ENTRY.size) for n in range(nchunks))]
    s = SessionFile(path=path, fd=fd, version=version, flags=flags,
                    molpy_version=mver.rstrip(b"\0").decode("ascii", "replace"),
                    config_checksum=checksum.rstrip(b"\0").decode("ascii", "replace"), ram_size=ram_size,
                    saved_ns=saved_ns, chunks=chunks, table_crc=table_crc, writable=writable)
    seen = set()
    rams = [c for c in chunks if c.kind == RAM_KIND]
    if len(rams) != 1:
        raise SessionError(f"{path}: the session is damaged (it has {len(rams)} RAM chunks)")
    ram = rams[0]
    if ram.length != ram_size or ram.offset % PAGE or not 0 < ram_size <= 2048 << 20 or ram_size % PAGE:
        raise SessionError(f"{path}: the session is damaged (bad RAM chunk)")
    if ram.offset + ram.length > size:
        raise SessionError(f"{path} is truncated (RAM ends at byte {ram.offset + ram.length}, "
                           f"the file has {size})")
    data_start = table + nchunks * _ENTRY.size
    for c in chunks:
        key = (c.kind, c.instance)
        if key in seen:
            raise SessionError(f"{path}: the session is damaged (chunk {c.kind!r} {c.instance} twice)")
        seen.add(key)
        if c.kind == RAM_KIND:
            continue
        if c.length > MAX_SMALL_CHUNK or c.offset < data_start or c.offset + c.length > ram.offset:
            raise SessionError(f"{path}: the session is damaged (chunk {c.kind!r} out of place)")
        if c.offset + c.length > size:
            raise SessionError(f"{path} is truncated (chunk {c.kind!r} incomplete)")
        data = os.pread(fd, c.length, c.offset)
        if len(data) != c.length:
            raise SessionError(f"{path} is truncated (chunk {c.kind!r} incomplete)")
        if zlib.crc32(data) != c.crc:
            raise SessionError(f"{path}: the session is damaged (chunk {c.kind.decode('ascii', 'replace')!r} "
                               f"fails its checksum)")
        s.small[key] = data
    if (CPU_KIND, 0) not in s.small:
        raise SessionError(f"{path}: the session is damaged (no CPU state)")
    return s


def nonzero_page_runs(view: memoryview) -> list[tuple[int, int]]:
    """(offset, length) of the runs of non-zero pages of RAM."""
    import numpy as np

    pages = np.frombuffer(view, dtype=np.uint64).reshape(-1, PAGE // 8).any(axis=1)
    edges = np.flatnonzero(np.diff(np.concatenate(([False], pages, [False])).astype(np.int8)))
    return [(int(a) * PAGE, int(b - a) * PAGE) for a, b in zip(edges[::2], edges[1::2])]


def write_session(path: str, ram: memoryview, cpu: dict, devices: list[tuple[str, int, bytes]],
                  config_checksum: str) -> int:
    """Write a session atomically (temporary file, fsync, rename); returns its size in bytes.

    A save killed at any point leaves the previous session file as it was.
    """
    folder = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(folder, f".{os.path.basename(path)}.tmp.{os.getpid()}")
    _remove_stale_temporaries(folder, os.path.basename(path))
    small = [(CPU_KIND, 0, json.dumps(cpu, separators=(",", ":")).encode())]
    for kind, instance, data in devices:
        small.append((kind.encode("ascii")[:4].ljust(4), instance, bytes(data)))
    nchunks = len(small) + 1
    pos = HEADER_SIZE + nchunks * _ENTRY.size
    entries, blobs = [], []
    for kind, instance, data in small:
        entries.append(Chunk(kind, instance, pos, len(data), zlib.crc32(data)))
        blobs.append((pos, data))
        pos += len(data)
    ram_offset = (pos + PAGE - 1) // PAGE * PAGE
    # RAM goes out in slices. A worker thread finds the non-zero pages of each slice and
    # hands them over, then checksums them all; this thread writes them and syncs meanwhile (numpy, zlib, pwrite and fsync release the GIL). The guest is stopped, so
    # RAM does not change under either thread.
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

    def stop_worker() -> None:
        stop.set()
        worker.join()

    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    except OSError as e:
        raise SessionError(f"cannot write the session in {folder}: {e.strerror}") from None
    worker = threading.Thread(target=worker_loop, daemon=True)
    worker.start()
    try:
        os.ftruncate(fd, ram_offset + len(ram))
        for off, data in blobs:
            _pwrite_all(fd, data, off)
        while (runs := slices.get()) is not None:
            for off, length in runs:
                _pwrite_all(fd, ram[off:off + length], ram_offset + off)
        os.fsync(fd)
        worker.join()
        entries.append(Chunk(RAM_KIND, 0, ram_offset, len(ram), crc_box[0]))
        table = b"".join(_ENTRY.pack(c.kind, c.instance, c.offset, c.length, c.crc, 0) for c in entries)
        _pwrite_all(fd, table, HEADER_SIZE)
        _pwrite_all(fd, _pack_header(0, config_checksum, len(ram), nchunks, zlib.crc32(table), time.time_ns()), 0)
        os.fsync(fd)
    except OSError as e:
        stop_worker()
        os.close(fd)
        os.unlink(tmp)
        raise SessionError(f"cannot write the session {path}: {e.strerror}; the previous session "
                           f"(if any) is unchanged") from None
    except BaseException:
        stop_worker()
        os.close(fd)
        os.unlink(tmp)
        raise
    os.close(fd)
    previous = _hold(path)
    os.replace(tmp, path)
    dfd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
    if previous is not None:
        # Freeing the replaced session's blocks happens at its last close and takes tens
        # of milliseconds for a big file; the save is complete, so another thread waits.
        threading.Thread(target=os.close, args=(previous,), daemon=True).start()
    return ram_offset + len(ram)


def _remove_stale_temporaries(folder: str, name: str) -> None:
    """Temporary files of saves that were killed (their process is gone) only take space."""
    prefix = f".{name}.tmp."
    try:
        entries = [e for e in os.listdir(folder) if e.startswith(prefix)]
    except OSError:
        return
    for entry in entries:
        pid = entry[len(prefix):]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
            continue                               # still running: another molpy is saving
        except ProcessLookupError:
            pass
        except OSError:
            continue
        try:
            os.unlink(os.path.join(folder, entry))
        except OSError:
            pass


def _hold(path: str) -> int | None:
    """An open descriptor on the file about to be replaced, or None if there is none."""
    try:
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
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


def _pwrite_all(fd: int, data, offset: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n
