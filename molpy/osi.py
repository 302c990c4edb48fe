"""OSI dispatch: MOL's ``sc`` calling convention routed to the devices that serve it.

Guest: r3 = 0x113724FA, r4 = 0x77810F9B, r5 = selector, r6.. = arguments, ``sc``.
Host: result in r3, extra results in r4, r5 ... Every other exception that reaches
Unicorn's interrupt hook, and an ``sc`` without the magic, goes to ``on_exception``,
which stops the engine so that the machine delivers it (molpy/exceptions.py).
A selector nobody serves is answered as MOL's os_interface.c answers it: 0 below
NUM_SELECTORS (MOL's unset vector), r3 left untouched from NUM_SELECTORS up.

This hook is the hottest Python code in molpy; it reads r3..r11 with one batch call
and writes results the same way (see cpu.RegisterFile).
"""

from __future__ import annotations

import ctypes
import logging
from typing import Callable

from unicorn import ppc_const as P

from . import guestwarn
from .cpu import Cpu, RegisterFile, uclib
from .errors import GuestError

OSI_MAGIC1 = 0x113724FA
OSI_MAGIC2 = 0x77810F9B
INTNO_SYSCALL = 8
MAX_ARGS = 6            # r6..r11 (BOOT_HELPER's string lookup takes six)
MAX_RESULTS = 6         # r3..r8 (FB_INFO answers in r3..r8)
NUM_SELECTORS = 100     # MOL's NUM_OSI_SELECTORS: selectors from here up are "bogus"
MASK = 0xFFFFFFFF
R3 = P.UC_PPC_REG_3

log = logging.getLogger("molpy.osi")
UNKNOWN_REMEMBERED = 1024       # distinct unknown selectors warned about once each

Handler = Callable[..., "int | tuple[int, ...] | None"]


class _NoResult:
    """A handler's answer that leaves every register as the guest set it."""

    def __repr__(self) -> str:
        return "NO_RESULT"


NO_RESULT = _NoResult()


class OsiError(GuestError):
    """Raised by a handler to return an error code to the guest in r3."""

    def __init__(self, code: int = -1, message: str = "") -> None:
        super().__init__(message or f"OSI error {code}")
        self.code = code


class OsiDispatcher:
    """Owns the interrupt hook: OSI calls go to handlers, any other exception to ``on_exception``.

    ``on_exception(intno)`` and ``on_error(exc)`` are called from inside the hook; both
    must stop the engine (the machine's implementations do) and neither may run the engine
    (no nested emu_start: it would cancel the running slice's stop request).
    """

    def __init__(self, cpu: Cpu, on_exception: Callable[[int], None],
                 on_error: Callable[[BaseException], None]) -> None:
        self.cpu = cpu
        self.on_exception = on_exception
        self.on_error = on_error
        self._handlers: dict[int, tuple[Handler, int, str]] = {}
        self._unknown_seen: set[int] = set()
        # r3..r11 and, last, MSR: code_changed inside a call then needs no register read of its own
        self._in = RegisterFile(cpu.uch, [P.UC_PPC_REG_3 + i for i in range(3 + MAX_ARGS)] + [P.UC_PPC_REG_MSR])
        self._outs = [RegisterFile(cpu.uch, [P.UC_PPC_REG_3 + i for i in range(n)])
                      for n in range(1, MAX_RESULTS + 1)]
        cpu.add_intr_hook(self._make_hook())

    def register(self, selector: int, handler: Handler, nargs: int, name: str) -> None:
        """Route ``selector`` to ``handler(*r6..)``; a handler's int or tuple goes to r3, r4 ..."""
        if selector in self._handlers:
            raise ValueError(f"OSI selector {selector} is already served by {self._handlers[selector][2]}")
        if not 0 <= nargs <= MAX_ARGS:
            raise ValueError(f"an OSI call takes at most {MAX_ARGS} arguments")
        self._handlers[selector] = (handler, nargs, name)

    def unregister(self, selector: int) -> None:
        """Stop serving ``selector`` (MOL's os_interface_remove_proc): it becomes unknown."""
        self._handlers.pop(selector, None)

    def serves(self, selector: int) -> bool:
        return selector in self._handlers

    def selectors(self) -> dict[int, str]:
        return {sel: name for sel, (_, _, name) in sorted(self._handlers.items())}

    def _make_hook(self):
        """The interrupt hook as a closure over everything it touches (it runs per OSI call)."""
        cpu = self.cpu
        handlers = self._handlers
        read_batch, uch, ids, ptrs, n = self._in.raw_call()
        v = self._in.values
        r3_out = ctypes.c_uint64(0)
        r3_ref = ctypes.byref(r3_out)
        write_one = uclib.uc_reg_write
        outs = self._outs
        on_exception, on_error, unknown = self.on_exception, self.on_error, self._unknown
        msr_slot = 3 + MAX_ARGS

        def hook(_uch: int, intno: int, _ud: int) -> None:
            try:
                if cpu.in_stub:
                    cpu.stop()
                    return
                if intno != INTNO_SYSCALL:
                    on_exception(intno)
                    return
                read_batch(uch, ids, ptrs, n)
                if v[0] & MASK != OSI_MAGIC1 or v[1] & MASK != OSI_MAGIC2:
                    on_exception(intno)         # an ordinary system call (vector 0xC00)
                    return
                sel = v[2] & MASK
                entry = handlers.get(sel)
                if entry is None:
                    result = unknown(sel)
                else:
                    handler, nargs, _ = entry
                    cpu.call_msr = v[msr_slot] & MASK
                    try:
                        if nargs == 0:
                            result = handler()
                        elif nargs == 1:
                            result = handler(v[3] & MASK)
                        elif nargs == 2:
                            result = handler(v[3] & MASK, v[4] & MASK)
                        else:
                            result = handler(*[x & MASK for x in v[3:3 + nargs]])
                    except OsiError as e:
                        result = e.code
                    finally:
                        cpu.call_msr = None
                if result is None:
                    result = 0
                if type(result) is int:
                    r3_out.value = result & MASK
                    write_one(uch, R3, r3_ref)
                elif result is not NO_RESULT:
                    outs[len(result) - 1].write([x & MASK for x in result])
            except BaseException as exc:  # a raw ctypes callback must never raise
                on_error(exc)

        return hook

    def _unknown(self, sel: int) -> "int | _NoResult":
        """MOL's answer: its unset vector returns 0; a selector past its table leaves r3 alone."""
        answer: "int | _NoResult" = 0 if sel < NUM_SELECTORS else NO_RESULT
        if sel not in self._unknown_seen:
            if len(self._unknown_seen) < UNKNOWN_REMEMBERED:     # bounded: a guest may try them all
                self._unknown_seen.add(sel)
            guestwarn.warn(log, "unknown OSI selector", "guest called unknown OSI selector %d; %s", sel,
                           "r3 left as it was" if answer is NO_RESULT else "returning 0")
        return answer
