"""Breakpoints and watchpoints as Unicorn hooks bounded to their addresses.

A breakpoint is a ``UC_HOOK_CODE`` hook with begin = end = its address: Unicorn
instruments only the instructions at that address (the guest runs at full speed
elsewhere, and guest memory is never changed). A watchpoint is a ``UC_HOOK_MEM_READ`` /
``UC_HOOK_MEM_WRITE`` hook bounded to the watched bytes. The hooks only record what hit
and stop the engine; everything else happens between slices.

gdb inserts and removes its points around every stop; ``apply`` (at resume) installs
only the difference, so an unchanged set costs nothing, and drops translated code when
the code hooks changed (a block translated before a hook existed would not call it).
"""

from __future__ import annotations

from dataclasses import dataclass

from unicorn import UC_HOOK_CODE, UC_HOOK_MEM_READ, UC_HOOK_MEM_WRITE
from unicorn.ppc_const import UC_PPC_REG_PC

MAX_POINTS = 4096          # a client cannot make the stub hold unbounded hooks
MAX_WATCH_LEN = 1 << 20

WRITE, READ, ACCESS = 2, 3, 4       # gdb's Z types
WATCH_NAMES = {WRITE: "watch", READ: "rwatch", ACCESS: "awatch"}


@dataclass
class Hit:
    kind: str            # "break" or one of WATCH_NAMES' values
    addr: int            # breakpoint address, or the data address that was touched
    pc: int = 0          # for a watchpoint: the instruction that made the access


class Points:
    def __init__(self, uc, on_hit) -> None:
        self._uc = uc
        self._on_hit = on_hit          # called from the hook with a Hit; must stop the engine
        self.breaks: set[int] = set()
        self.watches: set[tuple[int, int, int]] = set()      # (type, addr, length)
        self._installed_breaks: dict[int, int] = {}           # addr -> hook handle
        self._installed_watches: dict[tuple[int, int, int], list[int]] = {}
        self.skip: int | None = None   # a breakpoint address to pass once (resuming from it)

    def __len__(self) -> int:
        return len(self.breaks) + len(self.watches)

    # -- what gdb asks (between slices) --

    def add_break(self, addr: int) -> None:
        if addr not in self.breaks and len(self) >= MAX_POINTS:
            raise ValueError("too many breakpoints")
        self.breaks.add(addr)

    def remove_break(self, addr: int) -> None:
        self.breaks.discard(addr)

    def add_watch(self, kind: int, addr: int, length: int) -> None:
        if not 0 < length <= MAX_WATCH_LEN or addr + length > 1 << 32:
            raise ValueError("bad watchpoint range")
        if (kind, addr, length) not in self.watches and len(self) >= MAX_POINTS:
            raise ValueError("too many watchpoints")
        self.watches.add((kind, addr, length))

    def remove_watch(self, kind: int, addr: int, length: int) -> None:
        self.watches.discard((kind, addr, length))

    # -- hooks --

    def apply(self) -> None:
        """Make the installed hooks what gdb asked for (call between slices)."""
        uc = self._uc
        code_changed = False
        for addr in list(self._installed_breaks):
            if addr not in self.breaks:
                uc.hook_del(self._installed_breaks.pop(addr))
                code_changed = True
        for addr in self.breaks:
            if addr not in self._installed_breaks:
                self._installed_breaks[addr] = uc.hook_add(UC_HOOK_CODE, self._code_cb, begin=addr, end=addr)
                code_changed = True
        for w in list(self._installed_watches):
            if w not in self.watches:
                for h in self._installed_watches.pop(w):
                    uc.hook_del(h)
                code_changed = True
        for w in self.watches:
            if w not in self._installed_watches:
                kind, addr, length = w
                # an access that starts up to 7 bytes before the range may overlap it
                begin, end = max(0, addr - 7), addr + length - 1
                handles = []
                if kind in (WRITE, ACCESS):
                    handles.append(uc.hook_add(UC_HOOK_MEM_WRITE, self._mem_cb, w, begin, end))
                if kind in (READ, ACCESS):
                    handles.append(uc.hook_add(UC_HOOK_MEM_READ, self._mem_cb, w, begin, end))
                self._installed_watches[w] = handles
                code_changed = True
        if code_changed:
            uc.ctl_flush_tb()

    def clear(self) -> None:
        """Forget every point (the debugger went away) and remove the hooks."""
        self.breaks.clear()
        self.watches.clear()
        self.skip = None
        self.apply()

    def _code_cb(self, _uc, addr: int, _size: int, _ud) -> None:
        if addr == self.skip:
            self.skip = None
            return
        self._on_hit(Hit("break", addr))

    def _mem_cb(self, uc, _access: int, addr: int, size: int, _value: int, w) -> None:
        kind, start, length = w
        if addr + size <= start or addr >= start + length:
            return
        self._on_hit(Hit(WATCH_NAMES[kind], max(addr, start), uc.reg_read(UC_PPC_REG_PC) & 0xFFFFFFFF))
