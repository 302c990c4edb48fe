"""Console device: the guest's terminal (TTY_PUTC/TTY_GETC/TTY_IRQ_ACK) and its log (LOG_PUTC).

Answers are MOL's tty.c ones: PUTC returns what write() returned for the one byte (1),
IRQ_ACK 0 (molpy raises no TTY interrupt).
"""

from __future__ import annotations

import logging

from .device import Device

OSI_LOG_PUTC = 47
OSI_TTY_PUTC = 97
OSI_TTY_GETC = 98
OSI_TTY_IRQ_ACK = 99

guest_log = logging.getLogger("molpy.guest")


class ConsoleDevice(Device):
    """Characters to the front-end; keys from its queue; log lines to the molpy.guest logger."""

    kind = "CONS"

    def __init__(self, machine) -> None:
        self.machine = machine
        self._line = bytearray()

    def attach(self, machine) -> None:
        machine.osi.register(OSI_TTY_PUTC, self.tty_putc, 1, "console")
        machine.osi.register(OSI_TTY_GETC, self.tty_getc, 0, "console")
        machine.osi.register(OSI_TTY_IRQ_ACK, self.tty_irq_ack, 0, "console")
        machine.osi.register(OSI_LOG_PUTC, self.log_putc, 1, "console")

    def tty_putc(self, c: int) -> int:
        self.machine.frontend.putc(c & 0xFF)
        return 1

    def tty_irq_ack(self) -> int:
        return 0

    def tty_getc(self) -> int:
        return self.machine.frontend.getc()

    def log_putc(self, c: int) -> int:
        c &= 0xFF
        if c == 0x0A or len(self._line) >= 4096:
            guest_log.info("%s", self._line.decode("latin-1"))
            self._line.clear()
        elif c != 0x0D:
            self._line.append(c)
        return 0

    def save_state(self) -> bytes:
        """Keys typed but not yet read by the guest, then the partial log line."""
        keys = self.machine.frontend.pending_input()
        return len(keys).to_bytes(4, "big") + keys + bytes(self._line)

    @staticmethod
    def _parse(data: bytes) -> tuple[bytes, bytes]:
        """(keys, partial log line), checked: the session file is untrusted."""
        n = int.from_bytes(data[:4], "big")
        if len(data) < 4 or len(data) < 4 + n:
            raise ValueError("console state is truncated")
        if len(data) - 4 - n > 4096:
            raise ValueError("console state: the partial log line is longer than a line can be")
        return bytes(data[4:4 + n]), bytes(data[4 + n:])

    def verify_state(self, data: bytes, deep: bool = False) -> list[str]:
        try:
            self._parse(data)
        except ValueError as e:
            return [str(e)]
        return []

    def load_state(self, data: bytes) -> None:
        """Keys saved unread come first; keys typed since (before the resume) follow."""
        self._saved = self._parse(data)
        frontend = self.machine.frontend
        frontend.restore_input(self._saved[0] + frontend.pending_input())
        self._line = bytearray(self._saved[1])

    def reset(self) -> None:
        """Exactly the saved keys and log line: input fed before reset() is dropped."""
        if hasattr(self, "_saved"):
            self.machine.frontend.restore_input(self._saved[0])
            self._line = bytearray(self._saved[1])

    def close(self) -> None:
        if self._line:
            guest_log.info("%s", self._line.decode("latin-1"))
            self._line.clear()


def create(machine) -> ConsoleDevice:
    return ConsoleDevice(machine)
