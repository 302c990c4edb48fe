"""NVRAM: MOL's 8 KiB non-volatile RAM (OSI 91 size, 53 read a byte, 52 write a byte).

As in MOL's nvram.c the device always exists and starts zeroed; with ``nvram:`` set
(MachineConfig.nvram) the first 8 KiB of that raw image are read at start, a missing or
short image is (re)written at once, and the NVRAM goes back into the image when molpy
exits (MOL's oldworld boot writes back only 0x1300-0x2000, the rest of the file is
kept). Out-of-range offsets read 0 and writes to them are ignored.

molpy writes the image safely where MOL wrote in place: a new file in the same folder,
fsynced, renamed over the image (a crash leaves the old or the new image, never half of
one; bytes past 8 KiB are kept), and the image must be a regular file: a symbolic link,
FIFO or folder at its name is refused at start, and the new file is created so that
nothing planted at any name can redirect it (molpy.files).

The image is locked (flock, exclusive) for the run's life, as disks are: a second molpy on
the same image is refused naming the holder, so neither run's NVRAM change is lost. Each
new image is locked before the rename gives it the name, so the lock never lapses.
"""

from __future__ import annotations

import errno
import logging
import os
import stat

from ..files import FileLocked, HostFileError, NewFile, create_new, lock, open_existing
from .device import Device, DeviceContext, DeviceError
from .device import StateError

log = logging.getLogger("molpy.nvram")

OSI_WRITE_NVRAM_BYTE = 52
OSI_READ_NVRAM_BYTE = 53
OSI_NVRAM_SIZE = 91
NVRAM_SIZE = 0x2000
OLDWORLD_REGIONS = ((0x1300, 0x100), (0x1400, 0xC00))   # MOL's PRAM part and the rest
COPY_CHUNK = 1 << 20


class NvramError(DeviceError):
    """The NVRAM image cannot be used; the message names it."""


def _open_image(path: str) -> int | None:
    """A descriptor of the regular file at ``path`` (never through a link), None if absent."""
    try:
        return open_existing(path, what="nvram image", nofollow=True)
    except HostFileError as e:
        if e.errno == errno.ENOENT:
            return None
        raise NvramError(str(e)) from None


def read_image(path: str) -> tuple[bytes, int | None]:
    """The image's first 8 KiB (zero-padded) and its size (None when there is no file)."""
    fd = _open_image(path)
    if fd is None:
        return bytes(NVRAM_SIZE), None
    try:
        data = os.pread(fd, NVRAM_SIZE, 0)
        size = os.fstat(fd).st_size
    except OSError as e:
        raise NvramError(f"nvram image {path}: {e.strerror}") from None
    finally:
        os.close(fd)
    return data + bytes(NVRAM_SIZE - len(data)), size


