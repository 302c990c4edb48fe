"""Guest RAM: one host mmap handed to Unicorn with ``mem_map_ptr``.

The host reads and writes guest buffers as memoryviews of that mmap, so the I/O
path never copies through ``mem_read``/``mem_write``. RAM is either anonymous
(a fresh boot) or a private, copy-on-write mapping of a session file (resume):
``discard_changes`` then throws every guest change away with one madvise.
"""

from __future__ import annotations

import ctypes
import fcntl
import logging
import mmap
import os

from molpy.errors import GuestError

PAGE_SIZE = 4096
MAX_RAM_MIB = 2048  # guest-physical space above this is kept for the scratch page

log = logging.getLogger("molpy")

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
_libc.mremap.restype = ctypes.c_void_p
_libc.mremap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t, ctypes.c_int, ctypes.c_void_p]
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_MAP_FAILED = ctypes.c_void_p(-1).value
_MREMAP_MAYMOVE, _MREMAP_FIXED = 1, 2
_F_SETSIG = 10                      # <fcntl.h>; not exported by Python's fcntl
_SIGURG = 23                        # ignored by default: a lease break must not kill molpy
_DETACH_STEP = 32 << 20


class GuestAccessError(GuestError):
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
        self.detached = False           # the session file changed: RAM now lives in memory only
        self._lease_fd = -1
        if file_fd is None:
            self._mmap = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        else:
            # Private mapping of the session file: lazy load, copy-on-write, never written back.
            self._mmap = mmap.mmap(file_fd, size, flags=mmap.MAP_PRIVATE,
                                   prot=mmap.PROT_READ | mmap.PROT_WRITE, offset=file_offset)
        self._anchor = ctypes.c_char.from_buffer(self._mmap)
        self.address = ctypes.addressof(self._anchor)
        self.view = memoryview(self._mmap)

    # -- the session file under the mapping --

    def guard_file(self, file_fd: int) -> None:
        """A read lease on the session file: a program that opens it for writing, or
        truncates it, waits until :meth:`file_changed` has moved RAM off the file.

        Without this, a truncated session file makes the next guest access to a page not
        yet read raise SIGBUS (the kernel unmaps even private copies beyond the new end).
        The break is polled (one fcntl a slice), and the lease's signal is one that is
        ignored by default, so a break can never kill molpy. Called once the session file
        has no writer open (after the used flag is written).
        """
        try:
            fd = os.open(f"/proc/self/fd/{file_fd}", os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return
        try:
            fcntl.fcntl(fd, _F_SETSIG, _SIGURG)
            fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_RDLCK)
            fcntl.fcntl(fd, fcntl.F_SETOWN, 0)
        except OSError as e:
            # Not the file's owner, a writer already has it open, or a file system without
            # leases: resume still works, and SIGBUS is caught as a last resort by the CLI.
            log.debug("no lease on the session file (%s); RAM stays mapped from it", e.strerror)
            os.close(fd)
            return
        self._lease_fd = fd

    def file_changed(self) -> bool:
        """True once another program opened the session file for writing (or truncated it).

        RAM is then copied into anonymous memory at the same address (Unicorn keeps its
        pointer), the lease is released and the writer goes on; the guest sees no change.
        """
        fd = self._lease_fd
        if fd < 0:
            return False
        try:
            if fcntl.fcntl(fd, fcntl.F_GETLEASE) == fcntl.F_RDLCK:
                return False
        except OSError:
            pass
        self._detach()
        return True

    def _detach(self) -> None:
        new = _libc.mmap(None, self.size, mmap.PROT_READ | mmap.PROT_WRITE,
                         mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS, -1, 0)
        if new in (None, _MAP_FAILED):
            raise MemoryError("cannot copy guest RAM off the session file: out of memory")
        zero = bytes(_DETACH_STEP)
        for off in range(0, self.size, _DETACH_STEP):
            n = min(_DETACH_STEP, self.size - off)
            if self.view[off:off + n] != zero[:n]:      # zero stretches stay untouched (no RSS)
                ctypes.memmove(new + off, self.address + off, n)
        if _libc.mremap(new, self.size, self.size, _MREMAP_MAYMOVE | _MREMAP_FIXED,
                        self.address) != self.address:
            _libc.munmap(new, self.size)
            raise OSError(ctypes.get_errno(), "cannot move guest RAM off the session file")
        self.file_backed = False
        self.detached = True
        self._release_lease()

    def _release_lease(self) -> None:
        if self._lease_fd >= 0:
            fd, self._lease_fd = self._lease_fd, -1
            try:
                fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_UNLCK)
            except OSError:
                pass
            os.close(fd)

    # -- bounds-checked access for device code (addresses come from the guest) --

    def check(self, addr: int, length: int) -> None:
        """Raise GuestAccessError unless [addr, addr+length) lies inside RAM."""
        if addr < 0 or length < 0 or addr + length > self.size:
            raise GuestAccessError(f"guest range 0x{addr:x}+0x{length:x} is outside RAM (0x{self.size:x} bytes)")

    def write(self, addr: int, data: bytes) -> None:
        self.check(addr, len(data))
        self.view[addr:addr + len(data)] = data

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

    def discard_changes(self) -> None:
        """Drop every private page: anonymous RAM reads zero, file-backed RAM reads the file."""
        self._mmap.madvise(mmap.MADV_DONTNEED)

    def close(self) -> None:
        self._release_lease()
        self.view.release()
        del self._anchor
        try:
            self._mmap.close()
        except BufferError:  # a device still holds a view; the mapping dies with it
            pass

