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

import errno
import hashlib
import os
import re
import struct
import zlib
from dataclasses import dataclass
from typing import Callable

from molpy.files import HostFileError, copy_range, create_new, link_unnamed, open_existing, open_unnamed, pwrite_all

from .block import SECTOR, BlockError, DiskInUse, Identity, RawBackend, check_range, identity_of, lock_file

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


MAX_INSTANCES = 64               # overlays of one disk in use at once (one per running molpy)


def overlay_name(base_path: str, slot: int = 0) -> str:
    """``NAME-HASH.cow``: named after the disk, unique per absolute path; ``NAME-HASH.N.cow``
    for the Nth molpy running on the same -cow disk at the same time."""
    path = os.path.abspath(base_path)
    tag = hashlib.sha256(path.encode()).hexdigest()[:8]
    return f"{os.path.basename(path)}-{tag}{f'.{slot}' if slot else ''}.cow"


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
        return cls(path, fd, header, bytearray(header.bitmap_size))

    @classmethod
    def open(cls, path: str, writable: bool = True, *, nofollow: bool = False) -> "Overlay":
        """Open and check an overlay file (``nofollow``: refuse a symlink at ``path``, for
        the names in cow_dir that molpy manages itself)."""
        try:
            fd = open_existing(path, write=writable, what="overlay", nofollow=nofollow)
        except HostFileError as e:
            raise BlockError(f"overlay {e}") from None
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
            (self._read_overlay if held else self.base.readinto)(lo, buf[lo - offset:hi - offset])

    def _read_overlay(self, offset: int, buf: memoryview) -> None:
        done = os.preadv(self.overlay.fd, [buf], self._data + offset)
        if done < len(buf):    # a held sector must be in the file: anything else is damage
            raise OSError(5, f"overlay {self.overlay_path} is shorter than its bitmap claims")

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
            for sector_start in {a0, a1 - SECTOR}:
                if (sector_start == a0 and head) or (sector_start == a1 - SECTOR and tail):
                    end = min(sector_start + SECTOR, self.size)
                    self.readinto(sector_start, whole[sector_start - a0:end - a0])
            whole[head:head + n] = buf
            offset, buf = a0, whole
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

    # -- the overlay's contents in a session: bitmap, then the held sectors in order --

    def saved_length(self) -> int:
        """Bytes :meth:`save_to` writes."""
        return self.overlay.header.bitmap_size + self.overlay.sectors_held() * SECTOR

    def save_to(self, fd: int, offset: int) -> int:
        """Stream the contents into a session file (bounded memory); returns their CRC-32."""
        ov = self.overlay
        bits = bytes(ov.bits)
        pwrite_all(fd, bits, offset)
        crc = zlib.crc32(bits)
        pos = offset + len(bits)
        for first, count in ov.runs():
            crc = copy_range(ov.fd, self._data + first * SECTOR, fd, pos, count * SECTOR, crc)
            pos += count * SECTOR
        return crc

    def load_from(self, read: Callable[[int, memoryview], int], length: int, crc: int | None) -> None:
        """Make the overlay hold exactly what :meth:`save_to` wrote (session resume/reset).

        ``read(pos, buf)`` fills ``buf`` from byte ``pos`` of the saved contents. The saved
        bitmap must fit this disk and ``length`` must be exactly what it claims; a CRC
        mismatch leaves the overlay empty.
        """
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
        buf = memoryview(bytearray(min(COPY_CHUNK, max(held * SECTOR, 1))))
        try:
            for first, count in ov.runs():
                left, at = count * SECTOR, self._data + first * SECTOR
                while left:
                    n = min(left, len(buf))
                    if read(pos, buf[:n]) != n:
                        raise BlockError("the saved overlay contents are truncated")
                    running = zlib.crc32(buf[:n], running)
                    pwrite_all(ov.fd, buf[:n], at)
                    pos, at, left = pos + n, at + n, left - n
            if crc is not None and running != crc:
                raise BlockError("the saved overlay contents fail their checksum")
        except BaseException:
            ov.clear()
            raise
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
    """A fresh, empty overlay for ``base`` in ``cow_dir``; an old one with changes goes to .prev.

    When another molpy runs on the same -cow disk (the read-only session recipe resumed
    in several processes), this run takes the next free overlay name and says which.
    """
    if cow_dir is None:
        from molpy.files import data_dir
        cow_dir = data_dir()
    elif not os.path.isdir(cow_dir):
        raise BlockError(f"cow_dir {cow_dir} does not exist or is not a folder; create it first")
    busy: list[str] = []
    for slot in range(MAX_INSTANCES):
        path = os.path.join(cow_dir, overlay_name(base.path, slot))
        try:
            if os.path.lexists(path):
                _retire(path, say)
            backend = CowBackend(base, Overlay.create(path, base.identity()))
        except DiskInUse as e:
            busy.append(f"{os.path.basename(path)} (pid {e.pid})" if e.pid else os.path.basename(path))
            continue
        if busy:
            (say or _say)(f"molpy: disk {base.path}: another molpy uses {busy[0]}; this run's changes "
                          f"go to {path}")
        return backend
    raise BlockError(f"disk {base.path}: {MAX_INSTANCES} molpy processes already run on it with -cow")


