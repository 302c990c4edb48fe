"""From a blkdev line to a backend stack: a raw disk, or a cow overlay on a read-only one."""

from __future__ import annotations

import os
from typing import Callable, Protocol

from .block import BlockBackend, BlockError
from .demo_disk import ensure_demo_disk
from .formats import probe_fd, refusal_for
from .overlays import open_overlay_for
from .raw import RawBackend


class DiskSpec(Protocol):
    """What the block layer and osi_blk need of a blkdev line (molpy.molrc's BlkdevSpec
    is one): the drivers own this protocol, the config layer fills it."""

    path: str
    readonly: bool           # -ro (the default): the guest may not write
    cow: bool                # -cow: the guest's writes go to an overlay, the disk is never written
    boot: bool               # -boot: the boot hint
    cd: bool                 # -cd: a read-only removable CD-ROM
    removable: bool          # -removable, -drvdisk
    source: str              # FILE:LINE of its blkdev line, for messages
    raw: bool                # -raw: attach its bytes as they are, even a container image
    flags: tuple[str, ...]   # its flag words as given, for --check and the gdb monitor


def readonly_without_cow(path: str) -> str:
    """The read-only session recipe's guard: its disks must not change."""
    return (f"disk {path} is writable without -cow, but the session is read-only (session_readonly: "
            f"yes): the guest's writes would change the disk and the session would never resume "
            f"again; add -cow to its blkdev (or use -ro)")


def open_blkdev(spec: DiskSpec, cow_dir: str | None, *, inspect_only: bool = False,
                say: Callable[[str], None] | None = None) -> BlockBackend:
    """The backend a ``blkdev`` spec asks for. ``inspect_only`` (session verify) opens the
    disk read-only and makes (or moves) no file, the demo disk included. A container image
    (qcow2, a molpy overlay ...) is refused unless the line says -raw (drivers/formats.py):
    the probe reads the descriptor just opened, so what is checked is what is served."""
    if not inspect_only:
        ensure_demo_disk(spec.path)
    if not os.path.exists(spec.path):
        raise BlockError(f"disk {spec.path} does not exist (blkdev at {spec.source or 'the config'}; "
                         f"make one with 'molpy img create {spec.path} SIZE')")
    disk = RawBackend(spec.path, readonly=spec.readonly or spec.cow or inspect_only)
    try:
        refused = refusal_for(spec, probe_fd(disk.fd))
        if refused:
            raise BlockError(refused)
        if spec.cow and not inspect_only:
            return open_overlay_for(disk, cow_dir, say=say)
    except BaseException:
        disk.close()
        raise
    return disk
