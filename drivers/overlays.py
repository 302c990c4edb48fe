"""The overlay's life in cow_dir: named after its disk, one per running molpy, the
previous run's kept aside as ``.prev`` when it holds changes."""

from __future__ import annotations

import hashlib
import os
import sys
from typing import Callable

from molpy.files import data_dir

from .block import BlockBackend, BlockError, DiskInUse
from .cow import CowBackend, Overlay

MAX_INSTANCES = 64               # overlays of one disk in use at once (one per running molpy)


def overlay_name(base_path: str, slot: int = 0) -> str:
    """``NAME-HASH.cow``: named after the disk, unique per absolute path; ``NAME-HASH.N.cow``
    for the Nth molpy running on the same -cow disk at the same time."""
    path = os.path.abspath(base_path)
    tag = hashlib.sha256(path.encode()).hexdigest()[:8]
    return f"{os.path.basename(path)}-{tag}{f'.{slot}' if slot else ''}.cow"


def open_overlay_for(base: BlockBackend, cow_dir: str | None, *,
                     say: Callable[[str], None] | None = None) -> CowBackend:
    """A fresh, empty overlay on ``base`` in ``cow_dir``; an old one with changes goes to .prev.

    When another molpy runs on the same -cow disk (the read-only session recipe resumed
    in several processes), this run takes the next free overlay name and says which.
    A cow_dir the molrc names must exist; only molpy's own data folder is created.
    """
    if cow_dir is None:
        cow_dir = data_dir()
    elif not os.path.isdir(cow_dir):
        raise BlockError(f"cow_dir {cow_dir} does not exist or is not a folder; create it first")
    say = say or _say
    busy: list[str] = []
    for slot in range(MAX_INSTANCES):
        path = os.path.join(cow_dir, overlay_name(base.path, slot))
        try:
            if os.path.lexists(path):
                _retire(path, say)
            backend = CowBackend(base, Overlay.create(path, base.identity()))
        except DiskInUse as e:
            busy.append(f"{os.path.basename(path)} (pid {e.pid})" if e.pid else os.path.basename(path))
            continue
        if busy:
            say(f"molpy: disk {base.path}: another molpy uses {busy[0]}; this run's changes go to {path}")
        return backend
    raise BlockError(f"disk {base.path}: {MAX_INSTANCES} molpy processes already run on it with -cow")


def _retire(path: str, say: Callable[[str], None]) -> None:
    """Move the previous run's overlay out of the way, keeping it when it holds anything.

    Whatever is at the name (a damaged overlay, a symlink, a FIFO) is moved aside by
    rename, which never follows it; only a valid, empty overlay is removed. A valid
    overlay is removed or renamed while its lock is held, and only if the name still
    points at it: another molpy starting at the same moment may just have put its own
    new overlay there. An overlay locked by a running molpy raises DiskInUse.
    """
    try:
        seen = os.lstat(path)
    except FileNotFoundError:
        return
    try:
        ov = Overlay.open(path, nofollow=True)
    except DiskInUse:
        raise
    except BlockError as e:
        _move_aside(path, (seen.st_dev, seen.st_ino), f"it could not be read ({e})", say)
        return
    try:
        st = os.fstat(ov.fd)
        if ov.has_data() or ov.committing:
            _move_aside(path, (st.st_dev, st.st_ino), "it holds changes", say)
        elif _still_there(path, (st.st_dev, st.st_ino)):
            os.unlink(path)
    finally:
        ov.close()


def _still_there(path: str, key: tuple[int, int]) -> bool:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    return (st.st_dev, st.st_ino) == key


def _move_aside(path: str, key: tuple[int, int], reason: str, say: Callable[[str], None]) -> None:
    if not _still_there(path, key):
        raise DiskInUse(f"overlay {path} was just replaced by another molpy", None)
    prev = path + ".prev"
    replaced = " (replacing the older one)" if os.path.lexists(prev) else ""
    try:
        os.replace(path, prev)
    except OSError as e:
        raise BlockError(f"overlay {path}: cannot move it aside: {e.strerror}") from None
    say(f"molpy: the previous run's overlay {os.path.basename(path)}: {reason}; "
        f"kept as {prev}{replaced} ('molpy cow commit' or 'molpy cow discard' it)")


def _say(text: str) -> None:
    print(text, file=sys.stderr)
