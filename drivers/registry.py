"""The devices a machine has, in one list ordered by what they are for.

A machine makes its devices in this order (and closes them in the reverse one); the
session layer stores each device's state under its kind, so the order is no part of the
session format. A new device is one module with a ``create(ctx)`` and one line here.
"""

from __future__ import annotations

from . import boot_helper, console, devtree, keyboard, misc, nvram, osi_blk, pseudofs
from .device import Device, DeviceContext

DEVICES = (
    console,        # the guest's console and log: output first, so every later device can report
    keyboard,       # the ADB key queue the console's keys also feed
    misc,           # time, exit, sleep, debugger break, framebuffer info
    boot_helper,    # BOOT_HELPER: the strings and sizes a boot loader asks for
    devtree,        # MOL's device tree for the firmware (when the molrc names one)
    nvram,          # the NVRAM image
    osi_blk,        # the disks
    pseudofs,       # host files published to the guest
)


def device_classes() -> dict[str, type[Device]]:
    """Every device kind a machine may have (for reading sessions without a machine:
    ``molpy session info``)."""
    found: dict[str, type[Device]] = {}
    for module in DEVICES:
        for value in vars(module).values():
            if isinstance(value, type) and issubclass(value, Device) and value.kind != "????" \
                    and value.__module__ == module.__name__:
                found[value.kind] = value
    return found


def create_devices(ctx: DeviceContext, *, attach: bool = True) -> list[Device]:
    """The machine's devices, in DEVICES order, each attached to ``ctx`` (``attach=False``:
    stand-ins that only look, for checking a session before a machine exists)."""
    devices: list[Device] = []
    try:
        for module in DEVICES:
            made = module.create(ctx)
            if made is None:
                continue
            devices.extend(made if isinstance(made, list) else [made])
    except BaseException:
        for dev in reversed(devices):   # one device's bad file must not leak the others' files
            dev.close()
        raise
    if attach:
        for dev in devices:
            dev.attach(ctx)
    return devices
