"""Guest RAM: one host mmap handed to Unicorn with ``mem_map_ptr``.

The host reads and writes guest buffers as memoryviews of that mmap, so the I/O
path never copies through ``mem_read``/``mem_write``. RAM is either anonymous
(a fresh boot) or a private, copy-on-write mapping of a session file (resume):
``discard_changes`` then throws every guest change away with one madvise.
"""

from __future__ import annotations

import ctypes
import mmap
import os

PAGE_SIZE = 4096
MAX_RAM_MIB = 2048  # guest-physical space above this is kept for the scratch page


class GuestAccessError(Exception):
    """A guest-supplied address or length that falls outside RAM."""


class GuestMemory:
    """Guest-physical RAM from address 0, backed by a host mmap."""

    def __init__(self, size: int, *, file_fd: int | None = None, file_offset: int = 0) -> None:
        if size <= 0 or size % PAGE_SIZE:
            raise ValueError(f"RAM size must be a positive multiple of {PAGE_SIZE}: {size}")
        if size > MAX_RAM_MIB << 20:
            raise ValueError(f"RAM size {size >> 20} MiB is over the {MAX_RAM_MIB} MiB limit")
        self.size = size
        self.file_backed = file_fd is not None
        if file_fd is None:
            self._mmap = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        else:
            # Private mapping of the session file: lazy load, copy-on-write, never written back.
            self._mmap = mmap.mmap(file_fd, size, flags=mmap.MAP_PRIVATE,
                                   prot=mmap.PROT_READ | mmap.PROT_WRITE, offset=file_offset)
        self._anchor = ctypes.c_char.from_buffer(self._mmap)
        self.address = ctypes.addressof(self._anchor)
        self.view = memoryview(self._mmap)

    # -- bounds-checked access for device code (addresses come from the guest) --

    def check(self, addr: int, length: int) -> None:
        """Raise GuestAccessError unless [addr, addr+length) lies inside RAM."""
        if addr < 0 or length < 0 or addr + length > self.size:
            raise GuestAccessError(f"guest range 0x{addr:x}+0x{length:x} is outside RAM (0x{self.size:x} bytes)")

    def buffer(self, addr: int, length: int) -> memoryview:
        """A writable memoryview of guest RAM, no copy."""
        self.check(addr, length)
        return self.view[addr:addr + length]

    def read(self, addr: int, length: int) -> bytes:
        self.check(addr, length)
        return self._mmap[addr:addr + length]

    def write(self, addr: int, data: bytes) -> None:
        self.check(addr, len(data))
        self.view[addr:addr + len(data)] = data

    def read_u32(self, addr: int) -> int:
        self.check(addr, 4)
        return int.from_bytes(self._mmap[addr:addr + 4], "big")

    def write_u32(self, addr: int, value: int) -> None:
        self.check(addr, 4)
        self.view[addr:addr + 4] = (value & 0xFFFFFFFF).to_bytes(4, "big")

    def read_cstring(self, addr: int, limit: int = 4096) -> bytes:
        self.check(addr, 0)
        end = self._mmap.find(b"\0", addr, min(self.size, addr + limit))
        if end < 0:
            raise GuestAccessError(f"no NUL within {limit} bytes of 0x{addr:x}")
        return self._mmap[addr:end]

    # -- whole-RAM operations for boot, sessions and reset --

    def clear(self) -> None:
        """Zero all of RAM (fresh boot); pages become holes again."""
        self.discard_changes()
        if not self.file_backed:
            return
        self.view[:] = bytes(self.size)

    def discard_changes(self) -> None:
        """Drop every private page: anonymous RAM reads zero, file-backed RAM reads the file."""
        self._mmap.madvise(mmap.MADV_DONTNEED)

    def close(self) -> None:
        self.view.release()
        del self._anchor
        try:
            self._mmap.close()
        except BufferError:  # a device still holds a view; the mapping dies with it
            pass


def open_private(path: str | os.PathLike, size: int, offset: int) -> GuestMemory:
    """Map ``size`` bytes of a file at ``offset`` as copy-on-write guest RAM."""
    fd = os.open(path, os.O_RDONLY)
    try:
        return GuestMemory(size, file_fd=fd, file_offset=offset)
    finally:
        os.close(fd)
