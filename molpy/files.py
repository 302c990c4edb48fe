"""Host files, opened and created so that nothing planted at a name can redirect molpy.

Every file molpy creates goes through here: a new file is made with
O_CREAT|O_EXCL|O_NOFOLLOW (a symlink, FIFO or directory already at the name makes the
creation fail instead of writing elsewhere), or as an unnamed O_TMPFILE that is linked
into place only when it is complete. Files molpy reads are opened non-blocking (a FIFO
planted at a session's name cannot hang the open) and refused unless they are of the
kind expected. This module imports nothing of molpy, so drivers and the session layer
can both use it.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import secrets
import stat
import threading
import zlib
from dataclasses import dataclass
from typing import Callable

from .errors import HostError

_libc = ctypes.CDLL(None, use_errno=True)
_AT_FDCWD = -100
_AT_SYMLINK_FOLLOW = 0x400
_O_TMPFILE = getattr(os, "O_TMPFILE", 0o20200000)
COPY_STEP = 8 << 20               # file-to-file copies go through a buffer of this size at most


class HostFileError(HostError, OSError):
    """A host file that molpy will not use; ``str()`` is one line naming the file."""

    def __init__(self, path: str, reason: str, err: int = errno.EINVAL) -> None:
        super().__init__(err, reason, path)
        self.path = path
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


class FileLocked(HostError, OSError):
    """Another process holds a conflicting flock on the file (``pid`` when /proc/locks says)."""

    def __init__(self, pid: int | None) -> None:
        super().__init__(errno.EWOULDBLOCK, "locked")
        self.pid = pid


def lock(fd: int, exclusive: bool) -> None:
    """flock the open file without waiting (tied to this open file, not to the process):
    FileLocked naming the holder when another process has it; OSError for anything else."""
    try:
        fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
    except OSError as e:
        if e.errno in (errno.EWOULDBLOCK, errno.EACCES):
            raise FileLocked(lock_holder(fd)) from None
        raise


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


@dataclass(frozen=True)
class InUse:
    """Another process holds a flock on a file: ``pid`` (None when /proc/locks does not
    say) and whether that holder may write it (an exclusive lock)."""

    pid: int | None
    writing: bool

    @property
    def who(self) -> str:
        return f"another molpy (pid {self.pid})" if self.pid else "another molpy"

    def __str__(self) -> str:
        return f"{self.who}, which {'writes to it' if self.writing else 'reads it'}"

    def line(self) -> str:
        """For an inspection's ``in use:`` line."""
        if self.writing:
            return f"by {self}; what it holds may change while that molpy runs"
        return f"by {self} (read-only: it does not change it)"


def in_use(fd: int) -> InUse | None:
    """Whether another process holds a flock on the file of ``fd`` (None: nobody does, or
    /proc/locks cannot be read).

    For read-only inspection (``cow info``, ``img info``, ``session info``): it only reads
    /proc/locks and takes no lock itself, so it never keeps a starting molpy from its file.
    """
    st = os.fstat(fd)
    key = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    found: InUse | None = None
    try:
        with open("/proc/locks") as f:
            for line in f:
                fields = line.split()
                if "FLOCK" not in fields or key not in fields or "->" in fields:   # (-> : a waiter)
                    continue
                at = fields.index(key)
                pid = int(fields[at - 1])
                if pid == os.getpid():
                    continue
                writing = fields[at - 2] == "WRITE"
                if found is None or writing and not found.writing:
                    found = InUse(pid if pid > 0 else None, writing)
    except (OSError, ValueError, IndexError):
        return None
    return found


def data_dir() -> str:
    """molpy's own folder: demo disk, default session, log ($MOLPY_HOME overrides). Created
    0700; a symbolic link at its name is not followed (molpy would write where it points)."""
    home = os.environ.get("MOLPY_HOME")
    if not home:
        xdg = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
        home = os.path.join(xdg, "molpy")
    home = os.path.abspath(home)
    parent = os.path.dirname(home)
    if not os.path.isdir(parent):
        os.makedirs(parent, mode=0o700, exist_ok=True)
    return own_folder(parent, os.path.basename(home), what="molpy's data folder")


