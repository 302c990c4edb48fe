"""Session files: their layout, and opening one with every field checked.

Layout (docs/formats.md): a 4 KiB header, a chunk table with a CRC-32 per chunk, the
small chunks (CPU state, one per device), the bulk chunks (device data too big to hold
in memory, such as a -cow overlay's contents, streamed in and out), then the RAM chunk,
page-aligned, with zero pages left as holes. RAM is never read at resume: it is mapped
MAP_PRIVATE from the file, so resume costs the same at 64 MiB and at 2 GiB; its checksum
(emulation/ram_pages.py) is checked by ``molpy session verify``. The session layer knows
devices only as (kind, instance, version, bytes) and bulk chunks through the Device
interface (drivers/device.py). Sessions are written by emulation/session_write.py.

A session file is untrusted input: every header and table field is checked before use,
chunks may not overlap or leave the file, small chunks are bounded, bulk chunks are never
read into memory, and the writer checks the new file with these same rules
(``check_file``) before it replaces the previous session.
"""

from __future__ import annotations

import mmap
import os
import struct
import zlib
from dataclasses import dataclass, field

from .. import __version__
from ..errors import SessionError
from ..files import FileLocked, HostFileError, crc_range, lock, open_existing
from .memory import MAX_RAM_MIB
from .ram_pages import PAGE, ram_checksum, runs_by_slice
from .state import StateError, loads

MAGIC = b"MOLPYSES"
VERSION = 3                       # 3: per-chunk state versions and bulk chunks
READABLE_VERSIONS = (2, 3)        # 2: the same layout, no bulk chunks, versions 0
HEADER_SIZE = 4096
FLAG_USED = 1                     # a non-read-only session that has been resumed once
_HEADER = struct.Struct(">8sII16s64sQIIQQ")
ENTRY = struct.Struct(">4sIQQII")
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
        header = pack_header(self.flags, self.config_checksum, self.ram_size, len(self.chunks),
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
                for runs in runs_by_slice(view):
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


def pack_header(flags: int, checksum: str, ram_size: int, nchunks: int, table_crc: int, saved_ns: int,
                 molpy_version: str = __version__, version: int = VERSION) -> bytes:
    """The 4 KiB header, its CRC-32 in its last four bytes (written last by a save, again
    by ``mark_used``)."""
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
        return check_file(path, fd)
    except BaseException:
        os.close(fd)
        raise


def check_file(path: str, fd: int) -> SessionFile:
    """The session open at ``fd``, every field checked (the writer checks what it wrote
    with this before publishing it); SessionError says what is wrong."""
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
    raw = os.pread(fd, nchunks * ENTRY.size, table)
    if len(raw) != nchunks * ENTRY.size:
        raise SessionError(f"{path} is truncated (chunk table incomplete)")
    if zlib.crc32(raw) != table_crc:
        raise SessionError(f"{path}: the session is damaged (the chunk table fails its checksum)")
    chunks = []
    for n in range(nchunks):
        kind, instance, off, length, crc, word = ENTRY.unpack_from(raw, n * ENTRY.size)
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
    _check_placement(path, chunks, table + nchunks * ENTRY.size, size, ram.offset)
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
