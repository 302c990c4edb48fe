"""Keyboard: MOL's OSI keyboard queue (kbd.c): 50 KBD_CNTRL, 51 GET_ADB_KEY.

MOL posted ADB key events (key code, 0x80 set on release) into a 16-slot ring that
GET_ADB_KEY drains: r3 = the event, r4 = the host's raw key code, or r3 = -1 (r4 left
alone) when the ring is empty. KBD_CNTRL 1 routes keys to this queue, 2 gives them
back to the receiver it had before; every command answers 0.

molpy's keys come from the console front-end as characters. While the queue is active
and empty, GET_ADB_KEY takes the next waiting character and posts what a US keyboard
sends for it: modifiers (shift 0x38, control 0x36) down, the key down, the key up,
the modifiers up. A character no key makes is dropped. The queue starts inactive (MOL
starts it active only when the tree has a ``mol-keyboard`` node, which MOL's trees do
not), so until a guest activates it the characters stay for TTY_GETC. molpy has no
host key codes: r4 is 0. No key is ever held down between calls, so the key releases
MOL's KBD_CNTRL sends for held keys never occur.
"""

from __future__ import annotations

import logging

from .device import Device, DeviceContext, StateError

log = logging.getLogger("molpy.keyboard")

OSI_KBD_CNTRL = 50
OSI_GET_ADB_KEY = 51
KBD_ACTIVATE = 1
KBD_SUSPEND = 2
RING_SLOTS = 16                 # MOL's KEY_BUF_SIZE; one slot stays free
RELEASE = 0x80
ADB_SHIFT = 0x38
ADB_CONTROL = 0x36

_PLAIN = {
    "a": 0x00, "s": 0x01, "d": 0x02, "f": 0x03, "h": 0x04, "g": 0x05, "z": 0x06, "x": 0x07,
    "c": 0x08, "v": 0x09, "b": 0x0B, "q": 0x0C, "w": 0x0D, "e": 0x0E, "r": 0x0F, "y": 0x10,
    "t": 0x11, "1": 0x12, "2": 0x13, "3": 0x14, "4": 0x15, "6": 0x16, "5": 0x17, "=": 0x18,
    "9": 0x19, "7": 0x1A, "-": 0x1B, "8": 0x1C, "0": 0x1D, "]": 0x1E, "o": 0x1F, "u": 0x20,
    "[": 0x21, "i": 0x22, "p": 0x23, "\r": 0x24, "\n": 0x24, "l": 0x25, "j": 0x26, "'": 0x27,
    "k": 0x28, ";": 0x29, "\\": 0x2A, ",": 0x2B, "/": 0x2C, "n": 0x2D, "m": 0x2E, ".": 0x2F,
    "\t": 0x30, " ": 0x31, "`": 0x32, "\x7f": 0x33, "\x08": 0x33, "\x1b": 0x35,
}
_SHIFTED = dict(zip('~!@#$%^&*()_+{}|:"<>?', '`1234567890-=[]\\;\',./'))


def key_events(ch: int) -> list[int]:
    """The ADB events a US keyboard sends for the character ``ch`` ([] when none does)."""
    c = chr(ch)
    mods: list[int] = []
    if c in _PLAIN:
        code = _PLAIN[c]
    elif c.isascii() and c.isupper():
        mods, code = [ADB_SHIFT], _PLAIN[c.lower()]
    elif c in _SHIFTED:
        mods, code = [ADB_SHIFT], _PLAIN[_SHIFTED[c]]
    elif 1 <= ch <= 26:
        mods, code = [ADB_CONTROL], _PLAIN[chr(ch + 0x60)]
    elif ch in (0x1C, 0x1D):
        mods, code = [ADB_CONTROL], _PLAIN["\\" if ch == 0x1C else "]"]
    else:
        return []
    return mods + [code, code | RELEASE] + [m | RELEASE for m in reversed(mods)]


class Keyboard(Device):
    kind = "KEYB"

    def __init__(self, ctx: DeviceContext, saved: bytes | None = None) -> None:
        self.frontend = ctx.frontend
        self.queue: list[int] = []            # ADB events waiting
        self.active = False                   # keys go to this queue
        self.saved: bool | None = None        # the routing KBD_CNTRL 1 replaced
        self._loaded = self.save_state() if saved is None else saved
        self.reset()

    def attach(self, ctx: DeviceContext) -> None:
        ctx.osi.register(OSI_KBD_CNTRL, self.cntrl, 1, "keyboard")
        ctx.osi.register(OSI_GET_ADB_KEY, self.get_key, 0, "keyboard")

    def cntrl(self, cmd: int) -> int:
        if cmd == KBD_ACTIVATE:
            self.saved = self.active
            self.active = True
        elif cmd == KBD_SUSPEND and self.saved is not None:
            self.active = self.saved
        return 0

    def _refill(self) -> None:
        while not self.queue:
            ch = self.frontend.getc()
            if ch < 0:
                return
            events = key_events(ch)
            if not events:
                log.debug("no key makes character 0x%02x; dropped", ch)
            self.queue.extend(events)

    def get_key(self) -> int | tuple[int, int]:
        if self.active and not self.queue:
            self._refill()
        if not self.queue:
            return -1
        return (self.queue.pop(0), 0)

    def save_state(self) -> bytes:
        """active, saved (2: none), queue length, then the queued events."""
        saved = 2 if self.saved is None else int(self.saved)
        return bytes([int(self.active), saved, len(self.queue)]) + bytes(self.queue)

    @classmethod
    def read_state(cls, data: bytes, version: int) -> bytes:
        """The checked chunk is the record: active, saved, queue length, the events."""
        if len(data) < 3 or data[0] > 1 or data[1] > 2:
            raise StateError("keyboard state is damaged")
        if len(data) != 3 + data[2] or data[2] >= RING_SLOTS:
            raise StateError("keyboard state has a bad queue length")
        return bytes(data)

    @classmethod
    def describe(cls, data: bytes, version: int) -> str:
        try:
            cls.read_state(data, version)
        except ValueError as e:
            return f"(damaged: {e})"
        return f"{data[2]} key events queued"

    @classmethod
    def restore(cls, ctx: DeviceContext, record: bytes) -> "Keyboard":
        return cls(ctx, record)

    def reset(self) -> None:
        data = self._loaded
        self.active = bool(data[0])
        self.saved = None if data[1] == 2 else bool(data[1])
        self.queue = list(data[3:])


def create(ctx: DeviceContext) -> Keyboard:
    return Keyboard(ctx)
