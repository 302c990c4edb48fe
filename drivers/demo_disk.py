"""The demo disk: a 32 MiB image in molpy's data directory, made on first use.

The built-in default config attaches ``${MOLPY_DATA}/demo.img -rw -boot``; the demo
guest keeps its boot counter on it. molrc.sample attaches ``${MOLPY_DATA}/sample.img``,
a demo disk of its own: sharing demo.img, the sample's runs would change the disk the
built-in config's session was saved with, and plain ``molpy run`` would refuse it. Only
these exact paths are ever created here: any other missing disk stays an error for the
block layer to report.

Boot record (sector 1, written by the demo guest and by :func:`make_demo_disk`):
bytes 0-8 ``MOLPYBOOT``, bytes 9-11 zero, bytes 12-15 the boot count (u32 big-endian),
the rest of the sector zero.
"""

from __future__ import annotations

import os
import struct

from molpy.files import data_dir

from .block import SECTOR

DEMO_DISK_NAME = "demo.img"
SAMPLE_DISK_NAME = "sample.img"          # molrc.sample's own demo disk
DEMO_DISK_NAMES = (DEMO_DISK_NAME, SAMPLE_DISK_NAME)
DEMO_DISK_SIZE = 32 << 20
BOOT_SECTOR = 1
BOOT_MAGIC = b"MOLPYBOOT"
COUNT_OFFSET = 12


def default_demo_path() -> str:
    """Where the default config puts the demo disk (molpy's data directory)."""
    return os.path.join(data_dir(), DEMO_DISK_NAME)


def is_demo_path(path: str | os.PathLike) -> bool:
    """Whether ``path`` is one of the demo disks molpy makes when missing (the built-in
    config's and molrc.sample's, in molpy's data directory)."""
    try:
        folder = data_dir()
    except (ImportError, OSError):   # no data directory: this cannot be a demo disk
        return False
    return os.path.abspath(os.fspath(path)) in {os.path.join(folder, name) for name in DEMO_DISK_NAMES}


def boot_record(count: int = 0) -> bytes:
    """Sector 1 of a disk whose boot counter is ``count``."""
    rec = bytearray(SECTOR)
    rec[:len(BOOT_MAGIC)] = BOOT_MAGIC
    struct.pack_into(">I", rec, COUNT_OFFSET, count & 0xFFFFFFFF)
    return bytes(rec)


def read_boot_count(path: str | os.PathLike) -> int | None:
    """The boot counter a disk image holds, or None when it has no boot record."""
    with open(path, "rb") as f:
        f.seek(BOOT_SECTOR * SECTOR)
        rec = f.read(SECTOR)
    if len(rec) < COUNT_OFFSET + 4 or not rec.startswith(BOOT_MAGIC):
        return None
    return struct.unpack_from(">I", rec, COUNT_OFFSET)[0]


def make_demo_disk(path: str | os.PathLike, size: int = DEMO_DISK_SIZE) -> None:
    """Create a sparse image with a boot record (count 0); atomic, never overwrites."""
    path = os.fspath(path)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = f"{path}.new.{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    try:
        os.ftruncate(fd, size)
        os.pwrite(fd, boot_record(0), BOOT_SECTOR * SECTOR)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        os.unlink(tmp)
        raise
    os.close(fd)
    try:
        os.link(tmp, path)         # fails if another process made it meanwhile: keep theirs
    except FileExistsError:
        pass
    finally:
        os.unlink(tmp)


def ensure_demo_disk(path: str | os.PathLike) -> bool:
    """Make a demo disk if ``path`` is a demo disk's path (is_demo_path) and is missing;
    True if made."""
    path = os.fspath(path)
    if os.path.lexists(path) or not is_demo_path(path):
        return False
    make_demo_disk(path)
    return True
