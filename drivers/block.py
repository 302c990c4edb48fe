"""The block-backend protocol: one interface for every kind of disk (QEMU's BlockDriver idea).

A backend serves byte ranges of a disk to and from buffers (memoryviews of guest RAM,
so no copies), flushes, knows its size and the identity of the disk under it, and
reports which sectors it holds itself above that disk (its allocation map). Formats
stack on protocols: ``RawBackend`` (drivers/raw.py) is a file or block device;
``CowBackend`` (drivers/cow.py) is an overlay format that keeps its own data in a child
RawBackend and sends its misses to a base backend. osi_blk, sessions and commit know
only this protocol; they never ask which kind of backend they hold.

Every backend refuses an offset outside [0, size), whoever its caller is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol

from molpy.errors import DiskError

SECTOR = 512


class BlockError(DiskError):
    """A disk that cannot be used as asked; the message names it and says why."""


class DiskInUse(BlockError):
    """A disk or overlay locked by another molpy (``pid`` when known)."""

    def __init__(self, message: str, pid: int | None) -> None:
        super().__init__(message)
        self.pid = pid


class DiskChanged(BlockError):
    """A disk is not the one a marker or an overlay recorded (``changes`` says how)."""

    def __init__(self, message: str, changes: list[str]) -> None:
        super().__init__(message)
        self.changes = changes


@dataclass(frozen=True)
class Identity:
    """What a disk-sync marker and a cow overlay remember about a disk."""

    path: str
    size: int
    inode: int
    mtime_ns: int
    dev: int = 0

    def changes(self, now: "Identity") -> list[str]:
        """How the disk ``now`` differs from this recorded identity (empty: the same disk,
        unchanged). The one comparison every marker and overlay uses."""
        changes = []
        if now.size != self.size:
            changes.append(f"its size changed ({self.size} -> {now.size} bytes)")
        if now.inode != self.inode or now.dev != self.dev:
            changes.append("it is a different file now (inode or device changed)")
        if now.mtime_ns != self.mtime_ns:
            changes.append("it was modified since")
        return changes


@dataclass(frozen=True)
class Extent:
    """A run of sectors a layer holds above its base (QEMU's block status): where its bytes
    lie in the layer's own file, so a commit can copy them in the kernel."""

    first: int                     # first sector
    count: int                     # sectors
    fd: int                        # the layer's file
    offset: int                    # byte offset of ``first`` in that file


Reader = Callable[[int, memoryview], int]     # (position, buffer) -> bytes read


class BlockBackend(Protocol):
    """What every disk molpy serves provides."""

    path: str                      # the disk the guest's data lives on (a layer's base)
    size: int                      # bytes the guest sees
    readonly: bool
    layered: bool                  # writes go to a layer above the disk, never to the disk

    def readinto(self, offset: int, buf: memoryview) -> None: ...
    def write(self, offset: int, buf: memoryview) -> None: ...
    def flush(self) -> None: ...

    def identity(self) -> Identity:
        """The disk under every layer: what a session's disk-sync marker records."""

    def disk(self) -> "BlockBackend":
        """The bottom backend (the disk itself), e.g. for a digest of its contents."""

    def block_status(self, start: int = 0) -> list[Extent]:
        """The sectors from ``start`` on that this backend holds above its disk."""

    # -- the changes a layer holds, as part of a session (empty for a plain disk) --
    def changes_length(self) -> int:
        """Bytes ``save_changes`` writes; 0 when the backend holds no changes."""

    def save_changes(self, fd: int, offset: int) -> int:
        """Stream the changes into a file at ``offset`` (bounded memory); their CRC-32."""

    def load_changes(self, read: Reader, length: int, crc: int | None) -> None:
        """Hold exactly the changes ``save_changes`` wrote (checked; refused whole)."""

    def drop_changes(self) -> None:
        """Hold no changes any more."""

    def close(self) -> None: ...


def check_range(offset: int, length: int, size: int, what: str) -> None:
    """Every backend refuses a negative or out-of-range offset, whoever its caller is."""
    if offset < 0 or length < 0 or offset + length > size:
        raise BlockError(f"{what}: bytes {offset}..{offset + length} are outside the disk "
                         f"(0..{size})")
