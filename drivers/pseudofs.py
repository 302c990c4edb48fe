"""Pseudo files: host files MOL published to the guest by name (pseudofs.c, OSI 96).

MachineConfig.pseudofiles lists (name, host path) in MOL's order (its ``pseudofile``,
``pseudofile_`` and ``@pseudofile`` keys), already named as MOL named them (``name-1``,
``name-2`` ... for a repeated ``pseudofile``; the config does that). A file that cannot
be opened is not published (MOL printed the error and went on), nor is a name already
published. MOL put each new file first, so file index 0 is the one published last.

ops (r6): 1 open(name) -> index or -1; 2 close -> 0; 3 size(index) -> bytes or -1;
4 read(index, offset, buffer, count) -> bytes read or -1; 5 index-to-name(index,
buffer, size) -> 0, the file's host path copied as MOL's strncpy0 copies it; another
op -1. The firmware opens ``pseudo:,nwrom`` this way: with no such file the answer is
-1, and it goes on to the disks.

Where MOL differs: it read the size with lstat (a link's own size) and molpy with
fstat of the file it reads; a buffer must lie in RAM for the bytes moved (MOL checked
its first byte only); a negative offset reads from 0 as MOL's failed lseek did.
"""

from __future__ import annotations

import logging
import os
import stat

from ..emulation.memory import GuestAccessError
from .device import Device, DeviceContext

log = logging.getLogger("molpy.pseudofs")

OSI_PSEUDO_FS = 96
PFS_OPEN = 1
PFS_CLOSE = 2
PFS_GET_SIZE = 3
PFS_READ = 4
PFS_INDEX_TO_NAME = 5
MAX_NAME = 4096
READ_STEP = 16 << 20     # a long read goes in steps; a stop request is seen between them


def publish(pseudofiles: list[tuple[str, str]]) -> list[tuple[bytes, str]]:
    """(pseudo name, host path) by guest index: MOL's publication, newest first."""
    published: list[tuple[bytes, str]] = []
    names: set[bytes] = set()
    for name, path in pseudofiles:
        unique = name.encode("utf-8")[:127]             # MOL's names live in 128 bytes
        if unique in names:
            log.warning("pseudofile %s: the name is already published; %s is not", name, path)
            continue
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            os.close(fd)
        except OSError as e:
            log.warning("pseudofile %s: %s: %s; not published", name, path, e.strerror)
            continue
        names.add(unique)
        published.insert(0, (unique, path))
    return published


class PseudoFS(Device):
    kind = "PSFS"

    def __init__(self, ctx: DeviceContext) -> None:
        self.ctx = ctx
        self.memory = ctx.memory
        self.files = publish(ctx.config.pseudofiles)

    def attach(self, ctx: DeviceContext) -> None:
        ctx.osi.register(OSI_PSEUDO_FS, self.call, 5, "pseudofs")

    def _file(self, index: int) -> str | None:
        return self.files[index][1] if index < len(self.files) else None

    def call(self, op: int, a1: int, a2: int, a3: int, a4: int) -> int:
        if op == PFS_OPEN:
            return self.open(a1)
        if op == PFS_CLOSE:
            return 0
        if op == PFS_GET_SIZE:
            return self.size(a1)
        if op == PFS_READ:
            return self.read(a1, a2, a3, a4)
        if op == PFS_INDEX_TO_NAME:
            return self.index_to_name(a1, a2, a3)
        return -1

    def open(self, name_addr: int) -> int:
        try:
            name = self.memory.read_cstring(name_addr, MAX_NAME)
        except GuestAccessError:
            return -1
        for index, (pname, _) in enumerate(self.files):
            if pname == name:
                return index
        return -1

    def _open_regular(self, path: str) -> int | None:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as e:
            log.warning("pseudofile %s: %s", path, e.strerror)
            return None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            log.warning("pseudofile %s is not a regular file", path)
            return None
        return fd

    def size(self, index: int) -> int:
        path = self._file(index)
        if path is None:
            return -1
        fd = self._open_regular(path)
        if fd is None:
            return -1
        try:
            return os.fstat(fd).st_size & 0xFFFFFFFF
        finally:
            os.close(fd)

    def read(self, index: int, offset: int, buf: int, count: int) -> int:
        path = self._file(index)
        mem = self.memory
        if path is None or buf >= mem.size:
            return -1
        if offset & 0x80000000:
            offset = 0                       # MOL's lseek failed and it read from the start
        fd = self._open_regular(path)
        if fd is None:
            return -1
        try:
            n = max(0, min(count, os.fstat(fd).st_size - offset))
            if buf + n > mem.size:
                return -1
            return self._read_steps(fd, offset, buf, n)
        except OSError as e:
            log.warning("pseudofile %s: %s", path, e.strerror)
            return -1
        finally:
            os.close(fd)

    def _read_steps(self, fd: int, offset: int, buf: int, n: int) -> int:
        """Up to ``n`` bytes into RAM at ``buf`` (checked), READ_STEP at a time so that
        Ctrl-C or SIGTERM is seen between steps: then, or at the file's end, a short count."""
        done = 0
        try:
            while done < n:
                if done and self.ctx.stop_requested():
                    break
                step = min(n - done, READ_STEP)
                with self.memory.view[buf + done:buf + done + step] as part:
                    got = os.preadv(fd, [part], offset + done)
                done += got
                if got < step:
                    break                    # the file shrank under us
        finally:
            if done:
                self.ctx.code_changed(buf, buf + done)
        return done

    def index_to_name(self, index: int, buf: int, size: int) -> int:
        path = self._file(index)
        if path is None or buf >= self.memory.size:
            return -1
        if size:
            data = os.fsencode(path)[:size - 1] + b"\0"
            if buf + len(data) > self.memory.size:
                return -1
            self.memory.write(buf, data)
        return 0


def create(ctx: DeviceContext) -> PseudoFS:
    return PseudoFS(ctx)
