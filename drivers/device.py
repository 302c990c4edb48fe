"""The one interface between devices, the machine and the session layer.

A device is one module in ``molpy.drivers`` that defines one Device class and
``create(ctx)`` returning it (or None when the config has no such device), listed in
drivers/registry.py (the one list of a machine's devices, ordered by meaning). A
device sees the machine only through its :class:`DeviceContext`; it registers its OSI
selectors in ``attach`` and takes part in sessions through a few small methods; the
session layer stores what ``save_state`` returns as an opaque chunk tagged with the
device's four-letter ``kind``, its ``instance`` id and its state ``version`` (MOL's
session.c model, QEMU's versioning rule).

A resume has two phases (molpy/restore.py): ``read_state`` turns each chunk into the
device's typed record and ``check_fit`` checks it on a stand-in that opens nothing for
writing; then ``restore(ctx, record)`` constructs the device in its saved state.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, ClassVar

from molpy.files import data_dir
from molpy.emulation.state import StateError
from molpy.errors import ConfigError, SessionError

if TYPE_CHECKING:  # pragma: no cover
    from molpy.console import Frontend
    from molpy.emulation.memory import GuestMemory
    from molpy.emulation.session import BulkRef
    from molpy.emulation.session_write import Bulk, Later
    from molpy.machine import MachineConfig
    from molpy.osi import OsiDispatcher


class StateMismatch(SessionError):
    """A saved state no longer fits the host (a disk changed): resume must refuse.

    The message names what changed and what to do; the session layer shows it as is.
    """


class DeviceError(ConfigError):
    """A device cannot be made from its configuration (a bad file it was given).

    The message names the file and the problem; the CLI shows it as one line.
    """


@dataclass
class DeviceContext:
    """All a device may use of the machine it belongs to, and nothing more.

    ``memory``: guest RAM (bounds-checked access); ``osi``: register, unregister and ask
    about OSI selectors; ``code_changed(begin, end)``: after the device wrote guest RAM
    that may hold code; ``frontend``: the console (keys, output, stop requests);
    ``request_exit(code)``: the guest asked to exit; ``config``: the machine's settings;
    ``data_dir()``: molpy's own folder; ``protected_files()``: the run's disks, overlays
    and session by (device, inode), which no file molpy writes may be; ``end_slice()``:
    end the guest's slice after this OSI call (interrupts are taken between slices).
    """

    config: "MachineConfig"
    memory: "GuestMemory"
    osi: "OsiDispatcher"
    frontend: "Frontend"
    code_changed: Callable[[int, int], None]
    request_exit: Callable[[int], None]
    data_dir: Callable[[], str] = data_dir
    # (device, inode) -> what it is, for the files of the run molpy must never write over
    protected_files: Callable[[], dict] = dict
    end_slice: Callable[[], None] = lambda: None

    def stop_requested(self) -> bool:
        """Ctrl-C, SIGTERM or a quit is pending (F12 is not: a save never cuts I/O short)."""
        request = self.frontend.request
        return request is not None and request != "save"


class Device:
    """Base class: a device with no state and no selectors.

    State versions follow QEMU's rule: ``save_state`` writes ``version``; a session's
    chunk records the version it was written with, and ``read_state`` gets it; a device
    loads every version from ``min_version`` to ``version`` (the session layer refuses
    others before the device sees them, naming the device and both versions).
    """

    kind: ClassVar[str] = "????"   # four ASCII letters, the session chunk type
    version: ClassVar[int] = 1     # the state version save_state writes
    min_version: ClassVar[int] = 1  # the oldest state version this molpy still loads
    instance: int = 0              # tells apart several devices of one kind

    def attach(self, ctx: DeviceContext) -> None:
        """Register OSI selectors with ``ctx.osi``."""

    def save_state(self) -> bytes:
        """The device's state as bytes; stored opaque in the session."""
        return b""

    def save_later(self) -> "bytes | Later":
        """What the session stores for the device: ``save_state()``, or a Later when part
        of it takes time (disk digests) and can be finished while the RAM is written."""
        return self.save_state()

    def save_bulk(self) -> list["Bulk"]:
        """Data too big to hold in memory (a -cow overlay's contents), streamed into the
        session as chunks of their own; called right after ``save_state``."""
        return []

    def restore_bulk(self, refs: dict[tuple[str, int], "BulkRef"]) -> None:
        """Where this device's bulk chunks lie in the session file (called on a stand-in
        before ``check_fit``; the file stays open while the machine lives)."""

    @classmethod
    def read_state(cls, data: bytes, version: int) -> Any:
        """Phase one of a resume: ``save_state``'s bytes of ``version`` as this device's
        typed state record, checked as far as no machine is needed.

        The bytes come from a file that may have been crafted: check every field and
        raise StateError naming it rather than keep a value out of range. Any other
        exception is a molpy bug, reported as one.
        """
        if data:
            raise StateError(f"{cls.kind} has no state, but the session holds {len(data)} bytes for it")
        return None

    @classmethod
    def check_state(cls, data: bytes, version: int) -> None:
        """Raise StateError naming the field when saved state cannot be loaded."""
        cls.read_state(data, version)

    def check_fit(self, record: Any) -> Any:
        """Phase one, on a stand-in made from the config (disks opened read-only, attached
        to nothing): raise when the record could not be restored on this host, changing
        nothing and writing no file (StateError when the saved state is damaged,
        StateMismatch when the host no longer fits it). Returns what ``restore`` builds
        the device from (the record, or the record with what the check found)."""
        return record

    @classmethod
    def restore(cls, ctx: DeviceContext, record: Any) -> "Device":
        """Phase two of a resume, a constructor: the device made from the config and the
        record ``check_fit`` returned, in its saved state (and the state ``reset`` goes
        back to). A device without state is made as on a fresh start."""
        return cls(ctx)

    def verify_state(self, data: bytes, version: int, deep: bool = False) -> list[str]:
        """Problems that would stop a resume from this state (``session verify``).

        ``deep`` asks for the expensive checks (full content digests of disks).
        """
        try:
            self.check_state(data, version)
        except ValueError as e:
            return [str(e)]
        return []

    @classmethod
    def describe(cls, data: bytes, version: int) -> str:
        """One line about a saved state for ``molpy session info`` ('' when there is nothing to say)."""
        return ""

    def reset(self) -> None:
        """Go back to the state the device was restored to (Machine.reset)."""

    # -- optional capabilities (the defaults do nothing) --

    notes: "list[str] | tuple[str, ...]" = ()
    """Lines for the user after a resume (a disk accepted by a content check)."""

    units: "list | tuple" = ()
    """The disks the device serves, in unit order (osi_blk's Unit records)."""

    def open_files(self) -> list[tuple[int, str]]:
        """(descriptor, what it is) of each file the device has open that no file molpy
        writes may be (disks, overlays)."""
        return []

    def redraw(self) -> None:
        """After a resume: show the user again what the guest last showed (its prompt)."""

    def close(self) -> None:
        """Release files and locks."""


def check_version(kind: str, cls: type[Device] | None, version: int) -> str:
    """Why a chunk of ``version`` cannot be loaded ('' when it can). Format-2 session files
    had no versions (0): every device wrote its version 1 then."""
    if cls is None:
        return f"the session holds state for a device {kind!r} this molpy does not have"
    version = version or 1
    if not cls.min_version <= version <= cls.version:
        return (f"device {kind}: saved state version {version} is not supported (this molpy loads "
                f"versions {cls.min_version} to {cls.version})")
    return ""
