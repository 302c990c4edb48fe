"""Copy-on-write overlays: the guest writes, the disk never changes.

An overlay is one sparse file (format in docs/formats.md): a 4 KiB header naming the
base disk and its identity, a bitmap with one bit per 512-byte sector, and the data of
sector ``i`` at ``data_offset + 512 * i``. The format keeps all of that in a child
RawBackend (its own file); ``CowBackend`` stacks it on a base backend, which serves the
sectors the overlay does not hold and is never written.

Order of writes, so that a killed run never leaves an overlay that claims data it
does not hold: the data is written first, then the bitmap bytes that claim it. The
commit state (which disk a commit writes into, how far it got) lives in the header;
the commit itself is drivers/commit.py, which knows overlays only through their
allocation map and that state.
"""

from __future__ import annotations

import errno
import os
import re
import struct
import zlib
from dataclasses import dataclass

from molpy.files import (HostFileError, ReadBehind, create_new, kernel_copy, link_unnamed, open_unnamed,
                         pwrite_all)

from .block import SECTOR, BlockBackend, BlockError, DiskInUse, Extent, Identity, Reader, check_range
from .raw import RawBackend, lock_file

MAGIC = b"MOLPYCOW"
VERSION = 1
HEADER_SIZE = 4096
ALIGN = 4096
STATE_READY = 0          # in use or idle; the bitmap says what it holds
STATE_COMMITTING = 1     # a commit started and has not finished: run it again
_FIXED = struct.Struct(">8sIIQQQQQQQQIIQH")
MAX_PATH = HEADER_SIZE - _FIXED.size - 4
COPY_STEP = 8 << 20      # saved changes move through a buffer of this size


@dataclass
class Header:
    nsectors: int
    base: Identity
    state: int = STATE_READY
    progress: int = 0              # commit: sectors below this are already in the base

    @property
    def bitmap_offset(self) -> int:
        return HEADER_SIZE

    @property
    def bitmap_size(self) -> int:
        return (self.nsectors + 7) // 8

    @property
    def data_offset(self) -> int:
        end = self.bitmap_offset + self.bitmap_size
        return (end + ALIGN - 1) // ALIGN * ALIGN

    @property
    def file_limit(self) -> int:
        """How far the overlay's file may grow: the data of every sector."""
        return self.data_offset + self.nsectors * SECTOR

    def pack(self) -> bytes:
        path = self.base.path.encode()
        if len(path) > MAX_PATH:
            raise BlockError(f"disk path too long for an overlay header ({len(path)} bytes)")
        fixed = _FIXED.pack(MAGIC, VERSION, HEADER_SIZE, self.nsectors, self.bitmap_offset,
                            self.bitmap_size, self.data_offset, self.base.size, self.base.inode,
                            self.base.mtime_ns, self.base.dev, self.state, 0, self.progress, len(path))
        body = (fixed + path).ljust(HEADER_SIZE - 4, b"\0")
        return body + struct.pack(">I", zlib.crc32(body))

    @classmethod
    def unpack(cls, raw: bytes, where: str) -> "Header":
        if len(raw) < HEADER_SIZE:
            raise BlockError(f"{where}: not a molpy overlay (too short)")
        if raw[:8] != MAGIC:
            raise BlockError(f"{where}: not a molpy overlay (bad magic)")
        (_, version, hsize, nsectors, bm_off, bm_size, data_off, size, inode, mtime, dev, state, _,
         progress, plen) = _FIXED.unpack_from(raw)
        if version != VERSION:
            raise BlockError(f"{where}: overlay format version {version} is not supported "
                             f"(this molpy reads version {VERSION})")
        if struct.unpack_from(">I", raw, HEADER_SIZE - 4)[0] != zlib.crc32(raw[:HEADER_SIZE - 4]):
            raise BlockError(f"{where}: the overlay header is damaged (checksum mismatch)")
        if plen > MAX_PATH or state not in (STATE_READY, STATE_COMMITTING) or hsize != HEADER_SIZE:
            raise BlockError(f"{where}: the overlay header is damaged")
        path = raw[_FIXED.size:_FIXED.size + plen].decode("utf-8", "replace")
        if not path.startswith("/") or "\0" in path:
            raise BlockError(f"{where}: the overlay header is damaged (disk path)")
        h = cls(nsectors=nsectors, base=Identity(path, size, inode, mtime, dev), state=state,
                progress=progress)
        if (bm_off, bm_size, data_off) != (h.bitmap_offset, h.bitmap_size, h.data_offset) \
                or nsectors != (size + SECTOR - 1) // SECTOR or progress > nsectors:
            raise BlockError(f"{where}: the overlay header is damaged (inconsistent layout)")
        return h