def _open_locked(path: str, protected) -> tuple[int | None, bytes, int | None]:
    """(descriptor, first 8 KiB, size or None when it was just made) of the image, locked
    exclusively: a second molpy on the same image is refused naming the holder. A missing
    image is created empty in place (O_EXCL: two runs starting at once cannot both make it);
    the lock is taken on the file the name still holds after locking."""
    for _ in range(8):
        fd = _open_image(path)
        made = False
        if fd is None:
            try:
                fd = create_new(path, mode=0o600, what="nvram image")
                made = True
            except HostFileError as e:
                if e.errno == errno.EEXIST:
                    continue                      # another run made it meanwhile
                return None, bytes(NVRAM_SIZE), None     # (MOL: the NVRAM starts blank; the
                                                        # write at once below says why)
        try:
            st = os.fstat(fd)
            hit = protected().get((st.st_dev, st.st_ino))
            if hit is not None:
                raise NvramError(f"nvram image {path} is {hit}: molpy does not write its NVRAM over it")
            try:
                lock(fd, True)
            except FileLocked as e:
                who = f" (pid {e.pid})" if e.pid else ""
                raise NvramError(f"nvram image {path} is in use by another molpy{who}; two runs on one "
                                 f"image would lose one's NVRAM changes: give this run its own image "
                                 f"(-s nvram=FILE)") from None
            try:
                now = os.stat(path, follow_symlinks=False)
            except FileNotFoundError:
                now = None
            if now is None or (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
                os.close(fd)                      # replaced while we locked it: again
                continue
            data = os.pread(fd, NVRAM_SIZE, 0)
            return fd, data + bytes(NVRAM_SIZE - len(data)), None if made else st.st_size
        except OSError as e:
            os.close(fd)
            raise NvramError(f"nvram image {path}: {e.strerror}") from None
        except BaseException:
            os.close(fd)
            raise
    raise NvramError(f"nvram image {path}: another program keeps replacing it")


def write_image(path: str, data: bytes, regions=((0, NVRAM_SIZE),),
                protected: dict | None = None, keep_locked: bool = False) -> int | None:
    """Replace ``regions`` of the image with ``data``'s bytes: a new file, fsynced, renamed.
    ``protected``: (device, inode) -> name of files the image must not be (the run's disks);
    ``keep_locked``: the new file is locked before it gets the name, and its descriptor
    returned (the caller closes it)."""
    old = _open_image(path)
    new = None
    try:
        if old is not None and protected:
            st = os.fstat(old)
            hit = protected.get((st.st_dev, st.st_ino))
            if hit is not None:
                raise HostFileError(path, f"is {hit}: molpy does not write its NVRAM over it", errno.EEXIST)
        mode = stat.S_IMODE(os.fstat(old).st_mode) if old is not None else 0o600
        new = NewFile(path, mode=mode, what="nvram image")
        image = bytearray(os.pread(old, NVRAM_SIZE, 0) if old is not None else b"")
        image += bytes(NVRAM_SIZE - len(image))
        for start, length in regions:
            image[start:start + length] = data[start:start + length]
        os.pwrite(new.fd, image, 0)
        offset = NVRAM_SIZE
        while old is not None:                     # bytes past 8 KiB stay as they were
            chunk = os.pread(old, COPY_CHUNK, offset)
            if not chunk:
                break
            os.pwrite(new.fd, chunk, offset)
            offset += len(chunk)
        os.fsync(new.fd)
        if keep_locked:
            lock(new.fd, True)
        new.publish()
        if keep_locked:
            kept, new.fd = new.fd, -1
            return kept
        return None
    except OSError as e:
        if new is not None:
            new.discard()
        reason = str(e) if isinstance(e, HostFileError) else f"{path}: {e.strerror}"
        raise NvramError(f"nvram image {reason}; the image is unchanged") from None
    finally:
        if new is not None:
            new.close()
        if old is not None:
            os.close(old)


class Nvram(Device):
    """8 KiB of NVRAM, saved in sessions and written back to the ``nvram:`` image."""

    kind = "NVRM"

    def __init__(self, ctx: DeviceContext, saved: bytes | None = None) -> None:
        config = ctx.config
        self.path = config.nvram
        self._protected = ctx.protected_files
        self.writable = not config.inspect_only
        self.regions = OLDWORLD_REGIONS if config.boot_type == "oldworld" else ((0, NVRAM_SIZE),)
        self.data = bytearray(NVRAM_SIZE)
        self._on_disk: bytes | None = None        # what the image holds (its first 8 KiB)
        self._loaded = bytes(NVRAM_SIZE)
        self._dirty = False
        self._fd: int | None = None               # the image, locked for this run's life
        if self.path:
            if self.writable:
                self._fd, image, size = _open_locked(self.path, ctx.protected_files)
            else:
                image, size = read_image(self.path)
            self.data[:] = image
            self._on_disk = image
            if (size is None or size < NVRAM_SIZE) and self.writable:
                # MOL: an image it could not read in full is written back at once
                log.info("creating nvram image %s", self.path)
                try:
                    self._replace_image(bytes(self.data), ((0, NVRAM_SIZE),))
                    self._on_disk = bytes(self.data)
                except NvramError as e:         # MOL went on with a blank NVRAM too
                    log.warning("%s; the NVRAM starts blank", e)
        if saved is not None:                      # a resume: the session's NVRAM, not the image's
            self.data[:] = saved
        self._loaded = bytes(self.data)

    def attach(self, ctx: DeviceContext) -> None:
        ctx.osi.register(OSI_WRITE_NVRAM_BYTE, self.write_byte, 2, "nvram")
        ctx.osi.register(OSI_READ_NVRAM_BYTE, self.read_byte, 1, "nvram")
        ctx.osi.register(OSI_NVRAM_SIZE, self.size, 0, "nvram")

    def size(self) -> int:
        return NVRAM_SIZE

    def read_byte(self, offset: int) -> int:
        return self.data[offset] if offset < NVRAM_SIZE else 0

    def write_byte(self, offset: int, value: int) -> int:
        if offset < NVRAM_SIZE:
            self.data[offset] = value & 0xFF
            self._dirty = True
        return 0

    def save_state(self) -> bytes:
        return bytes(self.data)

    @classmethod
    def read_state(cls, data: bytes, version: int) -> bytes:
        if len(data) != NVRAM_SIZE:
            raise StateError(f"NVRAM state is {len(data)} bytes, not {NVRAM_SIZE}")
        return bytes(data)

    @classmethod
    def describe(cls, data: bytes, version: int) -> str:
        return f"{len(data)} bytes, {NVRAM_SIZE - data.count(0)} of them non-zero"

    @classmethod
    def restore(cls, ctx: DeviceContext, record: bytes) -> "Nvram":
        return cls(ctx, record)

    def reset(self) -> None:
        if self._dirty:
            self.data[:] = self._loaded
            self._dirty = False

    def write_back(self) -> bool:
        """The NVRAM into its image (MOL did it at exit); False when there was nothing to do."""
        if not self.path or not self.writable:
            return False
        current = bytes(self.data)
        if self._on_disk is not None and all(
                current[s:s + n] == self._on_disk[s:s + n] for s, n in self.regions):
            return False
        self._replace_image(current, self.regions)
        self._on_disk = current
        return True

    def _replace_image(self, data: bytes, regions) -> None:
        """A new image, locked before it appears, so the lock never lapses; the old one
        (and its lock) is let go after the rename."""
        new = write_image(self.path, data, regions, self._protected(), keep_locked=True)
        old, self._fd = self._fd, new
        if old is not None:
            os.close(old)

    def close(self) -> None:
        try:
            self.write_back()
        except NvramError as e:
            log.error("%s", e)
        finally:
            fd, self._fd = self._fd, None
            if fd is not None:
                os.close(fd)


def create(ctx: DeviceContext) -> Nvram:
    return Nvram(ctx)
