"""Committing a layer's changes into its disk, driven by the layer's allocation map.

Nothing here knows the overlay format: a layer provides its allocation map
(``block_status``: runs of held sectors and where their bytes lie in its file) and its
commit state (the disk it belongs to or is being committed into, whether a commit is
under way, how far it got). So any layer format added later commits the same way.

Crash safety: the layer records the disk it writes into before it writes anything, the
copy is idempotent (copying the same sectors twice gives the same disk), progress is
recorded after an fsync of the disk, and the layer is emptied only after the final
fsync: killed at any point and run again, a commit ends with disk = old disk + layer.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable

from molpy.files import HostFileError, InUse, in_use, kernel_copy, open_existing

from .block import SECTOR, BlockError, DiskChanged, Identity
from .cow import MAGIC as COW_MAGIC, Overlay
from .raw import RawBackend, identity_of

COPY_CHUNK = 8 << 20              # bytes copied per step
PROGRESS_EVERY = 64 << 20         # progress recorded (after an fsync of the disk) this often


# Layer formats by the magic their files start with -> how to open one. Every format opens
# to an object with the same allocation-map interface (Overlay's), so commit and discard
# work the same way on each; molpy has one format today.
LAYER_FORMATS: dict[bytes, Callable[[str, bool, bool], Overlay]] = {
    COW_MAGIC: lambda path, writable, lock: Overlay.open(path, writable, lock=lock),
}
MAGIC_BYTES = max(len(m) for m in LAYER_FORMATS)


def layer_format(path: str) -> Callable[[str, bool, bool], Overlay]:
    """How to open the layer at ``path``, from the magic its file starts with."""
    try:
        fd = open_existing(path, what="overlay")
    except OSError as e:
        raise BlockError(str(e) if isinstance(e, HostFileError) else f"{path}: {e.strerror}") from None
    try:
        head = os.pread(fd, MAGIC_BYTES, 0)
    except OSError as e:
        raise BlockError(f"{path}: {e.strerror}") from None
    finally:
        os.close(fd)
    for magic, opener in LAYER_FORMATS.items():
        if head.startswith(magic):
            return opener
    if len(head) < MAGIC_BYTES:
        raise BlockError(f"{path}: not a molpy overlay (too short)")
    raise BlockError(f"{path}: not a molpy overlay (bad magic; molpy knows no other layer format)")


def open_layer(path: str, writable: bool = True, lock: bool = True) -> Overlay:
    """The layer at ``path``, opened by its format (LAYER_FORMATS); the format's own open
    checks the file again, so a file replaced after the look at its magic is still refused.
    ``lock=False`` (read-only only): a look that works while a running molpy holds it."""
    return layer_format(path)(path, writable, lock)


def target_problem(started: Identity, now: Identity) -> str:
    """Whether ``now`` is still the disk an interrupted commit was writing into.

    The commit itself changed the disk's modification time, so only what no write of
    the commit can change is compared: the file (device and inode) and its size, and the
    time may not have gone back before the commit started.
    """
    changes = []
    if now.inode != started.inode or now.dev != started.dev:
        changes.append("it is a different file now (inode or device changed)")
    if now.size != started.size:
        changes.append(f"its size changed ({started.size} -> {now.size} bytes)")
    if now.mtime_ns < started.mtime_ns:
        changes.append("its modification time is older than the commit's start")
    return "; ".join(changes)


def base_problem(layer: Overlay) -> str:
    """Why the layer's disk no longer matches it ('' when it does)."""
    target = layer.target()
    try:
        now = identity_of(target.path)
    except OSError as e:
        return f"the disk {target.path} cannot be read: {e.strerror}"
    if layer.committing:
        return target_problem(target, now)
    return "; ".join(target.changes(now))


@dataclass
class LayerInfo:
    path: str
    base: Identity
    sectors: int
    committing: bool
    progress: int
    base_problem: str
    file_bytes: int
    in_use: InUse | None = None         # a running molpy holds the layer: what it holds may change

    @property
    def base_matches(self) -> bool:
        return not self.base_problem


