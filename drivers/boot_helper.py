"""BOOT_HELPER (OSI 78): the services MOL's booter.c gives boot loaders and its firmware.

ops: 32 ASCII -> UTF-16BE, 33 UTF-16BE -> ASCII, 34 a string resource from the config
(MOL's get_str_res_ind; the firmware looks up ``macos_rompath`` this way), 35 the RAM
size. Any other op answers -1. Guest addresses are checked against RAM: where MOL
would read or write past RAM, molpy answers as if the address were bad (-1 for the
string conversions, 0 for the resource lookup, which the firmware uses as a pointer).
"""

from __future__ import annotations

from ..emulation.memory import GuestAccessError
from .device import Device, DeviceContext
from .resources import str_res

OSI_BOOT_HELPER = 78
OP_ASCII_TO_UNICODE = 32
OP_UNICODE_TO_ASCII = 33
OP_GET_STR_RES = 34
OP_RAM_SIZE = 35
MAX_KEY = 4096          # a resource name longer than this is not looked up
UNITS_STEP = 1 << 22    # op 33 takes this many 16-bit units (8 MiB) between checks for a stop


def _signed(v: int) -> int:
    return v - (1 << 32) if v & 0x80000000 else v


class BootHelper(Device):
    kind = "BOOT"

    def __init__(self, ctx: DeviceContext) -> None:
        self.ctx = ctx
        self.memory = ctx.memory

    def attach(self, ctx: DeviceContext) -> None:
        ctx.osi.register(OSI_BOOT_HELPER, self.call, 6, "boot_helper")

    def call(self, op: int, a1: int, a2: int, a3: int, a4: int, a5: int) -> int:
        if op == OP_RAM_SIZE:
            return self.memory.size
        if op == OP_GET_STR_RES:
            return self.get_str_res(a1, a2, a3, _signed(a4), _signed(a5))
        if op == OP_ASCII_TO_UNICODE:
            return self.ascii_to_unicode(a1, a2, _signed(a3))
        if op == OP_UNICODE_TO_ASCII:
            return self.unicode_to_ascii(a1, a2, _signed(a3), _signed(a4))
        return -1

    def _in_ram(self, addr: int, length: int = 0) -> bool:
        return addr + length <= self.memory.size

    def get_str_res(self, key_addr: int, buf: int, size: int, index: int, argnum: int) -> int:
        """``buf`` (the guest's pointer) when the resource exists, else 0, never -1.

        The value is copied as MOL's strncpy0 copies: at most ``size`` - 1 bytes and a NUL;
        nothing when ``size`` is 0 (the firmware's "is it set?" probe passes buf 1, size 0).
        """
        if not self._in_ram(key_addr, 1) or not self._in_ram(buf):
            return 0
        mem = self.memory
        try:
            key = mem.read_cstring(key_addr, MAX_KEY).decode("latin-1")
        except GuestAccessError:
            return 0
        if index < 0:
            return 0
        value = str_res(self.ctx.config.resources, key, index, max(argnum, 0))
        if value is None:
            return 0
        if buf and size:
            data = value.encode("utf-8")[:size - 1] + b"\0"
            if not self._in_ram(buf, len(data)):
                return 0
            mem.write(buf, data)
            self.ctx.code_changed(buf, buf + len(data))
        return buf

    def ascii_to_unicode(self, dest: int, src: int, maxlen: int) -> int:
        """MOL's asc2uni: up to maxlen - 1 characters as 16-bit units, then a 0 unit."""
        if not self._in_ram(dest, 1) or not self._in_ram(src, 1):
            return -1
        if maxlen <= 0:
            return 0
        mem = self.memory
        try:
            text = mem.read_cstring(src, maxlen - 1)
        except GuestAccessError:                  # no NUL: maxlen - 1 characters, if in RAM
            if src + maxlen - 1 > mem.size:
                return -1
            text = bytes(mem.view[src:src + maxlen - 1])
        if not self._in_ram(dest, 2 * len(text) + 2):
            return -1                         # checked before the answer is built
        out = bytearray(2 * len(text) + 2)
        out[1:2 * len(text):2] = text
        mem.write(dest, out)
        self.ctx.code_changed(dest, dest + len(out))
        return len(text)

    def unicode_to_ascii(self, dest: int, src: int, units: int, maxlen: int) -> int:
        """MOL's uni2asc: units outside Latin-1 or 0 are skipped; at most maxlen - 1 bytes.

        The guest's count is bounded by RAM (MOL would read past it: -1) and the units are
        taken in bulk, a step at a time, so that a huge count costs one pass over RAM at
        memory speed and Ctrl-C or SIGTERM is seen within one step.
        """
        import numpy as np      # here, not at import: a resume never needs numpy (~0.1 s)

        mem = self.memory
        if not self._in_ram(dest, 1) or not self._in_ram(src, 1):
            return -1
        if maxlen <= 0:
            return 0
        want = maxlen - 1
        units = max(units, 0)
        available = (mem.size - src) // 2       # whole units between src and the end of RAM
        room = mem.size - dest - 1              # bytes the answer may take before its NUL
        ram = np.frombuffer(mem.view, dtype=np.uint8)
        parts: list[np.ndarray] = []
        have = consumed = 0
        while consumed < units and have < want:
            if consumed >= available:
                return -1                       # MOL would read past RAM
            if consumed and self.ctx.stop_requested():
                return -1                       # molpy is stopping: the guest never sees this
            n = min(UNITS_STEP, units - consumed, available - consumed)
            unit = ram[src + 2 * consumed:src + 2 * (consumed + n)].view(">u2")
            chars = unit[(unit - np.uint16(1)) < 255][:want - have]      # 1..255 (0 wraps to 65535)
            consumed += n
            if chars.size:
                parts.append(chars.astype(np.uint8))
                have += chars.size
                if have > room:
                    return -1                   # the answer would leave RAM
        out = b"".join(p.tobytes() for p in parts) + b"\0"
        del ram, parts
        if not self._in_ram(dest, len(out)):
            return -1
        mem.write(dest, out)
        self.ctx.code_changed(dest, dest + len(out))
        return len(out) - 1


def create(ctx: DeviceContext) -> BootHelper:
    return BootHelper(ctx)
