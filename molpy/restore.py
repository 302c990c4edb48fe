"""Phase one of a resume: the whole session checked against this config and these disks
before any device of the machine exists.

A resume that is refused must change nothing: no -cow overlay made or moved aside, no
NVRAM image or demo disk created, no digest cached, the session file not marked used.
So the saved state is first checked on stand-ins: the config's devices made with every
disk opened read-only and attached to nothing (``inspect_devices``), each device's chunk
read into its typed record (``Device.read_state``) and checked on its stand-in
(``Device.check_fit``). Only then does ``Machine.from_session`` build the machine, each
device constructed from the config and its record (``Device.restore``, phase two), as
Firecracker restores a snapshot.
``molpy session verify`` and ``molpy run --check`` ask the same stand-ins.
"""

from __future__ import annotations

import dataclasses
import os
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Iterator

from .console import BufferConsole
from .drivers.device import Device, DeviceContext, StateMismatch, check_version
from .drivers.registry import create_devices
from .errors import SessionError

if TYPE_CHECKING:  # pragma: no cover
    from .emulation.session import SessionFile
    from .machine import MachineConfig


class _NoRam:
    """RAM of a given size that a stand-in may ask the size of, and nothing more."""

    def __init__(self, size: int) -> None:
        self.size = size


def missing_disks(config: "MachineConfig") -> list[str]:
    """The config's disks that are not there (a resume must not make the demo disk anew)."""
    return [f"disk {spec.path} is missing (blkdev at {spec.source or 'the config'})"
            for spec in config.blkdevs if not os.path.lexists(spec.path)]


@contextmanager
def inspect_devices(config: "MachineConfig", ram_size: int) -> Iterator[list[Device]]:
    """The config's devices as stand-ins that only look: disks opened read-only, no
    overlay, NVRAM image or demo disk made, no selector registered; closed on leaving."""
    look = dataclasses.replace(config, ram_mib=ram_size >> 20, inspect_only=True)
    ctx = DeviceContext(config=look, memory=_NoRam(ram_size), osi=None, frontend=BufferConsole(),
                        code_changed=lambda begin, end: None, request_exit=lambda code: None)
    devices = create_devices(ctx, attach=False)
    try:
        yield devices
    finally:
        for dev in reversed(devices):
            dev.close()


def chunk_problems(devices: list[Device], chunks: dict, versions: dict) -> list[str]:
    """Devices the session holds no state for, or state in a version this molpy cannot load."""
    problems = []
    missing = [f"{d.kind}/{d.instance}" for d in devices if (d.kind, d.instance) not in chunks]
    if missing:
        problems.append(f"it has no state for device {', '.join(missing)}")
    for dev in devices:
        if (dev.kind, dev.instance) in chunks:
            problem = check_version(dev.kind, type(dev), versions.get((dev.kind, dev.instance), 0))
            if problem:
                problems.append(problem)
    return problems


def check_fits(session: "SessionFile", config: "MachineConfig", where: str) -> dict[tuple[str, int], Any]:
    """Phase one: every device's saved state read into its record and checked against
    ``config`` and its disks; the records phase two constructs the devices from. Raises
    SessionError (missing or unsupported state), StateMismatch (a disk changed, other
    disks) or StateError (damaged state)."""
    return fit_records(config, session.ram_size, session.device_chunks(), session.versions(),
                       session.bulk_chunks(), where)


def fit_records(config: "MachineConfig", ram_size: int, chunks: dict, versions: dict, bulk: dict,
                where: str) -> dict[tuple[str, int], Any]:
    """``check_fits`` on chunks already read (kind, instance -> bytes)."""
    missing = missing_disks(config)
    if missing:
        raise StateMismatch(f"{missing[0]}; put it back, or start with --fresh")
    with inspect_devices(config, ram_size) as devices:
        problems = chunk_problems(devices, chunks, versions)
        if problems:
            raise SessionError(f"session {where}: {problems[0]}")
        records = {}
        for dev in devices:
            key = (dev.kind, dev.instance)
            dev.restore_bulk(bulk)
            records[key] = dev.check_fit(type(dev).read_state(chunks[key], versions.get(key, 0) or 1))
    return records