def layer_info(path: str) -> LayerInfo:
    """What the layer holds. Only reads, takes no lock: it works on a layer a running molpy
    holds (like ``qemu-img info -U``) and says so; that molpy may be changing it."""
    try:
        layer = open_layer(path, writable=False, lock=False)
    except BlockError as e:
        holder = _in_use_at(path)
        if holder is None:
            raise
        raise BlockError(f"{e} (it is in use by {holder}: it may have been caught mid-write; try again)") from None
    try:
        return LayerInfo(path=path, base=layer.target(),
                         sectors=sum(e.count for e in layer.block_status()), committing=layer.committing,
                         progress=layer.progress, base_problem=base_problem(layer),
                         file_bytes=os.fstat(layer.fd).st_blocks * 512, in_use=in_use(layer.fd))
    finally:
        layer.close()


def _in_use_at(path: str) -> InUse | None:
    try:
        fd = open_existing(path, what="overlay")
    except OSError:
        return None
    try:
        return in_use(fd)
    finally:
        os.close(fd)


@dataclass
class CommitResult:
    sectors: int
    resumed: bool
    base: str
    wrote: bool = True             # False: the disk was not opened for writing (nothing to commit)


def commit(path: str, *, force: bool = False, progress: Callable[[int, int], None] | None = None,
           ) -> CommitResult:
    """Write the layer's sectors into its disk, then empty the layer.

    The disk is opened first and its identity checked on that open file: a fresh commit
    needs the disk the layer was made for (unchanged), and a commit that was interrupted
    is finished only into the very disk it started writing, whose identity it recorded
    before it wrote anything. ``force`` overrides both. DiskChanged names what changed.

    An empty layer (not an interrupted commit) has nothing to write: neither the disk nor
    the layer is touched, so sessions saved against the disk still resume.
    ``progress(done, total)`` counts sectors.
    """
    layer = open_layer(path)
    try:
        target = layer.target()
        resumed = layer.committing
        extents = layer.block_status(layer.progress if resumed else 0)
        total = sum(e.count for e in extents)
        if not resumed and not total:
            return CommitResult(sectors=0, resumed=False, base=target.path, wrote=False)
        try:
            disk = RawBackend(target.path, readonly=False)
        except BlockError as e:
            raise BlockError(f"{path}: {e}") from None
        try:
            now = disk.identity()
            if resumed:
                problem = target_problem(target, now)
                if problem and not force:
                    raise DiskChanged(f"{path}: an interrupted commit into {target.path} cannot be finished "
                                      f"there: {problem}, so it is not the disk the commit was writing. "
                                      f"Nothing was written; use --force only if you are sure it is", [problem])
            else:
                changes = target.changes(now)
                problem = "; ".join(changes)
                if changes and not force:
                    raise DiskChanged(f"{path}: the disk {target.path} changed since the overlay was made: "
                                      f"{problem}. Committing would write these changes over a different "
                                      f"disk; nothing was written; use --force if you are sure", changes)
            if now.size < target.size:
                raise BlockError(f"disk {target.path} is smaller than when the overlay was made "
                                 f"({now.size} < {target.size} bytes); nothing was written")
            if not resumed or problem:
                layer.begin_commit(now, layer.progress if resumed else 0)
            done = since_sync = 0
            if progress:
                progress(0, total)
            for ext in extents:
                sector = ext.first
                while sector < ext.first + ext.count:
                    n = min(ext.first + ext.count - sector, COPY_CHUNK // SECTOR)
                    kernel_copy(ext.fd, ext.offset + (sector - ext.first) * SECTOR, disk.fd, sector * SECTOR,
                                n * SECTOR)
                    sector += n
                    done += n
                    since_sync += n * SECTOR
                    if since_sync >= PROGRESS_EVERY:
                        disk.flush()
                        layer.record_progress(sector)
                        since_sync = 0
                    if progress:
                        progress(done, total)
            disk.flush()
            layer.end_commit(disk.identity())
        finally:
            disk.close()
        return CommitResult(sectors=total, resumed=resumed, base=target.path)
    finally:
        layer.close()


def discard(path: str) -> tuple[int, str]:
    """Drop a layer: (sectors it held, its disk). The file is removed."""
    layer = open_layer(path)
    try:
        if layer.committing:
            raise BlockError(f"{path}: a commit of this overlay was interrupted; run "
                             f"'molpy cow commit {path}' to finish it (discarding now would leave "
                             f"the disk half-committed)")
        held = sum(e.count for e in layer.block_status())
        os.unlink(path)
        return held, layer.target().path
    finally:
        layer.close()
