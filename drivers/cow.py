"""Copy-on-write overlays: the guest writes, the disk never changes.

An overlay is one sparse file in ``cow_dir`` (format in docs/formats.md): a 4 KiB
header naming the base disk and its identity, a bitmap with one bit per 512-byte
sector, and the data of sector ``i`` at ``data_offset + 512 * i``. Reads of sectors
the overlay does not hold go to the base, which is opened read-only.

Order of writes, so that a killed run never leaves an overlay that claims data it
does not hold: the data is written first, then the bitmap bytes that claim it.
Commit is idempotent (copying overlay sectors onto the base twice gives the same
disk), records its progress in the header, and marks the overlay empty only after
the base is fsynced: killed at any point and run again, it ends with base + overlay.
"""

from __future__ import annotations

import hashlib
import os
import re
import struct
import zlib
from dataclasses import dataclass
from typing import Callable

from .block import SECTOR, BlockError, Identity, RawBackend, identity_of, lock_file

MAGIC = b"MOLPYCOW"
VERSION = 1
HEADER_SIZE = 4096
ALIGN = 4096
STATE_READY = 0          # in use or idle; the bitmap says what it holds
STATE_COMMITTING = 1     # a commit started and has not finished: run it again
_FIXED = struct.Struct(">8sIIQQQQQQQQIIQH")
MAX_PATH = HEADER_SIZE - _FIXED.size - 4
COPY_CHUNK = 8 << 20              # bytes copied per step of a commit
PROGRESS_EVERY = 64 << 20         # header progress (after an fsync of the base) this often


