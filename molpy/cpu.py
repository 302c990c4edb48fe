"""The PowerPC core: a Unicorn PPC32 big-endian engine and its full register state.

Unicorn's register API reaches only GPR, FPR, CR, LR, CTR, XER, MSR, PC and FPSCR.
Every other SPR and the segment registers are read and written by running a short
host-generated mfspr/mtspr (mfsr/mtsr) stub in a scratch page that only the host
uses: it is mapped without permissions while the guest runs, so a guest touching it
faults like any other access outside RAM.

The Python binding's ``reg_read`` costs almost a microsecond a call; the hot paths
(OSI dispatch, state capture) go through :class:`RegisterFile`, which calls the
library's batch functions directly with preallocated buffers.
"""

from __future__ import annotations

import ctypes
import dataclasses
from dataclasses import dataclass, field
from typing import ClassVar

from unicorn import UC_ARCH_PPC, UC_HOOK_INTR, UC_MODE_BIG_ENDIAN, UC_MODE_PPC32, UC_PROT_ALL, UC_PROT_NONE, Uc, UcError
from unicorn import ppc_const as P
from unicorn import unicorn_const as UC
from unicorn.unicorn_py3 import unicorn as _ucmod

from .engine import require_exact
from .engine import EngineError
from .emulation.state import StateError, int_list, record, u32

# A handle of our own on the already loaded library: calls through it skip the
# binding's argument conversion (measured: 0.87 us -> ~0.25 us a register).
uclib = _lib = ctypes.CDLL(_ucmod.uclib._name)
# uc_ctl(uc, UC_CTL_WRITE(UC_CTL_TB_REMOVE_CACHE, 2 arguments), begin, end), as unicorn.h builds it
_CTL_REMOVE_CACHE = UC.UC_CTL_TB_REMOVE_CACHE | (2 << 26) | (UC.UC_CTL_IO_WRITE << 30)
_CTL_TLB_FLUSH = UC.UC_CTL_TLB_FLUSH | (UC.UC_CTL_IO_WRITE << 30)

SCRATCH_BASE = 0xFFFF0000          # host-only page: stubs and their data
_READ_STUB = SCRATCH_BASE
_WRITE_STUB = SCRATCH_BASE + 0x400
_DATA = SCRATCH_BASE + 0x800
SCRATCH_SIZE = 0x1000

MSR_FP = 0x2000
MSR_ME = 0x1000
MSR_IR = 0x20
MSR_DR = 0x10
BOOT_MSR = MSR_FP | MSR_ME

# name -> (mfspr number, mtspr number); the time base is read through mftb.
SPR_NUMBERS: dict[str, tuple[int, int]] = {
    "SRR0": (26, 26), "SRR1": (27, 27),
    "SPRG0": (272, 272), "SPRG1": (273, 273), "SPRG2": (274, 274), "SPRG3": (275, 275),
    "DAR": (19, 19), "DSISR": (18, 18), "SDR1": (25, 25), "DEC": (22, 22),
    "TBL": (268, 284), "TBU": (269, 285),
    **{f"IBAT{i}U": (528 + 2 * i, 528 + 2 * i) for i in range(4)},
    **{f"IBAT{i}L": (529 + 2 * i, 529 + 2 * i) for i in range(4)},
    **{f"DBAT{i}U": (536 + 2 * i, 536 + 2 * i) for i in range(4)},
    **{f"DBAT{i}L": (537 + 2 * i, 537 + 2 * i) for i in range(4)},
    "HID0": (1008, 1008), "HID1": (1009, 1009), "IABR": (1010, 1010), "DABR": (1013, 1013),
    "EAR": (282, 282),
}
SPR_NAMES: tuple[str, ...] = tuple(SPR_NUMBERS)
# The time base is written last: the other stores take no time on the guest's clock.
_WRITE_ORDER = tuple(n for n in SPR_NAMES if n not in ("TBL", "TBU")) + ("TBL", "TBU")

# Unicorn's PPC32 CPU models by the names a molrc `cpu:` key may give.
CPU_MODELS: dict[str, int] = {
    name[len("UC_CPU_PPC32_"):].lower(): value
    for name, value in vars(P).items() if name.startswith("UC_CPU_PPC32_")
}
CPU_ALIASES = {"g3": "750_v3_1", "750": "750_v3_1", "g4": "7400_v2_9", "7400": "7400_v2_9",
               "604": "604", "603": "603"}
DEFAULT_CPU = "750"


def cpu_model(name: str | None) -> int:
    """Unicorn's model number for a molrc ``cpu:`` value (750, g3, 7400, 604e_v2_4 ...)."""
    key = (name or DEFAULT_CPU).strip().lower()
    key = CPU_ALIASES.get(key, key)
    if key not in CPU_MODELS:
        raise ValueError(f"unknown cpu {name!r}; try 750, g3, g4, 7400, 604, 603 or a Unicorn "
                         f"PPC32 model such as 750cx_v2_2")
    return CPU_MODELS[key]