def own_folder(parent: str, name: str, *, what: str = "molpy's folder") -> str:
    """``parent/name``, a folder of molpy's own: created 0700 when missing, and refused
    (HostFileError, one line) when a symbolic link, another kind of file, or a folder of
    another user is at the name, so that nothing planted there can redirect molpy's files
    (or its pruning) into someone else's folder."""
    path = os.path.join(parent, name)
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    except OSError as e:
        raise HostFileError(path, f"cannot create {what}: {e.strerror}", e.errno) from None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.ENOTDIR):
            try:
                mode = os.lstat(path).st_mode
                kind = "a regular file" if stat.S_ISREG(mode) else kind_of(mode)
            except OSError:
                kind = "not a folder"
            raise HostFileError(path, f"{what} is {kind}; molpy does not follow it (remove it: "
                                      f"molpy makes the folder itself)", errno.ELOOP) from None
        raise HostFileError(path, f"cannot open {what}: {e.strerror}", e.errno) from None
    try:
        st = os.fstat(fd)
    finally:
        os.close(fd)
    if st.st_uid != os.getuid():
        raise HostFileError(path, f"{what} belongs to another user (uid {st.st_uid}); molpy uses only its own")
    return path


_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
          (stat.S_ISLNK, "a symbolic link"))


def kind_of(mode: int) -> str:
    """What a file that is not a regular one is, for messages ("a FIFO", "a directory" ...)."""
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def open_existing(path: str, *, write: bool = False, what: str = "file", block_ok: bool = False,
                  nofollow: bool = False) -> int:
    """Open a file molpy reads (or updates in place), refusing every other kind of file.

    The open is non-blocking, so a FIFO at ``path`` is reported instead of hanging; the
    descriptor is returned in blocking mode. ``block_ok`` also accepts block devices
    (disks). ``nofollow`` refuses a symbolic link at ``path`` itself.
    """
    flags = (os.O_RDWR if write else os.O_RDONLY) | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY
    if nofollow:
        flags |= os.O_NOFOLLOW
    try:
        fd = os.open(path, flags)
    except OSError as e:
        if e.errno == errno.ELOOP and nofollow:
            raise HostFileError(path, f"{what} is a symbolic link; molpy does not follow it here",
                                errno.ELOOP) from None
        if e.errno == errno.EISDIR:
            raise HostFileError(path, f"{what} is a directory", errno.EISDIR) from None
        if e.errno == errno.ENXIO:      # a FIFO with no writer, opened for writing
            raise HostFileError(path, f"{what} is a FIFO", errno.ENXIO) from None
        raise HostFileError(path, f"cannot open it: {e.strerror}", e.errno) from None
    try:
        mode = os.fstat(fd).st_mode
        if not (stat.S_ISREG(mode) or (block_ok and stat.S_ISBLK(mode))):
            raise HostFileError(path, f"{what} is {kind_of(mode)}"
                                + ("" if block_ok else "; molpy needs a regular file"))
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def create_new(path: str, *, mode: int = 0o644, what: str = "file") -> int:
    """Create ``path``, which must not exist in any form (not even a dangling symlink)."""
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
                       | os.O_NONBLOCK | os.O_NOCTTY, mode)
    except FileExistsError:
        raise HostFileError(path, f"cannot create the {what}: something is already there",
                            errno.EEXIST) from None
    except OSError as e:
        raise HostFileError(path, f"cannot create the {what}: {e.strerror}", e.errno) from None


