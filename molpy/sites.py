"""Instructions Unicorn's 750 gets wrong, found where they are and handled where they run.

``mftb`` reads a register Unicorn never updates, ``mtdec``/``mfdec`` reach a register that
never counts, and a write to a lower BAT register (``mtspr`` IBATnL/DBATnL) is ignored by
Unicorn while its TLB still holds a translation made with the old value. molpy finds these
instructions when Unicorn translates them: a ``UC_HOOK_EDGE_GENERATED`` hook runs once per
newly translated block (not again while the block stays cached) and scans its words, read
through the guest's own translation. A block holding a site molpy has no hook for yet
stops the engine before its first instruction; between slices a ``UC_HOOK_CODE`` hook
limited to that one address is added and the block is dropped, so it is translated again
with the hook in it. The site hook emulates the time-base instructions from the host
clock (:class:`molpy.timebase.TimeBase`) and flushes the TLB before a lower BAT write.

Cost: nothing for code that runs without such instructions, one Python call (a few us)
per block when it is translated, a few us per such instruction executed. Limits
(docs/exceptions.md): at most ``MAX_SITES`` addresses get a hook (each hook makes every
translation a little slower); past that, and for a block whose code cannot be read
through the translation, a time-base instruction reads the value molpy stores at every
stop and a lower BAT write waits for the next TLB flush.
"""

from __future__ import annotations

import ctypes
import logging
import re
from bisect import bisect_left

from unicorn import UC_HOOK_CODE, UC_HOOK_EDGE_GENERATED, UcError
from unicorn import ppc_const as P

from .cpu import SCRATCH_BASE, SCRATCH_SIZE, Cpu, RegisterFile, uclib
from .cpuenv import CpuEnv
from .mmu import FETCH, MSR_IR, MSR_LE, MSR_PR, translate
from .timebase import TimeBase

log = logging.getLogger("molpy")

MAX_SITES = 512

_MFTB, _MFSPR, _MTSPR = 0x7C0002E6, 0x7C0002A6, 0x7C0003A6
_OPS = frozenset((_MFTB, _MFSPR, _MTSPR))
SPR_DEC, SPR_TBL, SPR_TBU, SPR_WTBL, SPR_WTBU = 22, 268, 269, 284, 285
LOWER_BATS = frozenset(range(529, 544, 2))          # IBAT0L..IBAT3L, DBAT0L..DBAT3L
_WANTED = {_MFTB: frozenset((SPR_TBL, SPR_TBU)), _MFSPR: frozenset((SPR_DEC, SPR_TBL, SPR_TBU)),
           _MTSPR: frozenset((SPR_DEC, SPR_WTBL, SPR_WTBU)) | LOWER_BATS}


class UcTb(ctypes.Structure):
    _fields_ = [("pc", ctypes.c_uint64), ("icount", ctypes.c_uint16), ("size", ctypes.c_uint16)]


_EDGE_CB = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.POINTER(UcTb), ctypes.POINTER(UcTb), ctypes.c_void_p)
_CODE_CB = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_uint64, ctypes.c_uint32, ctypes.c_void_p)


# Where a word may be one of them: primary opcode 31 (first byte 0x7C-0x7F) and an extended
# opcode whose low byte is 0xA6/0xE6 (with the Rc bit 0xA7/0xE7), tried at every offset
# (a lookahead, so a match at an odd offset cannot hide the aligned one after it).
_CANDIDATES = {"big": re.compile(rb"(?=[\x7c-\x7f]..[\xa6\xa7\xe6\xe7])", re.S),
               "little": re.compile(rb"(?=[\xa6\xa7\xe6\xe7]..[\x7c-\x7f])", re.S)}


def find_sites(code: bytes | memoryview, order: str) -> list[tuple[int, int]]:
    """(offset, word) of each instruction molpy handles itself in a block's code (words in
    ``order``), found by a regular expression in C rather than a Python loop over every word."""
    found = []
    for m in _CANDIDATES[order].finditer(code):
        offset = m.start()
        if offset & 3 == 0:
            word = int.from_bytes(code[offset:offset + 4], order)
            if classify(word):
                found.append((offset, word))
    return found


