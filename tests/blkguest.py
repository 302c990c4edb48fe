"""Helpers for the osi_blk tests: the blk test guest, its sector pattern and checksum."""

from __future__ import annotations

import os

import numpy as np

from molpy.boot import bundled_guest
from molpy.config import BlkdevSpec
from molpy.console import BufferConsole
from molpy.machine import Machine, MachineConfig, Stop

SECTOR = 512


def pattern(lba: int, count: int, seed: int) -> bytes:
    """What the guest's ``w``/``W`` writes: word j of sector s is seed*0x9E3779B1 ^ s<<8 ^ j."""
    j = np.arange(SECTOR // 4, dtype=np.uint32)
    rows = [(np.uint32((seed * 0x9E3779B1) & 0xFFFFFFFF) ^ np.uint32(((lba + i) << 8) & 0xFFFFFFFF) ^ j)
            for i in range(count)]
    return np.concatenate(rows).astype(">u4").tobytes()


def demo_sum(data: bytes) -> str:
    """The guests' checksum: a = sum of big-endian words, b = sum of the running a (mod 2^32)."""
    a = np.cumsum(np.frombuffer(data, dtype=">u4").astype(np.uint64))
    return f"{int(a.sum()) & 0xFFFFFFFF:08x}{int(a[-1]) & 0xFFFFFFFF:08x}"


def run_blk(disks: list[BlkdevSpec], commands: list[str], cow_dir: str | None = None,
            ram_mib: int = 16) -> list[str]:
    """Boot the blk guest with ``disks``, feed it ``commands``, return its reply lines."""
    if cow_dir:
        os.makedirs(cow_dir, exist_ok=True)
    m = Machine(MachineConfig(ram_mib=ram_mib, bootfile=str(bundled_guest("blk")), blkdevs=disks,
                              cow_dir=cow_dir), BufferConsole("".join(c + "\n" for c in commands + ["q 0"]).encode()))
    try:
        m.boot()
        stop = m.run(seconds=60)
        assert stop is Stop.EXIT, (stop, m.fault and m.fault.report())
        lines = bytes(m.frontend.output).decode().splitlines()
    finally:
        m.close()
    assert lines[0] == "blk ready"
    return lines[1:]