def open_append(path: str, *, what: str = "log") -> int:
    """Open a log for appending, creating it if needed; never through a symlink or a FIFO."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK
                     | os.O_CLOEXEC | os.O_NOCTTY, 0o644)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise HostFileError(path, f"{what} is a symbolic link; molpy does not write through it",
                                errno.ELOOP) from None
        raise HostFileError(path, f"cannot open the {what}: {e.strerror}", e.errno) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise HostFileError(path, f"{what} is {kind_of(st.st_mode)}")
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_unnamed(folder: str, *, what: str = "file", mode: int = 0o644) -> int | None:
    """An unnamed file in ``folder`` (O_TMPFILE), or None where the file system has none."""
    try:
        return os.open(folder, _O_TMPFILE | os.O_RDWR | os.O_CLOEXEC, mode)
    except OSError as e:
        if e.errno in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
            return None
        raise HostFileError(folder, f"cannot create the {what} here: {e.strerror}", e.errno) from None


def link_unnamed(fd: int, path: str) -> bool:
    """Give an unnamed file its name; False when something is already there (never replaced)."""
    if _libc.linkat(_AT_FDCWD, f"/proc/self/fd/{fd}".encode(), _AT_FDCWD, os.fsencode(path),
                    _AT_SYMLINK_FOLLOW) == 0:
        return True
    err = ctypes.get_errno()
    if err == errno.EEXIST:
        return False
    raise HostFileError(path, f"cannot create it: {os.strerror(err)}", err)


class NewFile:
    """A file written in full before it appears under its name (atomic replace).

    The data goes to an unnamed O_TMPFILE in the target's folder; ``publish`` links it
    under a fresh random name (linkat: fails if anything is there) and renames that over
    the target, then fsyncs the folder. A process that dies before ``publish`` leaves
    nothing behind; only a SIGKILL between the link and the rename (microseconds) leaves
    a ``.NAME.tmp.PID.RANDOM`` file, which :func:`remove_stale` takes away later. Where the
    file system has no O_TMPFILE, the file is created under such a random name with
    O_EXCL|O_NOFOLLOW and removed on failure.
    """

    def __init__(self, path: str, *, mode: int = 0o644, what: str = "file") -> None:
        self.path = os.path.abspath(path)
        self.folder = os.path.dirname(self.path)
        self.what = what
        self._named: str | None = None
        fd = open_unnamed(self.folder, what=what, mode=mode)
        if fd is None:
            self._named = self._temp_name()
            fd = create_new(self._named, mode=mode, what=what)
            os.set_blocking(fd, True)
        self.fd = fd

    def _temp_name(self) -> str:
        return os.path.join(self.folder, f".{os.path.basename(self.path)}.tmp.{os.getpid()}."
                                         f"{secrets.token_hex(6)}")

    def publish(self, durable: bool = True) -> None:
        """Put the (already fsynced) file at its name, replacing what was there.
        ``durable=False`` (a cache that can be rebuilt) skips the folder's fsync."""
        if self._named is None:
            for _ in range(8):
                name = self._temp_name()
                if link_unnamed(self.fd, name):
                    self._named = name
                    break
            else:
                raise HostFileError(self.path, f"cannot write the {self.what}: no free temporary name")
        try:
            os.replace(self._named, self.path)
        except OSError as e:
            self.discard()
            raise HostFileError(self.path, f"cannot write the {self.what}: {e.strerror}", e.errno) from None
        self._named = None
        if durable:
            fsync_folder(self.folder)

    def discard(self) -> None:
        """Forget the file: nothing is left at any name."""
        if self._named is not None:
            try:
                os.unlink(self._named)
            except OSError:
                pass
            self._named = None

    def close(self) -> None:
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            os.close(fd)


def fsync_folder(folder: str) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_stale(folder: str, name: str) -> None:
    """Remove the temporaries that saves of ``name`` left when their process was killed.

    Only names molpy makes (``.NAME.tmp.PID`` and ``.NAME.tmp.PID.RANDOM``) whose process
    is gone; a symlink is removed as a link (unlink never follows it), a directory is left.
    """
    prefix = f".{name}.tmp."
    try:
        entries = [e for e in os.listdir(folder) if e.startswith(prefix)]
    except OSError:
        return
    for entry in entries:
        pid = entry[len(prefix):].split(".", 1)[0]
        if not pid.isdigit():
            continue
        if int(pid) != os.getpid():
            try:
                os.kill(int(pid), 0)
                continue                               # still running: another molpy is saving
            except ProcessLookupError:
                pass
            except OSError:
                continue
        full = os.path.join(folder, entry)
        try:
            if stat.S_ISDIR(os.lstat(full).st_mode):
                continue
            os.unlink(full)
        except OSError:
            pass