@dataclass
class CpuState:
    """Every architected register molpy saves: the unit of save/restore for sessions.

    Saved as the session's ``CPU `` chunk, state version ``VERSION`` (loads MIN_VERSION up).
    """

    VERSION: ClassVar[int] = 1
    MIN_VERSION: ClassVar[int] = 1

    gpr: list[int] = field(default_factory=lambda: [0] * 32)
    fpr: list[int] = field(default_factory=lambda: [0] * 32)   # IEEE-754 bit patterns
    cr: int = 0
    lr: int = 0
    ctr: int = 0
    xer: int = 0
    msr: int = 0
    pc: int = 0
    fpscr: int = 0
    spr: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SPR_NAMES, 0))
    sr: list[int] = field(default_factory=lambda: [0] * 16)

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "CpuState":
        """Rebuild from ``as_dict()``; every field is checked (a session file is untrusted).

        Raises StateError naming the field. Keys this class does not know are left to
        their own readers.
        """
        if not isinstance(d, dict):
            raise StateError("CPU state: expected a record")
        keys = ("gpr", "fpr", "cr", "lr", "ctr", "xer", "msr", "pc", "fpscr", "spr", "sr")
        record({k: d[k] for k in keys if k in d}, "CPU state", keys)
        spr = record(d["spr"], "CPU state spr", SPR_NAMES)
        return cls(gpr=int_list(d["gpr"], "gpr", 32, 0, 0xFFFFFFFF),
                   fpr=int_list(d["fpr"], "fpr", 32, 0, (1 << 64) - 1),
                   cr=u32(d["cr"], "cr"), lr=u32(d["lr"], "lr"), ctr=u32(d["ctr"], "ctr"),
                   xer=u32(d["xer"], "xer"), msr=u32(d["msr"], "msr"), pc=u32(d["pc"], "pc"),
                   fpscr=u32(d["fpscr"], "fpscr"), spr={k: u32(spr[k], k) for k in SPR_NAMES},
                   sr=int_list(d["sr"], "sr", 16, 0, 0xFFFFFFFF))


class RegisterFile:
    """Batch access to a fixed list of registers through the library, no binding overhead."""

    def __init__(self, uch: ctypes.c_void_p, reg_ids: list[int]) -> None:
        n = len(reg_ids)
        self._uch = uch
        self._n = n
        self._ids = (ctypes.c_int * n)(*reg_ids)
        self.values = (ctypes.c_uint64 * n)()
        base = ctypes.addressof(self.values)
        self._ptrs = (ctypes.c_void_p * n)(*[base + 8 * i for i in range(n)])

    def read(self) -> ctypes.Array:
        """Fill ``values`` from the engine and return it.

        32-bit registers may fill only the low half of a slot: callers mask with 0xFFFFFFFF.
        """
        if _lib.uc_reg_read_batch(self._uch, self._ids, self._ptrs, self._n):
            raise RuntimeError("uc_reg_read_batch failed")
        return self.values

    def raw_call(self) -> tuple:
        """The library function and arguments of a batch read, for the OSI hook's inner loop."""
        return _lib.uc_reg_read_batch, self._uch, self._ids, self._ptrs, self._n

    def write(self, values: list[int]) -> None:
        vals = self.values
        for i, v in enumerate(values):
            vals[i] = v
        if _lib.uc_reg_write_batch(self._uch, self._ids, self._ptrs, self._n):
            raise RuntimeError("uc_reg_write_batch failed")


def _split_spr(n: int) -> int:
    return ((n & 0x1F) << 16) | ((n >> 5) << 11)


def _mfspr(rd: int, spr: int) -> int:
    return 0x7C0002A6 | rd << 21 | _split_spr(spr)


def _mftb(rd: int, tbr: int) -> int:
    return 0x7C0002E6 | rd << 21 | _split_spr(tbr)


def _mtspr(spr: int, rs: int) -> int:
    return 0x7C0003A6 | rs << 21 | _split_spr(spr)


def _mfsr(rd: int, sr: int) -> int:
    return 0x7C0004A6 | rd << 21 | sr << 16


def _mtsr(sr: int, rs: int) -> int:
    return 0x7C0001A4 | rs << 21 | sr << 16


def _stw(rs: int, disp: int, ra: int) -> int:
    return 0x90000000 | rs << 21 | ra << 16 | (disp & 0xFFFF)


def _lwz(rd: int, disp: int, ra: int) -> int:
    return 0x80000000 | rd << 21 | ra << 16 | (disp & 0xFFFF)