def overlay_name(base_path: str) -> str:
    """``NAME-HASH.cow``: named after the disk, unique per absolute path."""
    path = os.path.abspath(base_path)
    tag = hashlib.sha256(path.encode()).hexdigest()[:8]
    return f"{os.path.basename(path)}-{tag}.cow"


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
    """An open overlay file: header, bitmap and data, locked while open."""

    def __init__(self, path: str, fd: int, header: Header, bits) -> None:
        self.path = path
        self.fd = fd
        self.header = header
        self.bits = bits               # bytearray, MSB first: sector i is bit 7 - i % 8 of byte i // 8

    # -- open/create --

    @classmethod
    def create(cls, path: str, base: Identity) -> "Overlay":
        """A new empty overlay at ``path`` (which must not exist)."""
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        except OSError as e:
            raise BlockError(f"overlay {path}: cannot create it: {e.strerror}") from None
        try:
            lock_file(fd, path, exclusive=True, what="overlay")
            header = Header(nsectors=(base.size + SECTOR - 1) // SECTOR, base=base)
            os.ftruncate(fd, header.data_offset)
            os.pwrite(fd, header.pack(), 0)
        except BaseException as e:
            os.close(fd)
            os.unlink(path)
            if isinstance(e, OSError):
                raise BlockError(f"overlay {path}: cannot write it: {e.strerror}") from None
            raise
        return cls(path, fd, header, bytearray(header.bitmap_size))

    @classmethod
    def open(cls, path: str, writable: bool = True) -> "Overlay":
        try:
            fd = os.open(path, (os.O_RDWR if writable else os.O_RDONLY) | os.O_CLOEXEC)
        except OSError as e:
            raise BlockError(f"overlay {path}: cannot open it: {e.strerror}") from None
        try:
            lock_file(fd, path, exclusive=writable, what="overlay")
            header = Header.unpack(os.pread(fd, HEADER_SIZE, 0), path)
            raw = os.pread(fd, header.bitmap_size, header.bitmap_offset)
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
                if os.fstat(fd).st_size < need:
                    raise BlockError(f"{path}: the overlay is truncated (it holds sector {last}, which "
                                     f"ends at byte {need}, but the file has {os.fstat(fd).st_size})")
        except BaseException:
            os.close(fd)
            raise
        return cls(path, fd, header, bits)

    # -- bitmap --

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
        os.pwrite(self.fd, new, self.header.bitmap_offset + b0)

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

    # -- header --

    def write_header(self) -> None:
        os.pwrite(self.fd, self.header.pack(), 0)

    def clear(self) -> None:
        """Drop every held sector: the bitmap first (fsynced), then the data."""
        self.bits[:] = bytes(len(self.bits))
        os.pwrite(self.fd, self.bits, self.header.bitmap_offset)
        os.fsync(self.fd)
        os.ftruncate(self.fd, self.header.data_offset)

    def close(self) -> None:
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            os.close(fd)


class CowBackend:
    """A block backend whose writes go to an overlay and whose misses go to ``base``."""

    def __init__(self, base: RawBackend, overlay: Overlay) -> None:
        self.base = base
        self.overlay = overlay
        self.path = base.path
        self.overlay_path = overlay.path
        self.size = base.size
        self.readonly = False
        self._data = overlay.header.data_offset

    def readinto(self, offset: int, buf: memoryview) -> None:
        first = offset // SECTOR
        count = (len(buf) + SECTOR - 1) // SECTOR
        b0, b1 = first // 8, (first + count + 7) // 8
        if self.overlay.bits.count(0, b0, b1) == b1 - b0:      # fast path: nothing held here
            self.base.readinto(offset, buf)
            return
        runs = self.overlay.held_runs(first, count)
        if len(runs) == 1:
            (self._read_overlay if runs[0][2] else self.base.readinto)(offset, buf)
            return
        for start, count, held in runs:
            a = (start - first) * SECTOR
            part = buf[a:a + count * SECTOR]
            (self._read_overlay if held else self.base.readinto)(start * SECTOR, part)

    def _read_overlay(self, offset: int, buf: memoryview) -> None:
        done = os.preadv(self.overlay.fd, [buf], self._data + offset)
        if done < len(buf):    # a held sector must be in the file: anything else is damage
            raise OSError(5, f"overlay {self.overlay_path} is shorter than its bitmap claims")

    def write(self, offset: int, buf: memoryview) -> None:
        if offset % SECTOR or len(buf) % SECTOR:
            raise BlockError("cow overlays take whole sectors")
        done = 0
        while done < len(buf):
            done += os.pwritev(self.overlay.fd, [buf[done:]], self._data + offset + done)
        self.overlay.claim(offset // SECTOR, len(buf) // SECTOR)

    def flush(self) -> None:
        os.fsync(self.overlay.fd)

    def identity(self) -> Identity:
        return self.base.identity()

    def has_data(self) -> bool:
        return self.overlay.has_data()

    def clear(self) -> None:
        self.overlay.clear()

    def export_overlay(self) -> bytes:
        """The overlay's contents as one blob: bitmap, then the held sectors in order."""
        ov = self.overlay
        parts = [bytes(ov.bits)]
        for first, count in ov.runs():
            buf = bytearray(count * SECTOR)
            self._read_overlay(first * SECTOR, memoryview(buf))
            parts.append(bytes(buf))
        return b"".join(parts)

    def import_overlay(self, blob: bytes) -> None:
        """Make the overlay hold exactly what ``export_overlay`` gave (session resume/reset)."""
        ov = self.overlay
        size = ov.header.bitmap_size
        if len(blob) < size:
            raise BlockError("saved overlay contents are truncated")
        bits = bytearray(blob[:size])
        ov.clear()
        ov.bits = bits
        pos = size
        view = memoryview(blob)
        for first, count in ov.runs():
            n = count * SECTOR
            if pos + n > len(blob):
                ov.clear()
                raise BlockError("saved overlay contents are truncated")
            os.pwrite(self.overlay.fd, view[pos:pos + n], self._data + first * SECTOR)
            pos += n
        os.pwrite(ov.fd, bits, ov.header.bitmap_offset)

    def close(self) -> None:
        try:
            if self.overlay.fd >= 0:
                os.fsync(self.overlay.fd)
        finally:
            self.overlay.close()
            self.base.close()


# -- the overlay's life: one per run, the previous one kept aside when it holds changes --

def open_overlay_for(base: RawBackend, cow_dir: str | None, *, say: Callable[[str], None] | None = None) -> CowBackend:
    """A fresh, empty overlay for ``base`` in ``cow_dir``; an old one with changes goes to .prev."""
    if cow_dir is None:
        from molpy.config import data_dir
        cow_dir = data_dir()
    try:
        os.makedirs(cow_dir, exist_ok=True)
    except OSError as e:
        raise BlockError(f"cow_dir {cow_dir}: cannot create it: {e.strerror}") from None
    path = os.path.join(cow_dir, overlay_name(base.path))
    if os.path.lexists(path):
        _retire(path, say)
    return CowBackend(base, Overlay.create(path, base.identity()))


def _retire(path: str, say) -> None:
    """Move the previous run's overlay out of the way, keeping it when it holds anything."""
    keep = True
    reason = "it holds changes"
    try:
        ov = Overlay.open(path)
    except BlockError as e:
        if "in use by" in str(e):
            raise
        reason = f"it could not be read ({e})"
    else:
        try:
            keep = ov.has_data() or ov.header.state == STATE_COMMITTING
        finally:
            ov.close()
    if not keep:
        os.unlink(path)
        return
    prev = path + ".prev"
    replaced = " (replacing the older one)" if os.path.lexists(prev) else ""
    try:
        os.replace(path, prev)
    except OSError as e:
        raise BlockError(f"overlay {path}: cannot move it aside: {e.strerror}") from None
    (say or _say)(f"molpy: the previous run's overlay {os.path.basename(path)}: {reason}; "
                  f"kept as {prev}{replaced} ('molpy cow commit' or 'molpy cow discard' it)")


def _say(text: str) -> None:
    import sys
    print(text, file=sys.stderr)


# -- commit, discard, info --

@dataclass
class OverlayInfo:
    path: str
    base: Identity
    sectors: int
    state: int
    progress: int
    base_matches: bool
    base_problem: str
    file_bytes: int


def base_problem(h: Header) -> str:
    """Why the base disk no longer matches the overlay ('' when it does)."""
    try:
        now = identity_of(h.base.path)
    except OSError as e:
        return f"the disk {h.base.path} cannot be read: {e.strerror}"
    changes = []
    if now.size != h.base.size:
        changes.append(f"its size changed ({h.base.size} -> {now.size} bytes)")
    if now.inode != h.base.inode or now.dev != h.base.dev:
        changes.append("it is a different file now")
    if now.mtime_ns != h.base.mtime_ns:
        changes.append("it was modified after the overlay was made")
    return "; ".join(changes)


def overlay_info(path: str) -> OverlayInfo:
    ov = Overlay.open(path, writable=False)
    try:
        h = ov.header
        problem = base_problem(h)
        return OverlayInfo(path=path, base=h.base, sectors=ov.sectors_held(), state=h.state,
                           progress=h.progress, base_matches=not problem, base_problem=problem,
                           file_bytes=os.fstat(ov.fd).st_blocks * 512)
    finally:
        ov.close()


@dataclass
class CommitResult:
    sectors: int
    resumed: bool
    base: str


def _copy(src: int, dst: int, src_off: int, dst_off: int, n: int) -> None:
    """Copy bytes between files, in the kernel when it can (copy_file_range)."""
    while n:
        try:
            done = os.copy_file_range(src, dst, n, src_off, dst_off)
        except OSError:
            done = 0
        if done <= 0:
            data = os.pread(src, min(n, COPY_CHUNK), src_off)
            if not data:
                data = bytes(min(n, COPY_CHUNK))     # sparse hole past the end: zeros
            done = os.pwrite(dst, data, dst_off)
        src_off += done
        dst_off += done
        n -= done


def commit(path: str, *, force: bool = False, progress: Callable[[int, int], None] | None = None,
           ) -> CommitResult:
    """Write the overlay's sectors into its disk, then mark the overlay empty."""
    ov = Overlay.open(path)
    try:
        h = ov.header
        resumed = h.state == STATE_COMMITTING
        if not resumed:
            problem = base_problem(h)
            if problem and not force:
                raise BlockError(f"{path}: {problem}. Committing would write these changes over a "
                                 f"different disk; use --force if you are sure")
        runs = list(ov.runs(h.progress if resumed else 0))
        total = sum(c for _, c in runs)
        base = RawBackend(h.base.path, readonly=False)
        try:
            if base.size < h.base.size:
                raise BlockError(f"disk {h.base.path} is smaller than when the overlay was made")
            if not resumed:
                h.state, h.progress = STATE_COMMITTING, 0
                ov.write_header()
                os.fsync(ov.fd)
            done = since_sync = 0
            if progress:
                progress(0, total)
            for first, count in runs:
                sector = first
                while sector < first + count:
                    n = min(first + count - sector, COPY_CHUNK // SECTOR)
                    _copy(ov.fd, base.fd, h.data_offset + sector * SECTOR, sector * SECTOR, n * SECTOR)
                    sector += n
                    done += n
                    since_sync += n * SECTOR
                    if since_sync >= PROGRESS_EVERY:
                        os.fsync(base.fd)
                        h.progress = sector
                        ov.write_header()
                        since_sync = 0
                    if progress:
                        progress(done, total)
            os.fsync(base.fd)
            # The base now holds everything. The overlay's data stays in its file (the next
            # run replaces an empty overlay anyway), so a power failure before the header
            # below is on disk only means a re-run copies the same sectors again.
            ov.bits[:] = bytes(len(ov.bits))
            os.pwrite(ov.fd, ov.bits, h.bitmap_offset)
            h.state, h.progress = STATE_READY, 0
            h.base = identity_of(h.base.path)
            ov.write_header()
        finally:
            base.close()
        return CommitResult(sectors=total, resumed=resumed, base=h.base.path)
    finally:
        ov.close()


def discard(path: str) -> tuple[int, str]:
    """Drop an overlay: (sectors it held, its disk). The file is removed."""
    ov = Overlay.open(path)
    try:
        if ov.header.state == STATE_COMMITTING:
            raise BlockError(f"{path}: a commit of this overlay was interrupted; run "
                             f"'molpy cow commit {path}' to finish it (discarding now would leave "
                             f"the disk half-committed)")
        held = ov.sectors_held()
        os.unlink(path)
        return held, ov.header.base.path
    finally:
        ov.close()
