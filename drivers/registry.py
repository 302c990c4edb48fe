"""The devices a machine has, in one list ordered by what they are for.

A machine makes its devices in this order, fresh (``create``) or restored from a
session (``restore``), and closes them in the reverse one; the
session layer stores each device's state under its kind, so the order is no part of the
session format. A new device is one module with a ``create(ctx)`` and one line here.
"""

from __future__ import annotations

from typing import Any, Callable

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


def _class_of(module) -> type[Device]:
    """The one Device class a device module defines."""
    for value in vars(module).values():
        if isinstance(value, type) and issubclass(value, Device) and value.kind != "????" \
                and value.__module__ == module.__name__:
            return value
    raise TypeError(f"{module.__name__} defines no Device class")


def device_classes() -> dict[str, type[Device]]:
    """Every device kind a machine may have (for reading sessions without a machine:
    ``molpy session info``)."""
    return {cls.kind: cls for cls in map(_class_of, DEVICES)}


def create_devices(ctx: DeviceContext, *, attach: bool = True) -> list[Device]:
    """The machine's devices, in DEVICES order, each attached to ``ctx`` (``attach=False``:
    stand-ins that only look, for checking a session before a machine exists)."""
    return _made(ctx, [lambda module=module: module.create(ctx) for module in DEVICES], attach)


def restore_devices(ctx: DeviceContext, records: dict[tuple[str, int], Any]) -> list[Device]:
    """Phase two of a resume: each device phase one checked a record for (the devices
    this config has), constructed from the config and that record, in DEVICES order."""
    makers = []
    for cls in map(_class_of, DEVICES):
        key = (cls.kind, cls.instance)
        if key in records:
            makers.append(lambda cls=cls, record=records[key]: cls.restore(ctx, record))
    return _made(ctx, makers, True)


def _made(ctx: DeviceContext, makers: list[Callable[[], Device | None]], attach: bool) -> list[Device]:
    devices: list[Device] = []
    try:
        for make in makers:
            made = make()
            if made is not None:
                devices.append(made)
    except BaseException:
        for dev in reversed(devices):   # one device's bad file must not leak the others' files
            dev.close()
        raise
    if attach:
        for dev in devices:
            dev.attach(ctx)
    return devices