def _words(ws: list[int]) -> bytes:
    return b"".join(w.to_bytes(4, "big") for w in ws)


XER_SPR = 1
XER_SLOT = 4 * (len(SPR_NAMES) + 16)
STUB_DATA_SIZE = XER_SLOT + 4


def _build_stubs() -> tuple[bytes, bytes]:
    """mfspr/mfsr -> store, and load -> mtspr/mtsr, with r4 pointing at the data area."""
    read, write = [], []
    slot = {name: 4 * i for i, name in enumerate(SPR_NAMES)}
    for name in SPR_NAMES:
        mf, _ = SPR_NUMBERS[name]
        read += [_mftb(3, mf) if name in ("TBL", "TBU") else _mfspr(3, mf), _stw(3, slot[name], 4)]
    for name in _WRITE_ORDER:
        _, mt = SPR_NUMBERS[name]
        write += [_lwz(3, slot[name], 4), _mtspr(mt, 3)]
    sr_base = 4 * len(SPR_NAMES)
    for i in range(16):
        read += [_mfsr(3, i), _stw(3, sr_base + 4 * i, 4)]
        write += [_lwz(3, sr_base + 4 * i, 4), _mtsr(i, 3)]
    # XER: the register API keeps SO/OV/CA apart from what mfxer/mtxer see (checked on
    # 2.1.4: a guest's mtxer 0xA0000055 reads back as 0x55), so it goes through the stub.
    read += [_mfspr(3, XER_SPR), _stw(3, XER_SLOT, 4)]
    write += [_lwz(3, XER_SLOT, 4), _mtspr(XER_SPR, 3)]
    return _words(read), _words(write)


_READ_CODE, _WRITE_CODE = _build_stubs()
assert len(_READ_CODE) <= 0x400 and len(_WRITE_CODE) <= 0x400

GPR_IDS = [P.UC_PPC_REG_0 + i for i in range(32)]
FPR_IDS = [P.UC_PPC_REG_FPR0 + i for i in range(32)]
MISC_IDS = [P.UC_PPC_REG_CR, P.UC_PPC_REG_LR, P.UC_PPC_REG_CTR,
            P.UC_PPC_REG_FPSCR, P.UC_PPC_REG_MSR, P.UC_PPC_REG_PC]


class StubError(EngineError):
    """The host's SPR stub did not run to its end."""