_ONES = re.compile("1+")


def bit_runs(bits: bytes | bytearray, first: int, count: int) -> list[tuple[int, int, bool]]:
    """(start, length, held) runs of sectors first..first+count-1, MSB-first bitmap.

    Done with int and str operations in C: no per-sector Python loop, no numpy import
    (which would cost 150 ms at every start of ``molpy cow commit``).
    """
    b0, b1 = first // 8, (first + count + 7) // 8
    text = format(int.from_bytes(bits[b0:b1], "big"), f"0{(b1 - b0) * 8}b")
    lo = first - 8 * b0
    text = text[lo:lo + count]
    runs, pos = [], 0
    for m in _ONES.finditer(text):
        if m.start() > pos:
            runs.append((first + pos, m.start() - pos, False))
        runs.append((first + m.start(), m.end() - m.start(), True))
        pos = m.end()
    if pos < count:
        runs.append((first + pos, count - pos, False))
    return runs


class Overlay:
    """An open overlay: its header and bitmap, its file a child RawBackend, locked while open."""

    def __init__(self, path: str, file: RawBackend, header: Header, bits: bytearray) -> None:
        self.path = path
        self.file = file
        self.header = header
        self.bits = bits               # MSB first: sector i is bit 7 - i % 8 of byte i // 8
        file.limit = header.file_limit

    @property
    def fd(self) -> int:
        return self.file.fd

    # -- open/create --

    @classmethod
    def create(cls, path: str, base: Identity) -> "Overlay":
        """A new empty overlay at ``path``, which must not exist in any form.

        The file is made unnamed, locked and given its header before it is linked at
        ``path`` (where the file system allows; else created with O_EXCL|O_NOFOLLOW and
        locked at once): nothing planted at the name is followed, and no other molpy ever
        sees it half made. DiskInUse when another molpy made it first.
        """
        header = Header(nsectors=(base.size + SECTOR - 1) // SECTOR, base=base)
        folder = os.path.dirname(os.path.abspath(path))
        try:
            fd = open_unnamed(folder, what="overlay")
            named = fd is None
            if named:
                fd = create_new(path, what="overlay")
                os.set_blocking(fd, True)
        except HostFileError as e:
            if e.errno == errno.EEXIST:
                raise DiskInUse(f"overlay {path} was just made by another molpy", None) from None
            raise BlockError(f"overlay {e}") from None
        try:
            lock_file(fd, path, exclusive=True, what="overlay")
            os.ftruncate(fd, header.data_offset)
            os.pwrite(fd, header.pack(), 0)
            if not named and not link_unnamed(fd, path):
                raise DiskInUse(f"overlay {path} was just made by another molpy", None)
        except BaseException as e:
            os.close(fd)
            if named:
                os.unlink(path)
            if isinstance(e, HostFileError):
                raise BlockError(f"overlay {e}") from None
            if isinstance(e, OSError):
                raise BlockError(f"overlay {path}: cannot write it: {e.strerror}") from None
            raise
        file = RawBackend(path, readonly=False, lock=False, what="overlay", fd=fd, growable=header.file_limit)
        return cls(path, file, header, bytearray(header.bitmap_size))

    @classmethod
    def open(cls, path: str, writable: bool = True, *, nofollow: bool = False, lock: bool = True) -> "Overlay":
        """Open and check an overlay file (``nofollow``: refuse a symlink at ``path``, for
        the names in cow_dir that molpy manages itself; ``lock=False``: a read-only look
        that takes no lock, so it works while a running molpy holds the overlay)."""
        if writable and not lock:
            raise ValueError("an overlay opened for writing is locked")
        file = RawBackend(path, readonly=not writable, lock=lock, what="overlay", growable=HEADER_SIZE,
                          nofollow=nofollow)
        try:
            header = Header.unpack(os.pread(file.fd, HEADER_SIZE, 0), path)
            raw = os.pread(file.fd, header.bitmap_size, header.bitmap_offset)
            if len(raw) != header.bitmap_size:
                raise BlockError(f"{path}: the overlay is truncated (bitmap incomplete)")
            bits = bytearray(raw)
            spare = header.bitmap_size * 8 - header.nsectors
            if spare and bits[-1] & ((1 << spare) - 1):
                raise BlockError(f"{path}: the overlay bitmap claims sectors past the end of the disk")
            used = len(bits.rstrip(b"\0"))
            if used:
                last = used * 8 - (bits[used - 1] & -bits[used - 1]).bit_length()   # its lowest set bit
                need = header.data_offset + (last + 1) * SECTOR
                have = os.fstat(file.fd).st_size
                if have < need:
                    raise BlockError(f"{path}: the overlay is truncated (it holds sector {last}, which "
                                     f"ends at byte {need}, but the file has {have})")
        except BaseException:
            file.close()
            raise
        return cls(path, file, header, bits)

    # -- the allocation map --

    def held_runs(self, first: int, count: int) -> list[tuple[int, int, bool]]:
        return bit_runs(self.bits, first, count)

    def claim(self, first: int, count: int) -> None:
        """Mark sectors as held, in memory and then in the file (after their data)."""
        b0, b1 = first // 8, (first + count - 1) // 8 + 1
        width = (b1 - b0) * 8
        mask = ((1 << count) - 1) << (width - (first - 8 * b0) - count)
        old = int.from_bytes(self.bits[b0:b1], "big")
        if old & mask == mask:
            return
        new = (old | mask).to_bytes(b1 - b0, "big")
        self.bits[b0:b1] = new
        self.file.write(self.header.bitmap_offset + b0, memoryview(new))

    def sectors_held(self) -> int:
        return int.from_bytes(self.bits, "big").bit_count()

    def has_data(self) -> bool:
        return self.bits.count(0) != len(self.bits)

    def runs(self, start: int = 0) -> list[tuple[int, int]]:
        """(first sector, count) of every run of held sectors from ``start`` on."""
        n = self.header.nsectors
        if start >= n or not self.has_data():
            return []
        out = []
        # skip the empty stretches of the bitmap at C speed, then look at the bits
        for m in re.finditer(rb"[^\x00]+", bytes(self.bits[start // 8:])):
            lo = max(start, (start // 8 + m.start()) * 8)
            hi = min(n, (start // 8 + m.end()) * 8)
            out += [(a, c) for a, c, held in bit_runs(self.bits, lo, hi - lo) if held]
        return out

    def block_status(self, start: int = 0) -> list[Extent]:
        data, fd = self.header.data_offset, self.file.fd
        return [Extent(first, count, fd, data + first * SECTOR) for first, count in self.runs(start)]

    def read_data(self, offset: int, buf: memoryview) -> None:
        """Bytes of held sectors, from byte ``offset`` of the disk."""
        self.file.readinto(self.header.data_offset + offset, buf)

    def write_data(self, offset: int, buf: memoryview) -> None:
        self.file.write(self.header.data_offset + offset, buf)

    def clear(self) -> None:
        """Drop every held sector: the bitmap first (fsynced), then the data."""
        self.bits[:] = bytes(len(self.bits))
        self._write_bitmap()
        self.file.flush()
        self.file.truncate(self.header.data_offset)

    def _write_bitmap(self) -> None:
        self.file.write(self.header.bitmap_offset, memoryview(self.bits))

    # -- the commit state (drivers/commit.py) --

    def target(self) -> Identity:
        """The disk this overlay belongs to (during a commit: the one being written)."""
        return self.header.base

    @property
    def committing(self) -> bool:
        return self.header.state == STATE_COMMITTING

    @property
    def progress(self) -> int:
        return self.header.progress

    def begin_commit(self, target: Identity, progress: int) -> None:
        """Record the disk a commit writes into, durably, before it writes anything."""
        h = self.header
        h.state, h.progress, h.base = STATE_COMMITTING, progress, target
        self.write_header()
        self.file.flush()

    def record_progress(self, sector: int) -> None:
        self.header.progress = sector
        self.write_header()

    def end_commit(self, now: Identity) -> None:
        """Everything is in the disk (fsynced): hold nothing, and belong to the disk as it is now.

        The data stays in the file until the next run replaces the empty overlay, so a power
        failure before this header is on disk only means a re-run copies the same sectors."""
        self.bits[:] = bytes(len(self.bits))
        self._write_bitmap()
        h = self.header
        h.state, h.progress, h.base = STATE_READY, 0, now
        self.write_header()

    def write_header(self) -> None:
        self.file.write(0, memoryview(self.header.pack()))

    def close(self) -> None:
        self.file.close()


class CowBackend:
    """A block backend whose writes go to an overlay and whose misses go to ``base``."""

    readonly = False
    layered = True

    def __init__(self, base: BlockBackend, overlay: Overlay) -> None:
        self.base = base
        self.overlay = overlay
        self.path = base.path
        self.overlay_path = overlay.path
        self.size = base.size

    def readinto(self, offset: int, buf: memoryview) -> None:
        """Fill ``buf`` from byte ``offset``: held sectors from the overlay, the rest from
        the base (any offset and length, as a raw disk serves them)."""
        n = len(buf)
        check_range(offset, n, self.size, f"disk {self.path}")
        if not n:
            return
        first = offset // SECTOR
        count = (offset + n - 1) // SECTOR - first + 1
        b0, b1 = first // 8, (first + count + 7) // 8
        if self.overlay.bits.count(0, b0, b1) == b1 - b0:      # fast path: nothing held here
            self.base.readinto(offset, buf)
            return
        for start, cnt, held in self.overlay.held_runs(first, count):
            lo = max(offset, start * SECTOR)
            hi = min(offset + n, (start + cnt) * SECTOR)
            (self.overlay.read_data if held else self.base.readinto)(lo, buf[lo - offset:hi - offset])

    def write(self, offset: int, buf: memoryview) -> None:
        """Write to the overlay. Partial sectors at either end are merged with what the disk
        shows there now (read-modify-write), so -cow takes every shape a raw disk takes."""
        n = len(buf)
        check_range(offset, n, self.size, f"disk {self.path}")
        if not n:
            return
        head, tail = offset % SECTOR, (offset + n) % SECTOR
        if head or tail:
            a0 = offset - head
            a1 = offset + n + (SECTOR - tail if tail else 0)
            whole = memoryview(bytearray(a1 - a0))
            if head:
                self.readinto(a0, whole[:min(SECTOR, self.size - a0)])
            if tail:
                last = a1 - SECTOR
                self.readinto(last, whole[last - a0:min(a1, self.size) - a0])
            whole[head:head + n] = buf
            offset, buf = a0, whole
        self.overlay.write_data(offset, buf)
        self.overlay.claim(offset // SECTOR, len(buf) // SECTOR)

    def flush(self) -> None:
        self.overlay.file.flush()

    def identity(self) -> Identity:
        return self.base.identity()

    def disk(self) -> BlockBackend:
        return self.base.disk()

    def block_status(self, start: int = 0) -> list[Extent]:
        return self.overlay.block_status(start)

    # -- the changes in a session: the bitmap, then the held sectors in order --

    def changes_length(self) -> int:
        ov = self.overlay
        return ov.header.bitmap_size + ov.sectors_held() * SECTOR if ov.has_data() else 0

    def save_changes(self, fd: int, offset: int) -> int:
        """The held sectors go in the kernel (copy_file_range) from the overlay into the
        session file; a thread beside the copy reads back what landed there for the CRC-32.
        Memory: the bitmap and one 8 MiB buffer, whatever the overlay holds."""
        ov = self.overlay
        bits = bytes(ov.bits)
        check = ReadBehind(fd, offset)
        try:
            pwrite_all(fd, bits, offset)
            pos = offset + len(bits)
            check.written(pos)
            for ext in ov.block_status():
                kernel_copy(ext.fd, ext.offset, fd, pos, ext.count * SECTOR, check.written)
                pos += ext.count * SECTOR
        finally:
            crc = check.finish()
        return crc

    def load_changes(self, read: Reader, length: int, crc: int | None) -> None:
        """``read(pos, buf)`` fills ``buf`` from byte ``pos`` of the saved changes. The saved
        bitmap must fit this disk and ``length`` must be exactly what it claims; a CRC
        mismatch leaves the overlay empty."""
        ov = self.overlay
        size = ov.header.bitmap_size
        if length < size:
            raise BlockError("the saved overlay contents are truncated (bitmap)")
        bits = bytearray(size)
        if read(0, memoryview(bits)) != size:
            raise BlockError("the saved overlay contents are truncated (bitmap)")
        spare = size * 8 - ov.header.nsectors
        if spare and bits[-1] & ((1 << spare) - 1):
            raise BlockError("the saved overlay claims sectors past the end of the disk")
        held = int.from_bytes(bits, "big").bit_count()
        if length != size + held * SECTOR:
            raise BlockError(f"the saved overlay contents are {length} bytes, its bitmap needs "
                             f"{size + held * SECTOR}")
        ov.clear()
        ov.bits = bits
        running = zlib.crc32(bits)
        pos = size
        buf = memoryview(bytearray(min(COPY_STEP, max(held * SECTOR, 1))))
        try:
            for first, count in ov.runs():
                left, at = count * SECTOR, first * SECTOR
                while left:
                    n = min(left, len(buf))
                    if read(pos, buf[:n]) != n:
                        raise BlockError("the saved overlay contents are truncated")
                    running = zlib.crc32(buf[:n], running)
                    ov.write_data(at, buf[:n])
                    pos, at, left = pos + n, at + n, left - n
            if crc is not None and running != crc:
                raise BlockError("the saved overlay contents fail their checksum")
        except BaseException:
            ov.clear()
            raise
        ov._write_bitmap()

    def drop_changes(self) -> None:
        if self.overlay.has_data():
            self.overlay.clear()

    def close(self) -> None:
        try:
            if self.overlay.fd >= 0:
                self.overlay.file.flush()
        finally:
            self.overlay.close()
            self.base.close()
