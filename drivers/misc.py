"""Misc OSI calls: availability, time, exit, sleep and the boot helper."""

from __future__ import annotations

import time

from .device import Device

OSI_CALL_AVAILABLE = 0
OSI_GET_GMT_TIME = 7
OSI_EXIT = 54
OSI_USLEEP = 58
OSI_BOOT_HELPER = 78
BOOT_HELPER_RAM_SIZE = 35
MAX_SLEEP_SLICE = 0.05   # a long USLEEP is cut so that hotkeys and signals are seen


class MiscDevice(Device):
    kind = "MISC"

    def __init__(self, machine) -> None:
        self.machine = machine

    def attach(self, machine) -> None:
        osi = machine.osi
        osi.register(OSI_CALL_AVAILABLE, self.call_available, 1, "misc")
        osi.register(OSI_GET_GMT_TIME, self.gmt_time, 0, "misc")
        osi.register(OSI_EXIT, self.exit, 1, "misc")
        osi.register(OSI_USLEEP, self.usleep, 1, "misc")
        osi.register(OSI_BOOT_HELPER, self.boot_helper, 1, "misc")

    def call_available(self, selector: int) -> int:
        """1 when ``selector`` is served (MOL's OSI_CALL_AVAILABLE)."""
        return 1 if self.machine.osi.serves(selector) else 0

    def gmt_time(self) -> int:
        return int(time.time()) & 0xFFFFFFFF

    def exit(self, code: int) -> int:
        code = code - (1 << 32) if code & 0x80000000 else code
        self.machine.request_exit(code)
        return 0

    def usleep(self, microseconds: int) -> int:
        """The host really sleeps, and wakes early on a key or a request."""
        frontend = self.machine.frontend
        frontend.flush()
        if frontend.quit_on_eof and frontend.eof and not frontend.has_input():
            # stdin was a pipe and it ended: a guest idling for keys would wait forever
            frontend.request = frontend.request or "quit"
            return 0
        deadline = time.monotonic() + min(microseconds, 10_000_000) / 1e6
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or frontend.request is not None:
                break
            frontend.wait_input(min(left, MAX_SLEEP_SLICE))
            if frontend.has_input():
                break
        return 0

    def boot_helper(self, op: int) -> int:
        if op == BOOT_HELPER_RAM_SIZE:
            return self.machine.memory.size
        return -1


def create(machine) -> MiscDevice:
    return MiscDevice(machine)
