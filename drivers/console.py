"""Console device: the guest's terminal (TTY_PUTC/TTY_GETC/TTY_IRQ_ACK) and its log (LOG_PUTC).

Answers are MOL's tty.c ones: PUTC returns what write() returned for the one byte (1),
IRQ_ACK 0 (molpy raises no TTY interrupt).
"""

from __future__ import annotations

import logging
from typing import NamedTuple

from .device import Device, DeviceContext, StateError

OSI_LOG_PUTC = 47
OSI_TTY_PUTC = 97
OSI_TTY_GETC = 98
OSI_TTY_IRQ_ACK = 99

guest_log = logging.getLogger("molpy.guest")

LOG_LINE_MAX = 4096       # a longer log line is written out in pieces
TTY_LINE_MAX = 1024       # the end of the guest's current terminal line, redrawn after a resume
KEYS_MAX = 1 << 20        # keys typed but not read, kept in a session


class ConsoleState(NamedTuple):
    """A CONS chunk as a record: keys typed but not read, the partial log line, the
    guest's current terminal line (version 2; version 1 had none)."""

    keys: bytes
    log_line: bytes
    tty_line: bytes


class ConsoleDevice(Device):
    """Characters to the front-end; keys from its queue; log lines to the molpy.guest logger."""

    kind = "CONS"
    version = 2          # 2: keys, log line, tty line, each with a u32 length; 1: no tty line
    min_version = 1

    def __init__(self, ctx: DeviceContext, saved: ConsoleState | None = None) -> None:
        self.ctx = ctx
        self._line = bytearray()
        self.tty_line = bytearray()    # what the guest printed since its last newline
        self._saved = saved
        if saved is not None:          # keys saved unread come first; keys typed since follow
            frontend = ctx.frontend
            frontend.restore_input(saved.keys + frontend.pending_input())
            self._line = bytearray(saved.log_line)
            self.tty_line = bytearray(saved.tty_line)

    def attach(self, ctx: DeviceContext) -> None:
        ctx.osi.register(OSI_TTY_PUTC, self.tty_putc, 1, "console")
        ctx.osi.register(OSI_TTY_GETC, self.tty_getc, 0, "console")
        ctx.osi.register(OSI_TTY_IRQ_ACK, self.tty_irq_ack, 0, "console")
        ctx.osi.register(OSI_LOG_PUTC, self.log_putc, 1, "console")

    def tty_putc(self, c: int) -> int:
        c &= 0xFF
        self.ctx.frontend.putc(c)
        if c == 0x0A:
            self.tty_line.clear()
        else:
            self.tty_line.append(c)
            if len(self.tty_line) > TTY_LINE_MAX:
                del self.tty_line[:-TTY_LINE_MAX]
        return 1

    def tty_irq_ack(self) -> int:
        return 0

    def tty_getc(self) -> int:
        return self.ctx.frontend.getc()

    def log_putc(self, c: int) -> int:
        c &= 0xFF
        if c == 0x0A or len(self._line) >= LOG_LINE_MAX:
            guest_log.info("%s", self._line.decode("latin-1"))
            self._line.clear()
        elif c != 0x0D:
            self._line.append(c)
        return 0

    def save_state(self) -> bytes:
        """Keys typed but not yet read by the guest, the partial log line, the partial tty line."""
        keys = self.ctx.frontend.pending_input()[:KEYS_MAX]
        return b"".join(len(part).to_bytes(4, "big") + part
                        for part in (keys, bytes(self._line), bytes(self.tty_line)))

    @classmethod
    def read_state(cls, data: bytes, version: int) -> ConsoleState:
        return parse_state(data, version)

    @classmethod
    def restore(cls, ctx: DeviceContext, record: ConsoleState) -> "ConsoleDevice":
        return cls(ctx, record)

    @classmethod
    def describe(cls, data: bytes, version: int) -> str:
        try:
            keys, _, tty_line = parse_state(data, version)
        except ValueError as e:
            return f"(damaged: {e})"
        return f"{len(keys)} keys waiting" + (f"; the guest's line: {tty_line[-40:]!r}" if tty_line else "")

    def redraw(self) -> None:
        """After a resume: the guest's current line again (its prompt), where the user types."""
        if self.tty_line:
            self.ctx.frontend.write(bytes(self.tty_line))

    def reset(self) -> None:
        """Exactly the saved keys and log line: input fed before reset() is dropped."""
        if self._saved is not None:
            self.ctx.frontend.restore_input(self._saved.keys)
            self._line = bytearray(self._saved.log_line)
            self.tty_line = bytearray(self._saved.tty_line)

    def close(self) -> None:
        if self._line:
            guest_log.info("%s", self._line.decode("latin-1"))
            self._line.clear()


def parse_state(data: bytes, version: int) -> ConsoleState:
    """The record of a CONS chunk, every length checked.

    Version 2: three parts, each a u32 length and its bytes. Version 1 (no tty line): a u32
    key count, the keys, then the log line.
    """
    if version >= 2:
        parts, pos = [], 0
        for limit in (KEYS_MAX, LOG_LINE_MAX, TTY_LINE_MAX):
            if pos + 4 > len(data):
                raise StateError("console state is truncated")
            n = int.from_bytes(data[pos:pos + 4], "big")
            if n > limit or pos + 4 + n > len(data):
                raise StateError("console state has a bad length")
            parts.append(bytes(data[pos + 4:pos + 4 + n]))
            pos += 4 + n
        if pos != len(data):
            raise StateError("console state has bytes after its end")
        return ConsoleState(parts[0], parts[1], parts[2])
    if len(data) < 4:
        raise StateError("console state is truncated")
    n = int.from_bytes(data[:4], "big")
    if n > KEYS_MAX or len(data) < 4 + n or len(data) - 4 - n > LOG_LINE_MAX:
        raise StateError("console state is truncated or has a bad length")
    return ConsoleState(bytes(data[4:4 + n]), bytes(data[4 + n:]), b"")


def create(ctx: DeviceContext) -> ConsoleDevice:
    return ConsoleDevice(ctx)
