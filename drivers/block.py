"""Block backends: one small interface for every kind of disk (QEMU's driver-table idea).

A backend reads into and writes from buffers (memoryviews of guest RAM, so no
copies), flushes, and knows its size and whether it is read-only. ``RawBackend``
serves image files and real block devices; ``CowBackend`` (drivers/cow.py) stacks
an overlay on any backend. Disks in use are locked with fcntl so that a second
molpy cannot write under the first.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import stat
import struct
from dataclasses import dataclass

from molpy.files import HostFileError, create_new, open_existing

SECTOR = 512
BLKGETSIZE64 = 0x80081272       # <linux/fs.h>: size of a block device in bytes


class BlockError(Exception):
    """A disk that cannot be used as asked; the message names it and says why."""


class DiskInUse(BlockError):
    """A disk or overlay locked by another molpy (``pid`` when known)."""

    def __init__(self, message: str, pid: int | None) -> None:
        super().__init__(message)
        self.pid = pid


@dataclass(frozen=True)
class Identity:
    """What a disk-sync marker and a cow overlay remember about a disk."""

    path: str
    size: int
    inode: int
    mtime_ns: int
    dev: int = 0

    def changes(self, now: "Identity") -> list[str]:
        """How the disk ``now`` differs from this recorded identity (empty: the same disk,
        unchanged). The one comparison every marker and overlay uses."""
        changes = []
        if now.size != self.size:
            changes.append(f"its size changed ({self.size} -> {now.size} bytes)")
        if now.inode != self.inode or now.dev != self.dev:
            changes.append("it is a different file now (inode or device changed)")
        if now.mtime_ns != self.mtime_ns:
            changes.append("it was modified since")
        return changes


def identity_of(path: str) -> Identity:
    st = os.stat(path)
    return Identity(path=os.path.abspath(path), size=_size_of_path(path, st), inode=st.st_ino,
                    mtime_ns=st.st_mtime_ns, dev=st.st_dev)


def _size_of_path(path: str, st: os.stat_result) -> int:
    if stat.S_ISBLK(st.st_mode):
        fd = os.open(path, os.O_RDONLY)
        try:
            return _device_size(fd)
        finally:
            os.close(fd)
    return st.st_size


def _device_size(fd: int) -> int:
    """A block device's size: the BLKGETSIZE64 ioctl, else seeking to its end."""
    try:
        buf = fcntl.ioctl(fd, BLKGETSIZE64, b"\0" * 8)
        return struct.unpack("Q", buf)[0]
    except OSError:
        return os.lseek(fd, 0, os.SEEK_END)


def lock_holder(fd: int) -> int | None:
    """The pid holding a flock on the file of ``fd``, from /proc/locks (None if unknown)."""
    st = os.fstat(fd)
    key = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    try:
        with open("/proc/locks") as f:
            for line in f:
                fields = line.split()
                if "FLOCK" in fields and key in fields:
                    pid = int(fields[fields.index(key) - 1])
                    if pid > 0 and pid != os.getpid():
                        return pid
    except (OSError, ValueError, IndexError):
        pass
    return None


def lock_file(fd: int, path: str, exclusive: bool, what: str = "disk") -> None:
    """Lock the open file (flock: tied to this open file, not to the process), or raise
    BlockError naming the holder's pid. Writers take it exclusive, readers shared."""
    try:
        fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
    except OSError as e:
        if e.errno not in (errno.EWOULDBLOCK, errno.EACCES):
            raise BlockError(f"{what} {path}: cannot lock it: {e.strerror}") from None
        pid = lock_holder(fd)
        holder = f"another molpy (pid {pid})" if pid else "another molpy"
        raise DiskInUse(f"{what} {path} is in use by {holder}; stop it first", pid) from None


def check_range(offset: int, length: int, size: int, what: str) -> None:
    """Every backend refuses a negative or out-of-range offset, whoever its caller is."""
    if offset < 0 or length < 0 or offset + length > size:
        raise BlockError(f"{what}: bytes {offset}..{offset + length} are outside the disk "
                         f"(0..{size})")


