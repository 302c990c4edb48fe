"""Guest memory as gdb addresses it: virtual through the guest's data translation when
MSR[DR] is on, physical otherwise (molpy/mmu.py walks the 750's BATs and page table).

The debugger is privileged: it reads and writes with supervisor rights and ignores page
protection (it may plant data in read-only text), but never reaches outside RAM or an
address with no translation: those are errors, page by page.
"""

from __future__ import annotations

import dataclasses

from ..cpu import CpuState
from ..errors import GuestError
from ..mmu import LOAD, MSR_PR, MmuState, translate

PAGE = 0x1000


class MemoryFault(GuestError):
    """An address gdb named has no translation or is outside RAM."""


def _mmu(state: CpuState) -> MmuState:
    mmu = MmuState.from_cpu_state(state)
    return dataclasses.replace(mmu, msr=mmu.msr & ~MSR_PR)


def _pieces(state: CpuState, ram, addr: int, length: int):
    """(physical address, length) runs covering [addr, addr+length), split at pages."""
    if length < 0 or addr < 0 or addr + length > 1 << 32:
        raise MemoryFault(f"0x{addr:x}+{length} is outside the 32-bit address space")
    mmu = _mmu(state)
    size = len(ram)
    while length:
        n = min(length, PAGE - (addr & (PAGE - 1)))
        t = translate(mmu, ram, addr, LOAD)
        if t.phys is None:
            raise MemoryFault(t.describe())
        if t.phys + n > size:
            raise MemoryFault(f"0x{addr:08x} is outside RAM (physical 0x{t.phys:08x})")
        yield t.phys, n
        addr += n
        length -= n


def read(state: CpuState, ram, addr: int, length: int) -> bytes:
    """Bytes at ``addr`` as the guest's data accesses see them (all or nothing)."""
    return b"".join(bytes(ram[p:p + n]) for p, n in list(_pieces(state, ram, addr, length)))


def write(state: CpuState, ram, addr: int, data: bytes, code_changed) -> None:
    """Write ``data`` at ``addr``; translated code of the range is dropped (``code_changed``
    takes a physical range). Nothing is written unless every page translates."""
    pieces = list(_pieces(state, ram, addr, len(data)))
    pos = 0
    for p, n in pieces:
        ram[p:p + n] = data[pos:pos + n]
        code_changed(p, p + n)
        pos += n
