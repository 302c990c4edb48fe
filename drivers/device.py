"""The one interface between devices, the machine and the session layer.

A device is one module in ``molpy.drivers`` that defines ``create(machine)``
returning a Device, a list of them, or None. The machine finds those modules by
itself, so adding a device touches no other module. Devices register their OSI
selectors in ``attach`` and take part in sessions through four small methods; the
session layer stores what ``save_state`` returns as an opaque chunk tagged with
the device's four-letter ``kind`` and its ``instance`` id (MOL's session.c model).
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:  # pragma: no cover
    from molpy.emulation.session import Bulk, BulkRef
    from molpy.machine import Machine


class StateMismatch(Exception):
    """A saved state no longer fits the host (a disk changed): resume must refuse.

    The message names what changed and what to do; the session layer shows it as is.
    """


class DeviceError(Exception):
    """A device cannot be made from its configuration (a bad file it was given).

    The message names the file and the problem; the CLI shows it as one line.
    """


class Device:
    """Base class: a device with no state and no selectors."""

    kind: ClassVar[str] = "????"   # four ASCII letters, the session chunk type
    instance: int = 0              # tells apart several devices of one kind

    def attach(self, machine: "Machine") -> None:
        """Register OSI selectors with ``machine.osi``."""

    def prepare_save(self) -> str | None:
        """None when a save may go ahead now, else the reason it must wait."""
        return None

    def save_state(self) -> bytes:
        """The device's state as bytes; stored opaque in the session."""
        return b""

    def save_bulk(self) -> list["Bulk"]:
        """Data too big to hold in memory (a -cow overlay's contents), streamed into the
        session as chunks of their own; called right after ``save_state``."""
        return []

    def restore_bulk(self, refs: dict[tuple[str, int], "BulkRef"]) -> None:
        """Where this device's bulk chunks lie in the session file (called before
        ``load_state``; the file stays open while the machine lives)."""

    def load_state(self, data: bytes) -> None:
        """Rebuild the device's state from ``save_state``'s bytes (session resume).

        The bytes come from a file that may have been crafted: check every field and
        raise ValueError (or StateMismatch) rather than use a value out of range.
        """

    def verify_state(self, data: bytes, deep: bool = False) -> list[str]:
        """Problems that would stop ``load_state(data)`` from working (``session verify``).

        ``deep`` asks for the expensive checks (full content digests of disks).
        """
        return []

    def reset(self) -> None:
        """Go back to the state last loaded (Machine.reset)."""

    def close(self) -> None:
        """Release files and locks."""


def create_devices(machine: "Machine") -> list[Device]:
    """Every device the modules of this package create for ``machine``, in module order."""
    import molpy.drivers as package

    devices: list[Device] = []
    try:
        for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
            if info.name.startswith("_") or info.name == "device":
                continue
            module = importlib.import_module(f"{package.__name__}.{info.name}")
            factory = getattr(module, "create", None)
            if factory is None:
                continue
            made = factory(machine)
            if made is None:
                continue
            devices.extend(made if isinstance(made, list) else [made])
    except BaseException:
        for dev in reversed(devices):   # one device's bad file must not leak the others' files
            dev.close()
        raise
    for dev in devices:
        dev.attach(machine)
    return devices