class Cpu:
    """A Unicorn PPC32 engine with its scratch page and fast register access."""

    def __init__(self, model: str | None = None) -> None:
        require_exact()
        self.model_name = model or DEFAULT_CPU
        self.uc = Uc(UC_ARCH_PPC, UC_MODE_PPC32 | UC_MODE_BIG_ENDIAN)
        self.uc.ctl_set_cpu_model(cpu_model(model))
        self.uch = self.uc._uch
        self.uc.mem_map(SCRATCH_BASE, SCRATCH_SIZE, UC_PROT_ALL)
        self.uc.mem_write(_READ_STUB, _READ_CODE)
        self.uc.mem_write(_WRITE_STUB, _WRITE_CODE)
        self.uc.mem_protect(SCRATCH_BASE, SCRATCH_SIZE, UC_PROT_NONE)
        self._gprs = RegisterFile(self.uch, GPR_IDS)
        self._fprs = RegisterFile(self.uch, FPR_IDS)
        self._misc = RegisterFile(self.uch, MISC_IDS)
        self._pc = RegisterFile(self.uch, [P.UC_PPC_REG_PC])
        self._msr = RegisterFile(self.uch, [P.UC_PPC_REG_MSR])
        self._range = (ctypes.c_uint64(), ctypes.c_uint64())   # drop_code's arguments, reused
        self.call_msr: int | None = None       # MSR as the OSI hook read it, during an OSI call
        self.in_stub = False
        self._hooks: list = []

    # -- small accessors --

    @property
    def pc(self) -> int:
        return self._pc.read()[0] & 0xFFFFFFFF

    @pc.setter
    def pc(self, value: int) -> None:
        self._pc.write([value & 0xFFFFFFFF])

    def reg(self, n: int) -> int:
        return self.uc.reg_read(P.UC_PPC_REG_0 + n) & 0xFFFFFFFF

    def set_reg(self, n: int, value: int) -> None:
        self.uc.reg_write(P.UC_PPC_REG_0 + n, value & 0xFFFFFFFF)

    def add_intr_hook(self, callback) -> None:
        """Install a raw ``void cb(uc_engine*, uint32 intno, void*)`` hook; it must not raise."""
        cfunc = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_uint32, ctypes.c_void_p)(callback)
        handle = ctypes.c_size_t()
        err = _lib.uc_hook_add(self.uch, ctypes.byref(handle), UC_HOOK_INTR, cfunc, None,
                               ctypes.c_uint64(1), ctypes.c_uint64(0))
        if err:
            raise UcError(err)
        self._hooks.append(cfunc)  # keep the trampoline alive as long as the engine

    def stop(self) -> None:
        _lib.uc_emu_stop(self.uch)

    def code_changed(self, begin: int, end: int) -> None:
        """Drop translated code for guest-physical RAM [begin, end) that the host has just written.

        Unicorn sees guest stores, but not the host writing RAM through its mapping (a disk
        read): without this, a guest that loads code over code it already ran in the same
        slice would run the old code. Unicorn looks the range up through the current
        instruction translation, so with MSR[IR] set the lookup is made in real mode.
        A raw uc_ctl call costs about half a microsecond.
        """
        msr = self.call_msr
        if msr is None:
            msr = self._msr.read()[0] & 0xFFFFFFFF
        if msr & MSR_IR:
            self._msr.write([msr & ~MSR_IR])
            self.drop_code(begin, end)
            self._msr.write([msr])
        else:
            self.drop_code(begin, end)

    def drop_code(self, begin: int, end: int) -> None:
        """Drop translated code for [begin, end) as the guest fetches it now (virtual with MSR[IR])."""
        lo, hi = self._range
        lo.value, hi.value = begin, end
        _lib.uc_ctl(self.uch, _CTL_REMOVE_CACHE, lo, hi)

    # -- full state --

    def _run_stub(self, start: int, code: bytes, data: bytes = b"", read_back: int = 0) -> bytes:
        """Run a scratch-page stub in real mode, supervisor state; the caller restores the rest."""
        uc = self.uc
        uc.mem_protect(SCRATCH_BASE, SCRATCH_SIZE, UC_PROT_ALL)
        self.in_stub = True
        try:
            if data:
                uc.mem_write(_DATA, data)
            uc.reg_write(P.UC_PPC_REG_MSR, 0)
            uc.reg_write(P.UC_PPC_REG_4, _DATA)
            end = start + len(code)
            uc.emu_start(start, end)
            if self.pc != end:
                raise StubError(f"SPR stub stopped at 0x{self.pc:08x}, expected 0x{end:08x}")
            return bytes(uc.mem_read(_DATA, read_back)) if read_back else b""
        finally:
            self.in_stub = False
            uc.mem_protect(SCRATCH_BASE, SCRATCH_SIZE, UC_PROT_NONE)

    def get_state(self) -> CpuState:
        """Capture every register; the guest sees no difference afterwards."""
        gpr = [v & 0xFFFFFFFF for v in self._gprs.read()]
        fpr = list(self._fprs.read())
        cr, lr, ctr, fpscr, msr, pc = (v & 0xFFFFFFFF for v in self._misc.read())
        raw = self._run_stub(_READ_STUB, _READ_CODE, read_back=STUB_DATA_SIZE)
        words = [int.from_bytes(raw[i:i + 4], "big") for i in range(0, len(raw), 4)]
        self._restore_basic(gpr, fpr, cr, lr, ctr, fpscr, msr, pc)
        n = len(SPR_NAMES)
        return CpuState(gpr=gpr, fpr=fpr, cr=cr, lr=lr, ctr=ctr, xer=words[-1], msr=msr, pc=pc,
                        fpscr=fpscr, spr=dict(zip(SPR_NAMES, words)), sr=words[n:n + 16])

    def set_state(self, s: CpuState) -> None:
        """Load every register: SPRs and SRs through the stub first, then the rest, PC last."""
        data = b"".join((s.spr[n] & 0xFFFFFFFF).to_bytes(4, "big") for n in SPR_NAMES)
        data += b"".join((v & 0xFFFFFFFF).to_bytes(4, "big") for v in s.sr)
        data += (s.xer & 0xFFFFFFFF).to_bytes(4, "big")
        self._run_stub(_WRITE_STUB, _WRITE_CODE, data=data)
        self._restore_basic(s.gpr, s.fpr, s.cr, s.lr, s.ctr, s.fpscr, s.msr, s.pc)
        self.uc.ctl_flush_tb()
        self.flush_tlb()

    def flush_tlb(self) -> None:
        """Forget every cached translation: Unicorn keeps BAT translations in its TLB, and a
        restored context changes the BATs without flushing it."""
        _lib.uc_ctl(self.uch, _CTL_TLB_FLUSH)

    def _restore_basic(self, gpr, fpr, cr, lr, ctr, fpscr, msr, pc) -> None:
        self._gprs.write(gpr)
        self._fprs.write(fpr)
        self._misc.write([cr, lr, ctr, fpscr, msr, pc])