def classify(word: int) -> tuple[int, int, int] | None:
    """(operation, GPR, SPR) of an instruction molpy handles itself, or None."""
    op = word & 0xFC0007FE
    if op not in _OPS:
        return None
    spr = ((word >> 16) & 0x1F) | ((word >> 6) & 0x3E0)
    if spr not in _WANTED[op]:
        return None
    return op, (word >> 21) & 0x1F, spr


class Sites:
    """Finds the instructions Unicorn gets wrong and handles them where they run."""

    def __init__(self, cpu: Cpu, env: CpuEnv, ram: memoryview, timebase: TimeBase,
                 on_dec_write, on_error) -> None:
        self.cpu, self.env, self.ram, self.timebase = cpu, env, ram, timebase
        self.on_dec_write = on_dec_write         # called after a hooked mtdec
        self.on_error = on_error
        self.sites: dict[int, int] = {}          # hooked address -> word there in the latest block
        self._addrs: list[int] = []              # the hooked addresses, sorted
        self._new: dict[int, int] = {}
        self._flush = False
        self.stopped_before: int | None = None   # the block the last scan stopped the engine before
        self.unscanned = 0                       # blocks whose code could not be read
        self.full = False
        self._msr = RegisterFile(cpu.uch, [P.UC_PPC_REG_MSR])
        self._edge_cb = _EDGE_CB(self._edge)
        self._site_cb = _CODE_CB(self._site)
        self._handles: list[ctypes.c_size_t] = []
        self._hook(UC_HOOK_EDGE_GENERATED, self._edge_cb, 1, 0)
        self._value = ctypes.c_uint64()
        self._ref = ctypes.byref(self._value)
        env.load()
        self._dec_seen, self._tbl_seen, self._tbu_seen = env.spr(SPR_DEC), env.spr(SPR_WTBL), env.spr(SPR_WTBU)

    def _hook(self, kind: int, cb, begin: int, end: int) -> None:
        handle = ctypes.c_size_t()
        err = uclib.uc_hook_add(self.cpu.uch, ctypes.byref(handle), kind, cb, None,
                                ctypes.c_uint64(begin), ctypes.c_uint64(end))
        if err:
            raise UcError(err)
        self._handles.append(handle)

    @property
    def pending(self) -> bool:
        return bool(self._new) or self._flush

    # -- translation time (inside emu_start) --

    def _code(self, pc: int, size: int) -> tuple[bytes | memoryview, str] | None:
        """The block's bytes, read through the instruction translation it was made with,
        and their word order ('little' in little-endian mode, which fetches swapped words)."""
        msr = self._msr.read()[0] & 0xFFFFFFFF
        ram = self.ram
        state = self.env.load().mmu_state(msr) if msr & MSR_IR else None
        order = "little" if msr & MSR_LE else "big"
        parts = []
        at, end = pc, pc + size
        while at < end:
            chunk = min(end, (at | 0xFFF) + 1) - at
            phys = at if state is None else translate(state, ram, at, FETCH).phys
            if phys is None or phys + chunk > len(ram):
                return None
            parts.append(ram[phys:phys + chunk])
            at += chunk
        return (parts[0] if len(parts) == 1 else b"".join(parts)), order

    def _edge(self, _uch, cur, _prev, _ud) -> None:
        try:
            tb = cur.contents
            pc, size = tb.pc, tb.size
            if SCRATCH_BASE <= pc < SCRATCH_BASE + SCRATCH_SIZE or size == 0:
                return
            code = self._code(pc, size)
            if code is None:
                self.unscanned += 1
                return
            data, order = code
            sites, new = self.sites, self._new
            addrs = self._addrs
            i = bisect_left(addrs, pc)
            while i < len(addrs) and addrs[i] < pc + size:     # the hooked addresses in this block
                addr = addrs[i]
                word = int.from_bytes(data[addr - pc:addr - pc + 4], order)
                if sites[addr] != word:         # other code at a hooked address (remapped, reloaded)
                    sites[addr] = word
                    self._flush = True          # blocks made from the old word may still be cached
                i += 1
            for offset, word in find_sites(data, order):
                addr = pc + offset
                if addr in sites or addr in new:
                    continue
                if len(sites) + len(new) >= MAX_SITES:
                    if not self.full:
                        self.full = True
                        log.warning("more than %d time-base and BAT instruction sites: the rest "
                                    "see the time as of the last stop", MAX_SITES)
                    break
                new[addr] = word
            if new or self._flush:
                self.stopped_before = pc
                self.cpu.stop()                 # before the block's first instruction runs
        except BaseException as exc:  # a raw ctypes callback must never raise
            self.on_error(exc)

    # -- between slices --

    def apply(self) -> None:
        """Hook the sites found in the last slice; drop the blocks that must be translated again."""
        new, self._new = self._new, {}
        self.stopped_before = None
        for addr, word in new.items():
            self._hook(UC_HOOK_CODE, self._site_cb, addr, addr)
            self.sites[addr] = word
            self.cpu.drop_code(addr, addr + 4)
        if new:
            self._addrs = sorted(self.sites)
        if self._flush:
            self._flush = False
            self.cpu.uc.ctl_flush_tb()

    def sync(self, env: CpuEnv, now: int, adopt: bool = False) -> None:
        """Refresh what an unhooked mftb/mfdec reads, and take in DEC/TB writes made without a hook.

        ``env`` is loaded by the caller, who stores it back. ``adopt``: the registers were just
        loaded together with the time base (a session, set_state): remember them, apply nothing.
        """
        tb = self.timebase
        dec = env.spr(SPR_DEC)
        if dec != self._dec_seen and not adopt:
            tb.set_dec(dec, now)
        for spr, seen, setter in ((SPR_WTBL, self._tbl_seen, tb.set_tbl), (SPR_WTBU, self._tbu_seen, tb.set_tbu)):
            value = env.spr(spr)
            if value != seen and not adopt:
                setter(value, now)
        self._tbl_seen, self._tbu_seen = env.spr(SPR_WTBL), env.spr(SPR_WTBU)
        value = tb.tb(now)
        env.set_spr(SPR_TBL, value)
        env.set_spr(SPR_TBU, value >> 32)
        self._dec_seen = tb.dec(now)
        env.set_spr(SPR_DEC, self._dec_seen)

    # -- run time: one site executes --

    def _site(self, _uch, addr: int, _size: int, _ud) -> None:
        try:
            uch = self.cpu.uch
            found = classify(self.sites.get(addr, 0))
            if found is None:
                return
            op, reg, spr = found
            tb = self.timebase
            if op != _MFTB and spr != SPR_TBL and spr != SPR_TBU and self._msr.read()[0] & MSR_PR:
                return                          # privileged in user mode: let it raise
            if spr in LOWER_BATS:               # nothing is translated between here and the write
                self.cpu.flush_tlb()
                return
            now = tb.clock()
            if op == _MTSPR:                    # let the instruction run too (harmless)
                uclib.uc_reg_read(uch, P.UC_PPC_REG_0 + reg, self._ref)
                value = self._value.value & 0xFFFFFFFF
                if spr == SPR_DEC:             # the instruction stores it: sync() must not apply it again
                    self._dec_seen = value
                    tb.set_dec(value, now)
                    self.on_dec_write()
                elif spr == SPR_WTBL:
                    self._tbl_seen = value
                    tb.set_tbl(value, now)
                else:
                    self._tbu_seen = value
                    tb.set_tbu(value, now)
                return
            if spr == SPR_DEC:
                value = tb.dec(now)
            else:
                value = tb.tb(now) >> (32 if spr == SPR_TBU else 0) & 0xFFFFFFFF
            self._value.value = value
            uclib.uc_reg_write(uch, P.UC_PPC_REG_0 + reg, self._ref)
            self._value.value = addr + 4        # skip the instruction: its own read would be stale
            uclib.uc_reg_write(uch, P.UC_PPC_REG_PC, self._ref)
        except BaseException as exc:
            self.on_error(exc)

    def close(self) -> None:
        for handle in self._handles:
            uclib.uc_hook_del(self.cpu.uch, handle)
        self._handles.clear()
