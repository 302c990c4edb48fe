"""The CPU's special registers in microseconds, through Unicorn's CPU context image.

Unicorn's register API does not reach SRR0/SRR1, DAR, DSISR, the time base, the
decrementer, the segment registers or the BATs. cpu.py reaches them with a host stub
(~200 us for all of them, and never from inside a hook: a nested emu_start would reset
the stop request of the running slice). ``uc_context_save``/``uc_context_restore`` copy the
CPU's state struct as it is (a memcpy: ~4 us and ~2 us). This module finds where in that
image the SPR array, SR0-15 and the BATs live, once per process, by writing known values
through the stub and looking for them (checked, never assumed: a Unicorn whose layout
differs is refused with a clear error), so exception delivery, the MMU walker and the
time base can read and write those registers between slices, and read them inside a hook.

Only registers that change no cached translation are written this way (SRR0/1, DAR,
DSISR, the time base and the decrementer); the MMU registers are read only.
"""

from __future__ import annotations

import ctypes
import struct
from dataclasses import dataclass

from .cpu import SPR_NAMES, SPR_NUMBERS, Cpu, CpuState, uclib
from .mmu import MmuState
from .engine import EngineError

SRR0, SRR1, DAR, DSISR, DEC, SDR1 = 26, 27, 19, 18, 22, 25
TBL_READ, TBU_READ = 268, 269      # what mftb reads (mttbl/mttbu write 284/285)

_U32 = struct.Struct("=I")        # the image holds host-endian 32-bit target_ulongs
_SRS = struct.Struct("=16I")       # SR0-15
_BATS = struct.Struct("=16I")      # BATnU at words 0-3, BATnL at words 8-11


class LayoutError(EngineError):
    """This Unicorn build keeps its CPU registers somewhere molpy does not find."""


@dataclass(frozen=True)
class Layout:
    spr: int      # offset of spr[0] in the context image
    sr: int       # offset of SR0
    dbat: int     # offset of DBAT0U; DBATnL follow 8 words later
    ibat: int


_layout: Layout | None = None


class CpuEnv:
    """A context image of one engine: ``load()`` it, read or patch it, ``store()`` it back."""

    def __init__(self, cpu: Cpu) -> None:
        self._uch = cpu.uch
        uclib.uc_context_size.restype = ctypes.c_size_t
        self._size = uclib.uc_context_size(self._uch)
        ctx = ctypes.c_void_p()
        if uclib.uc_context_alloc(self._uch, ctypes.byref(ctx)):
            raise MemoryError("uc_context_alloc failed")
        self._ctx = ctx
        self._image = (ctypes.c_char * self._size).from_address(ctx.value)
        self._view = memoryview(self._image).cast("B")
        self.layout: Layout | None = _layout
        self._mmu_raw: tuple | None = None      # mmu_state's last registers and answer
        self._mmu: MmuState | None = None
        if self.layout is None:
            self.layout = _probe(cpu, self)

    # -- the image --

    def load(self) -> "CpuEnv":
        """Copy the engine's registers into the image (allowed inside a hook)."""
        uclib.uc_context_save(self._uch, self._ctx)
        return self

    def store(self) -> None:
        """Copy the image back into the engine (between slices only)."""
        uclib.uc_context_restore(self._uch, self._ctx)

    def spr(self, n: int) -> int:
        return _U32.unpack_from(self._view, self.layout.spr + 4 * n)[0]

    def set_spr(self, n: int, value: int) -> None:
        _U32.pack_into(self._view, self.layout.spr + 4 * n, value & 0xFFFFFFFF)

    def mmu_state(self, msr: int) -> MmuState:
        """The translation registers held in the image (``load()`` first).

        Asked at exception deliveries (ISI reasons, instruction words), mostly with the same
        registers: the raw words are compared with the last call's and its state is given
        again when they match."""
        lay = self.layout
        view = self._view
        raw = (msr, self.spr(SDR1), bytes(view[lay.sr:lay.sr + 64]),
               bytes(view[lay.ibat:lay.ibat + 64]), bytes(view[lay.dbat:lay.dbat + 64]))
        if raw == self._mmu_raw:
            return self._mmu
        ibat, dbat = _BATS.unpack(raw[3]), _BATS.unpack(raw[4])
        self._mmu_raw = raw
        self._mmu = MmuState(msr=msr, sdr1=raw[1], sr=_SRS.unpack(raw[2]),
                             ibat=tuple(zip(ibat[:4], ibat[8:12])), dbat=tuple(zip(dbat[:4], dbat[8:12])))
        return self._mmu

    def close(self) -> None:
        if self._ctx is not None:
            self._view.release()
            uclib.uc_context_free(self._ctx)
            self._ctx = None