def read_limited(path: str, limit: int, *, what: str = "file") -> bytes:
    """The whole of a regular file of at most ``limit`` bytes (no endless or special files)."""
    fd = open_existing(path, what=what)
    try:
        size = os.fstat(fd).st_size
        if size > limit:
            raise HostFileError(path, f"{what} is {size} bytes; molpy reads at most {limit}")
        data = os.pread(fd, limit + 1, 0)
        if len(data) > limit:
            raise HostFileError(path, f"{what} grew past {limit} bytes while being read")
        return data
    finally:
        os.close(fd)


KERNEL_STEP = 64 << 20            # in-kernel copies go in steps of this size (the checksum follows)


def kernel_copy(src: int, src_off: int, dst: int, dst_off: int, length: int,
                done: Callable[[int], None] | None = None) -> None:
    """Copy ``length`` bytes between files in the kernel (copy_file_range: no user buffer,
    a reflink where the file system has them), else through a bounded buffer. ``done(pos)``
    is told the destination offset reached after each step. A source that ends early is an
    error (EIO), never a short copy."""
    in_kernel = True
    buf: memoryview | None = None
    while length:
        n = 0
        if in_kernel:
            try:
                n = os.copy_file_range(src, dst, min(length, KERNEL_STEP), src_off, dst_off)
            except OSError as e:
                if e.errno not in (errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EBADF):
                    raise
                in_kernel = False
            else:
                if n == 0:
                    raise OSError(errno.EIO, f"the data ends {length} bytes early")
        if not in_kernel:
            if buf is None:
                buf = memoryview(bytearray(min(COPY_STEP, length)))
            n = os.preadv(src, [buf[:min(length, len(buf))]], src_off)
            if n == 0:
                raise OSError(errno.EIO, f"the data ends {length} bytes early")
            pwrite_all(dst, buf[:n], dst_off)
        src_off += n
        dst_off += n
        length -= n
        if done is not None:
            done(dst_off)


class ReadBehind:
    """The CRC-32 of a range of a file being written, computed by a thread that reads back
    each part as soon as it is written (``written(upto)``). The writer copies in the
    kernel meanwhile; the checksum is of what the file holds, through one bounded buffer."""

    def __init__(self, fd: int, start: int, crc: int = 0) -> None:
        self.fd = fd
        self.pos = start
        self.limit = start
        self.crc = crc
        self._done = False
        self._error: BaseException | None = None
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="read-behind", daemon=True)
        self._thread.start()

    def written(self, upto: int) -> None:
        with self._cond:
            self.limit = upto
            self._cond.notify()

    def _run(self) -> None:
        buf = memoryview(bytearray(COPY_STEP))
        try:
            while True:
                with self._cond:
                    while self.pos >= self.limit and not self._done:
                        self._cond.wait()
                    limit, done = self.limit, self._done
                if self.pos >= limit and done:
                    return
                while self.pos < limit:
                    n = os.preadv(self.fd, [buf[:min(len(buf), limit - self.pos)]], self.pos)
                    if n <= 0:
                        raise OSError(errno.EIO, f"the file ends at byte {self.pos}, before what was written")
                    self.crc = zlib.crc32(buf[:n], self.crc)
                    self.pos += n
        except BaseException as e:
            self._error = e

    def finish(self) -> int:
        """Wait for the thread to read everything written; the CRC-32."""
        with self._cond:
            self._done = True
            self._cond.notify()
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self.crc


def crc_range(fd: int, offset: int, length: int) -> int:
    buf = bytearray(min(COPY_STEP, max(length, 1)))
    view = memoryview(buf)
    crc = 0
    while length:
        n = min(length, len(buf))
        got = os.preadv(fd, [view[:n]], offset)
        if got <= 0:
            return -1
        crc = zlib.crc32(view[:got], crc)
        offset += got
        length -= got
    return crc


def pwrite_all(fd: int, data, offset: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n