class RawBackend:
    """An image file or a block device, read and written in place."""

    def __init__(self, path: str, readonly: bool = True, lock: bool = True) -> None:
        self.path = os.path.abspath(path)
        self.readonly = readonly
        try:
            self.fd = open_existing(self.path, write=not readonly, what="disk", block_ok=True)
        except HostFileError as e:
            hint = " (use -ro or -cow for a disk you may only read)" if e.errno == errno.EACCES and not readonly else ""
            raise BlockError(f"disk {e}{hint}") from None
        try:
            st = os.fstat(self.fd)
            self.regular = stat.S_ISREG(st.st_mode)
            self.size = _device_size(self.fd) if stat.S_ISBLK(st.st_mode) else st.st_size
            if lock:
                lock_file(self.fd, self.path, exclusive=not readonly)
        except BaseException:
            os.close(self.fd)
            raise

    def readinto(self, offset: int, buf: memoryview) -> None:
        """Fill ``buf`` from ``offset``; a disk that shrank under molpy is an I/O error."""
        check_range(offset, len(buf), self.size, f"disk {self.path}")
        done = os.preadv(self.fd, [buf], offset)
        while done < len(buf):
            n = os.preadv(self.fd, [buf[done:]], offset + done)
            if n == 0:
                raise OSError(errno.EIO, f"the disk ends at byte {offset + done}, it was {self.size} "
                                         f"bytes when molpy opened it (it shrank)")
            done += n

    def write(self, offset: int, buf: memoryview) -> None:
        """Write in place, unless the file was deleted or shrank under molpy (then EIO:
        the data would be lost with the deleted file, or land beside a hole)."""
        if self.readonly:
            raise BlockError(f"disk {self.path} is read-only")
        check_range(offset, len(buf), self.size, f"disk {self.path}")
        if self.regular:
            st = os.fstat(self.fd)
            if st.st_nlink == 0:
                raise OSError(errno.EIO, "the disk file was deleted while in use")
            if st.st_size < self.size:
                raise OSError(errno.EIO, f"the disk shrank to {st.st_size} bytes while in use "
                                         f"(it was {self.size})")
        done = 0
        while done < len(buf):
            done += os.pwritev(self.fd, [buf[done:]], offset + done)

    def flush(self) -> None:
        if not self.readonly:
            os.fsync(self.fd)

    def identity(self) -> Identity:
        st = os.fstat(self.fd)
        return Identity(path=self.path, size=self.size, inode=st.st_ino, mtime_ns=st.st_mtime_ns,
                        dev=st.st_dev)

    def close(self) -> None:
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            try:
                if not self.readonly:
                    os.fsync(fd)
            finally:
                os.close(fd)


def open_blkdev(spec, cow_dir: str | None, *, say=None):
    """The backend a ``blkdev`` spec asks for: raw, or a cow overlay on a read-only raw."""
    if not os.path.exists(spec.path):
        raise BlockError(f"disk {spec.path} does not exist (blkdev at {spec.source or 'the config'}; "
                         f"make one with 'molpy img create {spec.path} SIZE')")
    if spec.cow:
        from .cow import open_overlay_for

        base = RawBackend(spec.path, readonly=True)
        try:
            return open_overlay_for(base, cow_dir, say=say)
        except BaseException:
            base.close()
            raise
    return RawBackend(spec.path, readonly=spec.readonly)


def content_digest(path: str, chunk: int = 1 << 20) -> str:
    """SHA-256 of a disk's contents (sessions' deep disk-sync check)."""
    h = hashlib.sha256()
    buf = bytearray(chunk)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while True:
            n = f.readinto(buf)
            if not n:
                break
            h.update(view[:n])
    return h.hexdigest()


def create_image(path: str, size: int) -> None:
    """A sparse raw image of ``size`` bytes (a multiple of 512); never overwrites."""
    if size <= 0 or size % SECTOR:
        raise BlockError(f"{path}: size must be a positive multiple of {SECTOR} bytes")
    if os.path.lexists(path):
        raise BlockError(f"{path} already exists; molpy will not overwrite it")
    try:
        fd = create_new(path, what="disk image")
    except HostFileError as e:
        raise BlockError(str(e)) from None
    try:
        os.ftruncate(fd, size)
        os.fsync(fd)
    except OSError as e:
        os.close(fd)
        os.unlink(path)
        raise BlockError(f"{path}: cannot make it {size} bytes: {e.strerror}") from None
    os.close(fd)