def _probe(cpu: Cpu, env: CpuEnv) -> Layout:
    """Find the register arrays in the image: distinct values in, look for them, check a write."""
    global _layout
    saved = cpu.get_state()
    probe = CpuState(msr=saved.msr, pc=saved.pc)
    for i, name in enumerate(SPR_NAMES):
        probe.spr[name] = 0xA5000000 | (i << 12) | 0x5A0
    for i in range(4):                       # BAT values the 750 keeps as written
        probe.spr[f"IBAT{i}U"], probe.spr[f"IBAT{i}L"] = 0x10000002 * (i + 1), 0x01000012 * (i + 1)
        probe.spr[f"DBAT{i}U"], probe.spr[f"DBAT{i}L"] = 0x10000002 * (i + 5), 0x01000012 * (i + 5)
    probe.sr = [0x00C30000 | (i << 4) for i in range(16)]
    try:
        cpu.set_state(probe)
        got = cpu.get_state()
        image = bytes(env.load()._view)

        def where(value: int, stride_check) -> int:
            needle = _U32.pack(value)
            at = image.find(needle)
            while at >= 0:
                if stride_check(at):
                    return at
                at = image.find(needle, at + 1)
            raise LayoutError("molpy cannot find the CPU registers in this Unicorn's context image; "
                              "exception delivery needs them (Unicorn 2.1.x is supported)")

        def holds(at: int, value: int) -> bool:
            return 0 <= at <= len(image) - 4 and _U32.unpack_from(image, at)[0] == value

        def spr_base(at: int) -> bool:
            base = at - 4 * SPR_NUMBERS["SPRG0"][0]
            return all(holds(base + 4 * SPR_NUMBERS[n][0], got.spr[n])
                       for n in ("SPRG1", "SPRG3", "SRR0", "SRR1", "DAR", "DSISR", "SDR1", "DEC", "HID0"))

        spr = where(got.spr["SPRG0"], spr_base) - 4 * SPR_NUMBERS["SPRG0"][0]
        sr = where(got.sr[0], lambda at: all(holds(at + 4 * i, got.sr[i]) for i in range(16)))

        def bat_base(kind: str):
            return lambda at: all(holds(at + 4 * i, got.spr[f"{kind}BAT{i}U"]) and
                                  holds(at + 32 + 4 * i, got.spr[f"{kind}BAT{i}L"]) for i in range(4))

        layout = Layout(spr=spr, sr=sr, dbat=where(got.spr["DBAT0U"], bat_base("D")),
                        ibat=where(got.spr["IBAT0U"], bat_base("I")))
        env.layout = layout
        env.load()
        env.set_spr(SRR0, 0x1234_5678)
        env.set_spr(TBL_READ, 0x0BAD_CAFE)
        env.store()
        check = cpu.get_state()
        if check.spr["SRR0"] != 0x1234_5678 or check.spr["TBL"] != 0x0BAD_CAFE:
            raise LayoutError("molpy's writes to this Unicorn's context image do not reach the CPU")
    finally:
        cpu.set_state(saved)
        if env.layout is not None:        # the stub cannot write what mftb reads
            env.load()
            env.set_spr(TBL_READ, saved.spr["TBL"])
            env.set_spr(TBU_READ, saved.spr["TBU"])
            env.store()
    _layout = layout
    return layout
