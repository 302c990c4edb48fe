"""The 750's address translation (BATs, segments, hashed page table), walked on the host.

Unicorn translates guest addresses itself but tells the host neither why an instruction
fetch failed (ISI's SRR1 reason) nor where a virtual address lives: uc_mem_read reads
*physical* RAM. molpy needs both: ISI's reason bits and the instruction word behind a
virtual PC (program exceptions, alignment, fault reports). This walker follows the
32-bit PowerPC architecture as the 750 implements it, reads page tables from guest RAM without ever writing them (no R/C bit
updates) and never raises: a table outside RAM is just "no translation".
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

MASK = 0xFFFFFFFF
MSR_PR = 0x4000
MSR_IR = 0x20
MSR_DR = 0x10
MSR_LE = 0x1

FETCH = "fetch"
LOAD = "load"
STORE = "store"

# Reason bits: SRR1 for an ISI, DSISR for a DSI (PowerPC PEM, chapter 6).
NO_TRANSLATION = 0x40000000
PROTECTION = 0x08000000
FETCH_FORBIDDEN = 0x10000000        # ISI: no-execute or direct-store segment
DIRECT_STORE = 0x04000000           # DSI: direct-store segment
STORE_BIT = 0x02000000              # DSI: the access was a store

_PTEG = struct.Struct(">16I")


@dataclass(frozen=True)
class MmuState:
    """What translation depends on: MSR, SDR1, SR0-15 and the eight BAT pairs."""

    msr: int
    sdr1: int
    sr: tuple[int, ...]
    ibat: tuple[tuple[int, int], ...]      # (upper, lower) x 4
    dbat: tuple[tuple[int, int], ...]

    @classmethod
    def from_cpu_state(cls, s) -> "MmuState":
        """From a :class:`molpy.cpu.CpuState` (a fault report's registers)."""
        return cls(msr=s.msr, sdr1=s.spr["SDR1"], sr=tuple(s.sr),
                   ibat=tuple((s.spr[f"IBAT{i}U"], s.spr[f"IBAT{i}L"]) for i in range(4)),
                   dbat=tuple((s.spr[f"DBAT{i}U"], s.spr[f"DBAT{i}L"]) for i in range(4)))


@dataclass(frozen=True)
class Translation:
    ea: int
    phys: int | None          # None: no translation
    reason: int = 0           # when phys is None: SRR1 (fetch) or DSISR (data) reason bits
    via: str = ""             # "real mode", "IBAT0", "page table", or why it failed

    def describe(self) -> str:
        if self.phys is None:
            return f"0x{self.ea:08x} has no translation ({self.via})"
        if self.via == "real mode":
            return f"0x{self.ea:08x} (real mode)"
        return f"0x{self.ea:08x} -> physical 0x{self.phys:08x} ({self.via})"


def _allowed(pp: int, key: int, access: str) -> bool:
    """Page protection: PP with the segment key (Ks or Kp) selected by MSR[PR]."""
    if key == 0:
        return access != STORE or pp != 3
    if pp == 0:
        return False
    return access != STORE or pp == 2


def translate(state: MmuState, ram, ea: int, access: str) -> Translation:
    """Translate ``ea`` as the 750 would for ``access``; ``ram`` is guest RAM (bytes-like)."""
    ea &= MASK
    data = access != FETCH
    if not state.msr & (MSR_DR if data else MSR_IR):
        return Translation(ea, ea, 0, "real mode")
    store = STORE_BIT if access == STORE else 0
    fail_protect = (PROTECTION | store) if data else PROTECTION
    user = bool(state.msr & MSR_PR)
    side = "D" if data else "I"
    for i, (upper, lower) in enumerate(state.dbat if data else state.ibat):
        if not upper & (1 if user else 2):          # Vp / Vs
            continue
        # BL masks the effective address (BEPI bits under the mask never match) and BRPN
        # (its bits under the mask are ignored), as Unicorn's 750 does
        keep = ~(((upper >> 2) & 0x7FF) << 17) & 0xFFFE0000
        if (ea & keep) != (upper & 0xFFFE0000):
            continue
        pp = lower & 3
        if pp == 0 or (access == STORE and pp != 2):
            return Translation(ea, None, fail_protect, f"{side}BAT{i} protection")
        return Translation(ea, (lower & keep) | (ea & ~keep & MASK), 0, f"{side}BAT{i}")
    sr = state.sr[ea >> 28]
    if sr & 0x80000000:
        return Translation(ea, None, (DIRECT_STORE | store) if data else FETCH_FORBIDDEN,
                           f"SR{ea >> 28} is a direct-store segment")
    if not data and sr & 0x10000000:
        return Translation(ea, None, FETCH_FORBIDDEN, f"SR{ea >> 28} is no-execute")
    vsid = sr & 0x00FFFFFF
    page = (ea >> 12) & 0xFFFF
    key = (sr >> 29) & 1 if user else (sr >> 30) & 1
    primary = ((vsid & 0x7FFFF) ^ page) & 0x7FFFF
    sdr1 = state.sdr1
    org, hmask = sdr1 & 0xFFFF0000, sdr1 & 0x1FF
    for h, hsh in ((0, primary), (1, ~primary & 0x7FFFF)):
        pteg = ((org & 0xFE000000) | ((((org >> 16) & 0x1FF) | ((hsh >> 10) & hmask)) << 16)
                | ((hsh & 0x3FF) << 6))
        if pteg + 64 > len(ram):
            continue
        words = _PTEG.unpack_from(ram, pteg)
        want = 0x80000000 | (vsid << 7) | (h << 6) | (page >> 10)
        for j in range(0, 16, 2):
            if words[j] == want:
                pte1 = words[j + 1]
                if not _allowed(pte1 & 3, key, access):
                    return Translation(ea, None, fail_protect, "page protection")
                return Translation(ea, (pte1 & 0xFFFFF000) | (ea & 0xFFF), 0,
                                   f"page table, {'secondary' if h else 'primary'} hash")
    return Translation(ea, None, NO_TRANSLATION | (store if data else 0), "no PTE in the page table")


def read_word(state: MmuState, ram, ea: int, access: str = FETCH) -> tuple[int | None, Translation]:
    """The word at virtual ``ea`` (None: no translation, or outside RAM).

    An instruction is read as the CPU fetches it: byte-swapped in little-endian mode
    (MSR[LE]), as Unicorn's 750 does.
    """
    t = translate(state, ram, ea, access)
    if t.phys is None or t.phys + 4 > len(ram):
        return None, t
    little = access == FETCH and state.msr & MSR_LE
    return int.from_bytes(ram[t.phys:t.phys + 4], "little" if little else "big"), t
