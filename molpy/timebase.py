"""The time base and the decrementer, counted from host monotonic time.

Unicorn's time base reads 0 and its decrementer never counts, so molpy keeps both here:
TB counts up and DEC counts down at ``TB_FREQ`` (25 MHz, a 100 MHz-bus G3's bus clock / 4;
one tick is 40 ns), both derived from ``time.monotonic_ns``. A decrementer exception is
signalled when DEC bit 0 goes from 0 to 1 (counting past zero, or a write of a negative
value over a non-negative one, as QEMU's 6xx model does) and stays pending until it is
taken. Guest time stands still while a session is saved: TB continues from the saved
value and a decrementer with 5 ms left fires about 5 ms after the resume.

The guest's ``mftb``/``mfdec``/``mtdec``/``mttbl`` instructions reach this model through
the engine's time hook (:mod:`molpy.timeregs`); MOL's timer selectors 92 and 93 (time base ticks <-> microseconds)
are served here.
"""

from __future__ import annotations

import time
from typing import Callable

from .emulation.state import StateError

TB_FREQ = 25_000_000
MASK32 = 0xFFFFFFFF
MASK64 = 0xFFFFFFFFFFFFFFFF
NS_PER_S = 1_000_000_000

OSI_MTICKS_TO_USECS = 92
OSI_USECS_TO_MTICKS = 93

STATE_KEY = "timebase"      # the key of this state in a session's CPU dict


class TimeBase:
    """TB and DEC as the guest sees them; ``clock`` is the host's nanosecond clock."""

    def __init__(self, freq: int = TB_FREQ, clock: Callable[[], int] = time.monotonic_ns) -> None:
        self.freq = freq
        self.clock = clock
        now = clock()
        self._tb_ns, self._tb_at = now, 0
        self.dec_pending = False
        # A fresh 750's DEC holds no countdown: start it negative, so it next passes zero
        # after a full 2^32 ticks (about 172 s) unless the guest writes it.
        self._set_dec(MASK32, now)

    # -- ticks <-> nanoseconds --

    def _ticks(self, ns: int) -> int:
        return ns * self.freq // NS_PER_S

    def _ns(self, ticks: int) -> int:
        return -(-ticks * NS_PER_S // self.freq)          # rounded up

    # -- time base --

    def tb(self, now: int | None = None) -> int:
        now = self.clock() if now is None else now
        return (self._tb_at + self._ticks(now - self._tb_ns)) & MASK64

    def set_tb(self, value: int, now: int | None = None) -> None:
        self._tb_ns, self._tb_at = self.clock() if now is None else now, value & MASK64

    def set_tbl(self, value: int, now: int | None = None) -> None:
        now = self.clock() if now is None else now
        self.set_tb((self.tb(now) & ~MASK32) | (value & MASK32), now)

    def set_tbu(self, value: int, now: int | None = None) -> None:
        now = self.clock() if now is None else now
        self.set_tb((self.tb(now) & MASK32) | (value & MASK32) << 32, now)

    # -- decrementer --

    def dec(self, now: int | None = None) -> int:
        now = self.clock() if now is None else now
        return (self._dec_at - self._ticks(now - self._dec_ns)) & MASK32

    def _set_dec(self, value: int, now: int) -> None:
        self._dec_ns, self._dec_at = now, value & MASK32
        # bit 0 next goes 0 -> 1 after value + 1 ticks (value 0x7FFFFFFF: 2^31 ticks ...)
        self._next_cross = now + self._ns(self._dec_at + 1)

    def set_dec(self, value: int, now: int | None = None) -> None:
        """The guest wrote DEC (mtdec): a negative value over a non-negative one signals at once."""
        now = self.clock() if now is None else now
        self.poll(now)
        if value & 0x80000000 and not self.dec(now) & 0x80000000:
            self.dec_pending = True
        self._set_dec(value, now)

    def poll(self, now: int) -> bool:
        """Note every zero crossing up to ``now``; True while a decrementer exception is pending."""
        if now >= self._next_cross:
            self.dec_pending = True
            period = self._ns(1 << 32)
            self._next_cross += period * ((now - self._next_cross) // period + 1)
        return self.dec_pending

    def next_crossing(self) -> int:
        """Host time (monotonic ns) of DEC's next pass through zero."""
        return self._next_cross

    # -- sessions --

    def save(self, now: int | None = None) -> dict:
        now = self.clock() if now is None else now
        self.poll(now)
        return {"tb": self.tb(now), "dec": self.dec(now), "dec_pending": self.dec_pending}

    def load(self, state: dict, now: int | None = None) -> None:
        """Continue from a saved state: guest time did not pass while it was saved."""
        now = self.clock() if now is None else now
        self.set_tb(state["tb"], now)
        self._set_dec(state["dec"], now)
        self.dec_pending = state["dec_pending"]

    # -- MOL's timer selectors --

    def mticks_to_usecs(self, mticks: int) -> int:
        """OSI 92 as MOL computes it: the int argument widened to 64 bits, times 10^6, / freq."""
        wide = (mticks - (1 << 32) if mticks & 0x80000000 else mticks) & MASK64
        return (wide * 1_000_000 & MASK64) // self.freq & MASK32

    def usecs_to_mticks(self, usecs: int) -> int:
        """OSI 93 as MOL computes it: 64-bit freq * usecs / 10^6, returned as 32 bits."""
        return self.freq * (usecs & MASK32) // 1_000_000 & MASK32

    def register_osi(self, osi) -> None:
        osi.register(OSI_MTICKS_TO_USECS, self.mticks_to_usecs, 1, "timebase")
        osi.register(OSI_USECS_TO_MTICKS, self.usecs_to_mticks, 1, "timebase")


def parse_state(value: object) -> dict:
    """Check a session's time-base state (it may be crafted): exact keys, types and ranges."""
    if not isinstance(value, dict) or set(value) != {"tb", "dec", "dec_pending"}:
        raise StateError("time base state must hold exactly tb, dec and dec_pending")
    tb, dec, pending = value["tb"], value["dec"], value["dec_pending"]
    if type(tb) is not int or not 0 <= tb <= MASK64:
        raise StateError("time base value out of range")
    if type(dec) is not int or not 0 <= dec <= MASK32:
        raise StateError("decrementer value out of range")
    if type(pending) is not bool:
        raise StateError("dec_pending must be true or false")
    return {"tb": tb, "dec": dec, "dec_pending": pending}