def _retire(path: str, say) -> None:
    """Move the previous run's overlay out of the way, keeping it when it holds anything.

    Whatever is at the name (a damaged overlay, a symlink, a FIFO) is moved aside by
    rename, which never follows it; only a valid, empty overlay is removed. An overlay
    locked by a running molpy raises DiskInUse.
    """
    keep = True
    reason = "it holds changes"
    try:
        ov = Overlay.open(path, nofollow=True)
    except DiskInUse:
        raise
    except BlockError as e:
        reason = f"it could not be read ({e})"
    else:
        try:
            keep = ov.has_data() or ov.header.state == STATE_COMMITTING
            if not keep:
                os.unlink(path)
        finally:
            ov.close()
    if not keep:
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
    if h.state == STATE_COMMITTING:
        return _commit_target_problem(h.base, now)
    return "; ".join(h.base.changes(now))


def _commit_target_problem(started: Identity, now: Identity) -> str:
    """Whether ``now`` is still the disk an interrupted commit was writing into.

    The commit itself changed the disk's modification time, so only what no write of
    the commit can change is compared: the file (device and inode) and its size, and the
    time may not have gone back before the commit started.
    """
    changes = []
    if now.inode != started.inode or now.dev != started.dev:
        changes.append("it is a different file now (inode or device changed)")
    if now.size != started.size:
        changes.append(f"its size changed ({started.size} -> {now.size} bytes)")
    if now.mtime_ns < started.mtime_ns:
        changes.append("its modification time is older than the commit's start")
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
    """Write the overlay's sectors into its disk, then mark the overlay empty.

    The disk is opened first and its identity checked on that open file: a fresh commit
    needs the disk the overlay was made for (unchanged), and a commit that was
    interrupted is finished only into the very disk it started writing, whose identity
    it recorded in the overlay before it wrote anything. ``force`` overrides both.
    """
    ov = Overlay.open(path)
    try:
        h = ov.header
        resumed = h.state == STATE_COMMITTING
        runs = list(ov.runs(h.progress if resumed else 0))
        total = sum(c for _, c in runs)
        try:
            base = RawBackend(h.base.path, readonly=False)
        except BlockError as e:
            raise BlockError(f"{path}: {e}") from None
        try:
            now = base.identity()
            if resumed:
                problem = _commit_target_problem(h.base, now)
                if problem and not force:
                    raise BlockError(f"{path}: an interrupted commit into {h.base.path} cannot be finished "
                                     f"there: {problem}, so it is not the disk the commit was writing. "
                                     f"Nothing was written; use --force only if you are sure it is")
            else:
                problem = "; ".join(h.base.changes(now))
                if problem and not force:
                    raise BlockError(f"{path}: the disk {h.base.path} changed since the overlay was made: "
                                     f"{problem}. Committing would write these changes over a different "
                                     f"disk; nothing was written; use --force if you are sure")
            if now.size < h.base.size:
                raise BlockError(f"disk {h.base.path} is smaller than when the overlay was made "
                                 f"({now.size} < {h.base.size} bytes); nothing was written")
            if not resumed or problem:
                # record the disk being committed into before anything is written to it
                h.state, h.progress, h.base = STATE_COMMITTING, h.progress if resumed else 0, now
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
            h.base = base.identity()
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
