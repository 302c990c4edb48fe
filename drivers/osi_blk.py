"""osi_blk: MOL's asynchronous block device ("ablk", OSI selectors 79-86).

The guest finds its disks with DISK_INFO, moves sectors with SYNC_READ/SYNC_WRITE,
or queues requests on a ring of 16-byte descriptors in its own RAM (RING_SETUP,
CNTRL start, KICK, IRQ_ACK) exactly as MOL's guest drivers do. molpy has no
interrupts and no I/O thread: KICK runs every queued descriptor before it returns
and IRQ_ACK then reports the completed count. What a MOL guest can see follows
MOL's ablk.c (KICK answers 0, an engine error shows as a stopped engine; IRQ_ACK
answers a bare 0 when the line is low; byte counts need not be whole sectors);
docs/osi-abi.md lists where molpy checks more than MOL did.

Data goes straight between the block backend and a memoryview of guest RAM. The
guest is untrusted: every unit, sector, length, address and ring index is checked,
and a bad request gets a negative error code in r3 (drivers/blk_abi.py and
docs/osi-abi.md); the host never raises for guest input.

The device is one class made of its jobs, one module each: blk_abi (the numbers),
blk_units (units, opening them), blk_io (the synchronous path), blk_ring (the ring
engine), blk_sessions (markers, identity and content checks, overlays in sessions),
blk_state (the saved state as typed records).
"""

from __future__ import annotations

import logging
from typing import Any

from molpy.emulation.session import BulkRef

from .blk_abi import *  # noqa: F401,F403  (the ABI's names, as guests and tests know them here)
from .blk_abi import (INFO_BOOT_HINT, OSI_ABLK_BLESS_DISK, OSI_ABLK_CNTRL, OSI_ABLK_DISK_INFO, OSI_ABLK_IRQ_ACK,
                      OSI_ABLK_KICK, OSI_ABLK_RING_SETUP, OSI_ABLK_SYNC_READ, OSI_ABLK_SYNC_WRITE)
from .blk_io import SyncIO
from .blk_ring import RingEngine
from .blk_sessions import BlkFit, DiskSessions
from .blk_state import RingState
from .blk_units import Unit, open_units
from .block import BlockError
from .device import Device, DeviceContext
from .digests import DiskDigests

log = logging.getLogger("molpy.osi_blk")


class OsiBlk(SyncIO, RingEngine, DiskSessions, Device):
    """The ablk channel 0 and its units, in blkdev order. Its session state (the ring
    registers and a disk-sync marker per unit, version 3) is described in drivers/blk_state.py."""

    kind = "ABLK"
    version = 3
    min_version = 1

    def __init__(self, ctx: DeviceContext, units: list[Unit], io_errors: tuple[type[BaseException], ...] = (OSError,)) -> None:
        self.ctx = ctx
        self.units = units
        self.ring = RingState()
        self._io_errors = io_errors
        self._loaded_ring = RingState()
        self._loaded_overlays: dict[int, tuple[Any, int, int | None]] = {}   # unit -> (read, length, crc)
        self._bulk: dict[tuple[str, int], BulkRef] = {}
        self._warned: set[str] = set()
        self._checked: set[int] = set()    # units whose contents the last check read
        self.notes: list[str] = []         # disks accepted by a content check (one line each)
        self.keep_digests = True           # False while a check of saved state has not passed
        self._computed: list[DiskDigests] = []   # digests of another region size, read by a check
        for u in units:
            u.boot_flags = u.flags & INFO_BOOT_HINT

    @classmethod
    def restore(cls, ctx: DeviceContext, fit: BlkFit) -> "OsiBlk":
        """The config's units opened for real (overlays made, as on a fresh start) only
        now that phase one found the saved state fits them, and put in that state."""
        blk = create(ctx)
        try:
            blk.adopt(fit)
        except BaseException:
            blk.close()
            raise
        return blk

    # -- wiring --

    def attach(self, ctx: DeviceContext) -> None:
        osi = ctx.osi
        osi.register(OSI_ABLK_RING_SETUP, self.ring_setup, 3, "osi_blk")
        osi.register(OSI_ABLK_CNTRL, self.cntrl, 3, "osi_blk")
        osi.register(OSI_ABLK_DISK_INFO, self.disk_info, 2, "osi_blk")
        osi.register(OSI_ABLK_KICK, self.kick, 1, "osi_blk")
        osi.register(OSI_ABLK_IRQ_ACK, self.irq_ack, 1, "osi_blk")
        osi.register(OSI_ABLK_SYNC_READ, self.sync_read, 5, "osi_blk")
        osi.register(OSI_ABLK_SYNC_WRITE, self.sync_write, 5, "osi_blk")
        osi.register(OSI_ABLK_BLESS_DISK, self.bless_disk, 2, "osi_blk")

    def _warn_once(self, key: str, msg: str, *args) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning(msg, *args)

    def open_files(self) -> list[tuple[int, str]]:
        """(descriptor, what it is) of every disk and -cow overlay (no file molpy writes may be one)."""
        found = []
        for u in self.units:
            disk = u.backend.disk()
            found.append((disk.fd, f"the disk {disk.path}"))
            overlay = getattr(u.backend, "overlay", None)
            if overlay is not None:
                found.append((overlay.fd, f"the -cow overlay {overlay.path}"))
        return found

    def close(self) -> None:
        """Every disk's digests are cached when they are complete (unless a check of saved
        state refused them), then the disks are closed."""
        for u in self.units:
            if u.digests is not None:
                u.digests.close()
        self._save_digests()
        units, self.units = self.units, []
        for u in units:
            try:
                u.backend.close()
            except OSError as e:   # closing must not lose the others
                log.warning("osi_blk: closing %s: %s", u.backend.path, e)



def create(ctx: DeviceContext) -> OsiBlk:
    """The ablk device with the machine's blkdevs. BlockError (a disk that cannot be
    opened, a lock held by another molpy ...) propagates: the CLI prints it as one line."""
    specs = list(ctx.config.blkdevs)
    if not specs:                      # still served: the guest learns there are no disks
        return OsiBlk(ctx, [])
    units = open_units(specs, ctx.config.cow_dir, ctx.config.inspect_only)
    blk = OsiBlk(ctx, units, io_errors=(OSError, BlockError))
    if ctx.config.session_file and not ctx.config.session_readonly and not ctx.config.inspect_only:
        blk.follow_disks()
    return blk

