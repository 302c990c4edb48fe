"""The guest's time base and decrementer registers, served from molpy's clock by the engine.

Unicorn's 750 never counts its time base and keeps DEC as plain storage. molpy's engine
(molpy/engine, the patch) routes every ``mftb``, ``mfspr``/``mtspr`` of DEC, TBL/TBU and
the write-only TBL/TBU registers to one callback registered with ``uc_molpy_time_hook``: a
read answers from :class:`molpy.timebase.TimeBase` at the host's clock, a write goes into
it (and a DEC write re-arms the slice timer). The instruction runs as the translator
decoded it, in any word order or translation, at every address, with the engine's own
privilege check; nothing scans translated code. (The same patch makes a lower BAT write
flush the TLB.)

On a library without the hook (``MOLPY_ENGINE=stock``, only to show Unicorn's defects) the
registers are plain storage: :meth:`TimeRegisters.sync` stores the time at every slice and
takes in what the guest wrote.
"""

from __future__ import annotations

import ctypes

from .cpu import Cpu, uclib
from .cpuenv import CpuEnv
from .timebase import TimeBase

SPR_DEC, SPR_TBL, SPR_TBU, SPR_WTBL, SPR_WTBU = 22, 268, 269, 284, 285
_UPPER = frozenset((SPR_TBU, SPR_WTBU))          # mfspr 285 reads TBU as mftb does

_TIME_CB = ctypes.CFUNCTYPE(ctypes.c_uint64, ctypes.c_void_p, ctypes.c_uint32, ctypes.c_uint32,
                            ctypes.c_uint64, ctypes.c_void_p)


class TimeRegisters:
    """TB and DEC as the guest's instructions read and write them."""

    def __init__(self, cpu: Cpu, env: CpuEnv, timebase: TimeBase, on_dec_write, on_error) -> None:
        self.cpu, self.timebase = cpu, timebase
        self.on_dec_write = on_dec_write         # called after the guest wrote DEC
        self.on_error = on_error
        self.accesses = 0                        # guest reads and writes served by the hook
        self._set_hook = getattr(uclib, "uc_molpy_time_hook", None)
        self.native = self._set_hook is not None
        self._cb = _TIME_CB(self._access)
        if self.native:
            self._set_hook.argtypes = [ctypes.c_void_p, _TIME_CB, ctypes.c_void_p]
            self._set_hook(cpu.uch, self._cb, None)
        env.load()
        self._dec_seen, self._tbl_seen, self._tbu_seen = env.spr(SPR_DEC), env.spr(SPR_WTBL), env.spr(SPR_WTBU)

    def _access(self, _uch, spr: int, write: int, value: int, _ud) -> int:
        """One guest instruction's access (inside emu_start): ``value`` is the one written, or
        for a read the one stored. A raw ctypes callback must never raise."""
        try:
            if self.cpu.in_stub:               # molpy's own register stubs: plain storage
                return value
            self.accesses += 1
            tb = self.timebase
            now = tb.clock()
            if not write:
                if spr == SPR_DEC:
                    return tb.dec(now)
                return tb.tb(now) >> (32 if spr in _UPPER else 0) & 0xFFFFFFFF
            value &= 0xFFFFFFFF
            if spr == SPR_DEC:                 # the engine stored it too: sync() must not apply it again
                self._dec_seen = value
                tb.set_dec(value, now)
                self.on_dec_write()
            elif spr == SPR_WTBL:
                self._tbl_seen = value
                tb.set_tbl(value, now)
            elif spr == SPR_WTBU:
                self._tbu_seen = value
                tb.set_tbu(value, now)
        except BaseException as exc:
            self.on_error(exc)
        return 0

    def sync(self, env: CpuEnv, now: int, adopt: bool = False) -> None:
        """Store the time where a register read without the hook finds it, and take in DEC/TB
        values written without it (a debugger, a stock engine).

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

    def close(self) -> None:
        """Unregister the callback before the engine can outlive it."""
        if self.native:
            self._set_hook(self.cpu.uch, _TIME_CB(), None)
            self.native = False
