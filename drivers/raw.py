"""The raw backend: an image file or a block device, read and written in place.

It is also the protocol layer under formats: an overlay keeps its header, bitmap and
data in a child RawBackend opened ``growable`` (its size follows the file, and writes
may extend it up to a limit). Disks in use are locked with flock so that a second
molpy cannot write under the first.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import struct

from molpy.files import FileLocked, HostFileError, create_new, lock, open_existing

from .block import SECTOR, BlockError, DiskInUse, Extent, Identity, Reader, check_range

BLKGETSIZE64 = 0x80081272       # <linux/fs.h>: size of a block device in bytes


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


def lock_file(fd: int, path: str, exclusive: bool, what: str = "disk") -> None:
    """Lock the open file, or raise DiskInUse naming the holder's pid. Writers take it
    exclusive, readers shared."""
    try:
        lock(fd, exclusive)
    except FileLocked as e:
        holder = f"another molpy (pid {e.pid})" if e.pid else "another molpy"
        raise DiskInUse(f"{what} {path} is in use by {holder}; stop it first", e.pid) from None
    except OSError as e:
        raise BlockError(f"{what} {path}: cannot lock it: {e.strerror}") from None


class RawBackend:
    """An image file or a block device (or, ``growable``, a format's own file)."""

    layered = False

    def __init__(self, path: str, readonly: bool = True, lock: bool = True, *, what: str = "disk",
                 fd: int | None = None, growable: int | None = None, nofollow: bool = False) -> None:
        """Open ``path`` (or take the open ``fd``). ``growable``: the file may be written up to
        this many bytes and its size is read at each access (a format's sparse file)."""
        self.path = os.path.abspath(path)
        self.readonly = readonly
        self.what = what
        self.limit = growable
        if fd is None:
            try:
                fd = open_existing(self.path, write=not readonly, what=what, block_ok=growable is None,
                                   nofollow=nofollow)
            except HostFileError as e:
                hint = " (use -ro or -cow for a disk you may only read)" \
                    if e.errno == errno.EACCES and not readonly and what == "disk" else ""
                raise BlockError(f"{what} {e}{hint}") from None
        self.fd = fd
        try:
            st = os.fstat(self.fd)
            self.regular = stat.S_ISREG(st.st_mode)
            self.size = _device_size(self.fd) if stat.S_ISBLK(st.st_mode) else st.st_size
            if lock:
                lock_file(self.fd, self.path, exclusive=not readonly, what=what)
        except BaseException:
            os.close(self.fd)
            raise

    def _bounds(self) -> int:
        return self.limit if self.limit is not None else self.size

    def readinto(self, offset: int, buf: memoryview) -> None:
        """Fill ``buf`` from ``offset``; a disk that shrank under molpy is an I/O error."""
        if offset < 0 or offset + len(buf) > (self.size if self.limit is None else self.limit):
            check_range(offset, len(buf), self._bounds(), f"{self.what} {self.path}")
        done = os.preadv(self.fd, [buf], offset)
        while done < len(buf):
            n = os.preadv(self.fd, [buf[done:]], offset + done)
            if n == 0:
                if self.limit is not None:
                    raise OSError(errno.EIO, f"{self.what} {self.path} ends at byte {offset + done}, "
                                             f"before the data it should hold")
                raise OSError(errno.EIO, f"the disk ends at byte {offset + done}, it was {self.size} "
                                         f"bytes when molpy opened it (it shrank)")
            done += n

    def write(self, offset: int, buf: memoryview) -> None:
        """Write in place, unless the file was deleted or shrank under molpy (then EIO:
        the data would be lost with the deleted file, or land beside a hole)."""
        if self.readonly:
            raise BlockError(f"{self.what} {self.path} is read-only")
        check_range(offset, len(buf), self._bounds(), f"{self.what} {self.path}")
        if self.regular and self.limit is None:
            st = os.fstat(self.fd)
            if st.st_nlink == 0:
                raise OSError(errno.EIO, "the disk file was deleted while in use")
            if st.st_size < self.size:
                raise OSError(errno.EIO, f"the disk shrank to {st.st_size} bytes while in use "
                                         f"(it was {self.size})")
        done = 0
        while done < len(buf):
            done += os.pwritev(self.fd, [buf[done:]], offset + done)

    def truncate(self, length: int) -> None:
        """Cut a growable file back to ``length`` bytes (its holes cost nothing)."""
        os.ftruncate(self.fd, length)

    def flush(self) -> None:
        if not self.readonly:
            os.fsync(self.fd)

    def identity(self) -> Identity:
        st = os.fstat(self.fd)
        return Identity(path=self.path, size=self.size, inode=st.st_ino, mtime_ns=st.st_mtime_ns,
                        dev=st.st_dev)

    def disk(self) -> "RawBackend":
        return self

    # -- a plain disk holds no changes above itself --

    def block_status(self, start: int = 0) -> list[Extent]:
        return []

    def changes_length(self) -> int:
        return 0

    def save_changes(self, fd: int, offset: int) -> int:
        return 0

    def load_changes(self, read: Reader, length: int, crc: int | None) -> None:
        if length:
            raise BlockError(f"disk {self.path} cannot hold the saved changes: attach it with -cow")

    def drop_changes(self) -> None:
        pass

    def close(self) -> None:
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            try:
                if not self.readonly:
                    os.fsync(fd)
            finally:
                os.close(fd)


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
