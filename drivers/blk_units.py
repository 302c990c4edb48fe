"""A disk as the guest sees it (a unit), and opening a machine's blkdevs into units."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from .blk_abi import INFO_BOOT_HINT, INFO_CDROM, INFO_MEDIA_PRESENT, INFO_READ_ONLY, INFO_REMOVABLE
from .block import BlockBackend
from .digests import DiskDigests
from .disks import DiskSpec, open_blkdev


@dataclass
class Unit:
    """One disk as the guest sees it."""

    spec: DiskSpec
    backend: BlockBackend
    flags: int
    dirty: bool = False            # written since the last restore/reset (cow reset)
    boot_flags: int = 0            # the flags as configured (BLESS_DISK moves the boot hint)
    digests: DiskDigests | None = None   # of the disk under every layer, made on first use
    watch: DiskDigests | None = None     # the same, when this unit's writes reach that disk
    unflushed: bool = True         # written since molpy last flushed it (unknown at first)
    flushing: threading.Lock = field(default_factory=threading.Lock)

    def flush(self) -> None:
        """Flush the backend when molpy wrote since the last flush. The flag is cleared
        first: a write that lands meanwhile sets it again. (The digest thread flushes too,
        as write-behind: the lock makes a save wait for a flush under way.)"""
        with self.flushing:
            if self.unflushed:
                self.unflushed = False
                self.backend.flush()

    @property
    def readonly(self) -> bool:
        return bool(self.flags & INFO_READ_ONLY)


def unit_flags(spec: DiskSpec, backend: BlockBackend) -> int:
    """DISK_INFO flags for a blkdev spec (MOL's add_drive)."""
    flags = INFO_MEDIA_PRESENT
    if backend.readonly or spec.readonly or spec.cd:
        flags |= INFO_READ_ONLY
    if spec.cd:
        flags |= INFO_CDROM | INFO_REMOVABLE
    if spec.removable:      # -removable, -drvdisk
        flags |= INFO_REMOVABLE
    if spec.boot:
        flags |= INFO_BOOT_HINT
    return flags


def open_units(specs: list[DiskSpec], cow_dir: str | None, inspect_only: bool = False) -> list[Unit]:
    """Open every blkdev in order; on a failure close the ones already open and re-raise.

    ``inspect_only`` (session verify) opens every disk read-only and makes no overlay."""
    units: list[Unit] = []
    try:
        for spec in specs:
            backend = open_blkdev(spec, cow_dir, inspect_only=inspect_only)
            units.append(Unit(spec=spec, backend=backend, flags=unit_flags(spec, backend)))
    except BaseException:
        for u in units:
            try:
                u.backend.close()
            except OSError:
                pass
        raise
    return units


