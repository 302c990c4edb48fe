"""Misc OSI calls: availability, the debugger break, time, exit, sleep, framebuffer info.

Answers follow MOL's os_interface.c and video.c; EXIT's status is molpy's extension
(MOL's EXIT takes no argument).
"""

from __future__ import annotations

import logging
import time

from .device import Device, DeviceContext
from .resources import numeric_res

OSI_CALL_AVAILABLE = 0
OSI_DEBUGGER = 1
OSI_GET_GMT_TIME = 7
OSI_GET_LOCALTIME = 9
OSI_GET_FB_INFO = 32
OSI_EXIT = 54
OSI_USLEEP = 58
EXIT_MAGIC = 0x45584954        # 'EXIT' in r7: r6 is the exit status (molpy's extension)
MAC_EPOCH_OFFSET = 0x7C25B080  # seconds from 1904-01-01 to 1970-01-01
MAX_SLEEP_SLICE = 0.05   # a long USLEEP is cut so that hotkeys and signals are seen

log = logging.getLogger("molpy.osi")


class MiscDevice(Device):
    kind = "MISC"

    def __init__(self, ctx: DeviceContext) -> None:
        self.ctx = ctx

    def attach(self, ctx: DeviceContext) -> None:
        osi = ctx.osi
        osi.register(OSI_CALL_AVAILABLE, self.call_available, 1, "misc")
        osi.register(OSI_DEBUGGER, self.debugger, 1, "misc")
        osi.register(OSI_GET_GMT_TIME, self.gmt_time, 0, "misc")
        osi.register(OSI_GET_LOCALTIME, self.local_time, 0, "misc")
        osi.register(OSI_GET_FB_INFO, self.fb_info, 0, "misc")
        osi.register(OSI_EXIT, self.exit, 2, "misc")
        osi.register(OSI_USLEEP, self.usleep, 1, "misc")

    def call_available(self, selector: int) -> int:
        """1 when ``selector`` is served (MOL's OSI_CALL_AVAILABLE)."""
        return 1 if self.ctx.osi.serves(selector) else 0

    def debugger(self, code: int) -> int:
        """MOL stops in its debugger when one is attached, else logs and goes on: molpy has none."""
        log.warning("osi user break [%d]", code - (1 << 32) if code & 0x80000000 else code)
        return 0

    def gmt_time(self) -> int:
        return int(time.time()) & 0xFFFFFFFF

    def local_time(self) -> int:
        """Local time in seconds since 1904 (MOL's GET_LOCALTIME), plus the adjust_time hours."""
        now = int(time.time())
        adjust = numeric_res(self.ctx.config.resources, "adjust_time")
        dst = 3600 if time.localtime(now).tm_isdst > 0 else 0
        return (now + (adjust or 0) * 3600 + MAC_EPOCH_OFFSET - time.timezone + dst) & 0xFFFFFFFF

    def fb_info(self) -> tuple[int, ...]:
        """No framebuffer: MOL's get_video_info answers 1 and zeroes r4..r8 (address, row
        bytes, width, height, depth). A 0 here would make MOL's firmware draw at address 0."""
        return (1, 0, 0, 0, 0, 0)

    def exit(self, code: int, magic: int) -> int:
        """Status 0 as in MOL, unless r7 holds 'EXIT': then r6 is the status."""
        if magic != EXIT_MAGIC:
            code = 0
        code = code - (1 << 32) if code & 0x80000000 else code
        self.ctx.request_exit(code)
        return 0

    def usleep(self, microseconds: int) -> int:
        """The host really sleeps, and wakes early on a key or a request.

        The slice ends with the call: an interrupt that fell due while the guest slept
        (a guest idles until its decrementer) is taken at once if MSR[EE] is set, not up
        to a slice later, when a guest polling for it may have masked it again."""
        self.ctx.end_slice()     # first: no slice-timer stop falls due while the host sleeps
        frontend = self.ctx.frontend
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


def create(ctx: DeviceContext) -> MiscDevice:
    return MiscDevice(ctx)
