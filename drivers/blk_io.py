"""osi_blk's synchronous path: DISK_INFO, BLESS_DISK, SYNC_READ and SYNC_WRITE, and the
checked transfer between a disk and guest RAM that the ring uses too."""

from __future__ import annotations

from .blk_abi import (E_FAULT, E_INVAL, E_IO, E_LENGTH, E_NOUNIT, E_RANGE, E_ROFS, INFO_BOOT_HINT)
from .blk_units import Unit
from .block import SECTOR

TRANSFER_STEP = 16 << 20  # long transfers go in steps; a stop request is seen between them


class SyncIO:
    """Part of OsiBlk (drivers/osi_blk.py): uses its ``ctx``, ``units``, ``_io_errors``
    and ``_warn_once``."""

    def disk_info(self, channel: int, unit: int) -> int | tuple[int, ...]:
        """r3 = 0, r4 = size in 512-byte sectors, r5 = flags, r6 = r7 = 0."""
        if channel:
            return E_INVAL
        if unit >= len(self.units):
            return E_NOUNIT
        u = self.units[unit]
        return (0, min(u.backend.size // SECTOR, 0xFFFFFFFF), u.flags, 0, 0)

    def bless_disk(self, channel: int, unit: int) -> int:
        """MOL's BLESS_DISK: this unit becomes the one boot hint (the firmware booted it)."""
        if channel or unit >= len(self.units):
            return E_INVAL
        for u in self.units:
            u.flags &= ~INFO_BOOT_HINT
        self.units[unit].flags |= INFO_BOOT_HINT
        return 0

    def sync_read(self, channel: int, unit: int, blk: int, addr: int, size: int) -> int:
        return self._sync(False, channel, unit, blk, addr, size)

    def sync_write(self, channel: int, unit: int, blk: int, addr: int, size: int) -> int:
        return self._sync(True, channel, unit, blk, addr, size)

    def _sync(self, write: bool, channel: int, unit: int, blk: int, addr: int, size: int) -> int:
        """MOL's sync_io: ``blk`` is a signed sector number, ``size`` any byte count."""
        if channel:
            return E_INVAL
        if unit >= len(self.units):
            return E_NOUNIT
        u = self.units[unit]
        if write and u.readonly:
            return E_ROFS
        mem = self.ctx.memory
        if size > mem.size:
            return E_LENGTH
        if addr + size > mem.size:
            return E_FAULT
        if blk & 0x80000000:
            return E_RANGE
        offset = blk * SECTOR
        if offset + size > u.backend.size:
            return E_RANGE
        if not size:
            return 0
        return self._transfer(u, write, offset, addr, size)

    def _transfer(self, u: Unit, write: bool, offset: int, addr: int, size: int) -> int:
        """One checked transfer between the disk and guest RAM, without copies; a long one
        goes in steps so that Ctrl-C or SIGTERM is seen within one step."""
        view = self.ctx.memory.view
        if not write and size <= TRANSFER_STEP:          # the common case, kept short
            buf = view[addr:addr + size]
            try:
                u.backend.readinto(offset, buf)
            except self._io_errors as e:
                self._warn_once(f"io:{u.backend.path}", "osi_blk: read error on %s at byte %d: %s",
                                u.backend.path, offset, e)
                return E_IO
            finally:
                buf.release()
            self.ctx.code_changed(addr, addr + size)
            return 0
        done = 0
        try:
            while done < size:
                n = min(size - done, TRANSFER_STEP)
                if done and self.ctx.stop_requested():
                    return E_IO
                buf = view[addr + done:addr + done + n]
                try:
                    if write:
                        u.dirty = True
                        if u.watch is not None:
                            u.watch.before_write()
                        try:
                            u.backend.write(offset + done, buf)
                        finally:                 # after the data: its regions are stale
                            u.unflushed = True
                            if u.watch is not None:
                                u.watch.mark(offset + done, n)
                    else:
                        u.backend.readinto(offset + done, buf)
                finally:
                    buf.release()
                done += n
        except self._io_errors as e:
            self._warn_once(f"io:{u.backend.path}", "osi_blk: %s error on %s at byte %d: %s",
                            "write" if write else "read", u.backend.path, offset + done, e)
            return E_IO
        finally:
            if not write and done:
                self.ctx.code_changed(addr, addr + done)
        return 0

