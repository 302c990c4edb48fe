"""The digest cache: a disk's region digests kept in molpy's data folder
(``digests/DEV-INODE.digest``) for the disk's exact identity, so a disk is read once, not
per save or per resume. An entry holds only for the identity it was written for; molpy's
folder is not followed through a link, and pruning removes only files molpy made."""

from __future__ import annotations

import hashlib
import os
import re
import stat
import struct

from molpy.files import HostFileError, NewFile, own_folder, read_limited

DIGEST = 32                     # bytes of one SHA-256
MAX_REGIONS = 1 << 16           # regions a disk is cut into at most
CACHE_DIR = "digests"
MAX_CACHED = 64                 # cache entries kept (one per disk, at most 2 MiB each)
_CACHE = struct.Struct(">8sIIQQQqqQI32s")
CACHE_MAGIC = b"MOLPYDGC"
CACHE_VERSION = 1
HAS_PLAIN = 1


def identity_key(fd: int) -> tuple[int, int, int, int, int]:
    """(device, inode, size, mtime_ns, ctime_ns): what a cache entry must match exactly.
    The ctime cannot be set by a user, so a copy made with ``cp -a`` never matches."""
    st = os.fstat(fd)
    size = st.st_size
    if stat.S_ISBLK(st.st_mode):
        size = os.lseek(fd, 0, os.SEEK_END)
    return st.st_dev, st.st_ino, size, st.st_mtime_ns, st.st_ctime_ns



def cache_path(folder: str, key: tuple[int, ...]) -> str:
    return os.path.join(folder, CACHE_DIR, f"{key[0]:x}-{key[1]:x}.digest")


def read_cache(folder: str, fd: int, size: int, region: int,
               key: tuple[int, ...] | None = None) -> tuple[bytes, str | None] | None:
    """(region digests, whole-disk SHA-256 or None) cached for the disk of ``fd`` as it is
    now (``key``: its identity, read before), with this region size; None when there is no
    such entry or it fails a check."""
    key = key or identity_key(fd)
    if stat.S_ISBLK(os.fstat(fd).st_mode):
        return None
    count = (size + region - 1) // region
    if count > MAX_REGIONS:
        return None
    want = _CACHE.size + count * DIGEST + DIGEST
    try:
        if not stat.S_ISDIR(os.lstat(os.path.join(folder, CACHE_DIR)).st_mode):
            return None                         # a link planted there is not followed
        raw = read_limited(cache_path(folder, key), want, what="digest cache")
    except (OSError, HostFileError):
        return None
    if len(raw) != want or hashlib.sha256(raw[:-DIGEST]).digest() != raw[-DIGEST:]:
        return None
    magic, version, flags, dev, ino, csize, mtime, ctime, cregion, ccount, plain = _CACHE.unpack_from(raw)
    if (magic, version, (dev, ino, csize, mtime, ctime), cregion, ccount) != \
            (CACHE_MAGIC, CACHE_VERSION, key, region, count) or csize != size or flags & ~HAS_PLAIN:
        return None
    return raw[_CACHE.size:_CACHE.size + count * DIGEST], plain.hex() if flags & HAS_PLAIN else None


def write_cache(folder: str, fd: int, size: int, region: int, digests: bytes | bytearray,
                plain: str | None) -> None:
    """Publish the digests for the disk of ``fd`` as it is now (atomically, by rename)."""
    key = identity_key(fd)
    own_folder(folder, CACHE_DIR, what="molpy's digest cache folder")
    head = _CACHE.pack(CACHE_MAGIC, CACHE_VERSION, HAS_PLAIN if plain else 0, *key, region,
                       len(digests) // DIGEST, bytes.fromhex(plain) if plain else bytes(DIGEST))
    body = head + bytes(digests)
    out = NewFile(cache_path(folder, key), what="digest cache")
    try:
        data = body + hashlib.sha256(body).digest()
        view = memoryview(data)
        while view:
            view = view[os.write(out.fd, view):]
        out.publish(durable=False)
    except BaseException:
        out.discard()
        raise
    finally:
        out.close()
    _prune(os.path.join(folder, CACHE_DIR))


_CACHE_NAME = re.compile(r"[0-9a-f]+-[0-9a-f]+\.digest")


def _made_by_molpy(entry: os.DirEntry) -> bool:
    """A cache entry molpy wrote: its name, a regular file of this user, its magic."""
    if not _CACHE_NAME.fullmatch(entry.name) or not entry.is_file(follow_symlinks=False):
        return False
    try:
        if entry.stat(follow_symlinks=False).st_uid != os.getuid():
            return False
        fd = os.open(entry.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            return os.pread(fd, len(CACHE_MAGIC), 0) == CACHE_MAGIC
        finally:
            os.close(fd)
    except OSError:
        return False


def _prune(folder: str) -> None:
    """Keep the MAX_CACHED most recently written entries (disks come and go). Only files
    molpy made are counted and removed (named, owned and headed as its entries are)."""
    try:
        if stat.S_ISLNK(os.lstat(folder).st_mode):
            return
        entries = [e for e in os.scandir(folder) if _made_by_molpy(e)]
        if len(entries) <= MAX_CACHED:
            return
        entries.sort(key=lambda e: e.stat(follow_symlinks=False).st_mtime_ns)
        for e in entries[:len(entries) - MAX_CACHED]:
            os.unlink(e.path)
    except OSError:
        pass
