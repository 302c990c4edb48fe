"""Last-resort net for faults in native code: terminal restored, one line, exit 128+signal.

A fault inside the emulator or a copy out of guest RAM (SIGBUS when the session file
that RAM is mapped from was truncated under the guest, SIGSEGV from a bug) cannot be
handled by Python's signal module: its handler only runs at the next Python
instruction, and the faulting instruction re-executes first, for ever. This net is a
sigaction handler made with ctypes. Its body only calls libc through pointers and
buffers prepared beforehand: alarm (so that, should it ever block, the process still
ends), tcsetattr with the terminal settings saved before raw mode, write of a prepared
line, _exit. It is still a ctypes callback (it takes the GIL), which is safe at the
places a fault can happen here (emu_start runs without the GIL; copies out of RAM hold
no lock the callback needs); the alarm bounds the rest.
"""

from __future__ import annotations

import ctypes
import signal

from .status import SIGNAL_BASE

FATAL = (signal.SIGBUS, signal.SIGSEGV, signal.SIGILL, signal.SIGFPE, signal.SIGABRT)
TERMIOS_BYTES = 256             # more than any libc's struct termios (glibc: 60)
SA_NODEFER = 0x40000000
SA_RESETHAND = 0x80000000
SA_ONSTACK = 0x08000000
TCSANOW = 0
ALARM_SECONDS = 2

_WHAT = {signal.SIGBUS: "bus error", signal.SIGSEGV: "segmentation fault",
         signal.SIGILL: "illegal instruction", signal.SIGFPE: "arithmetic fault",
         signal.SIGABRT: "abort"}


class _Sigaction(ctypes.Structure):
    """struct sigaction as glibc and musl lay it out on Linux (x86-64, arm64 ...)."""

    _fields_ = [("sa_handler", ctypes.c_void_p), ("sa_mask", ctypes.c_ulong * (128 // ctypes.sizeof(ctypes.c_ulong))),
                ("sa_flags", ctypes.c_int), ("sa_restorer", ctypes.c_void_p)]


class _Net:
    def __init__(self) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        self.write = libc.write
        self.write.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_size_t]
        self.exit = libc._exit
        self.exit.argtypes = [ctypes.c_int]
        self.alarm = libc.alarm
        self.alarm.argtypes = [ctypes.c_uint]
        self.signal = libc.signal
        self.signal.argtypes = [ctypes.c_int, ctypes.c_void_p]
        self.tcgetattr = libc.tcgetattr
        self.tcgetattr.argtypes = [ctypes.c_int, ctypes.c_void_p]
        self.tcsetattr = libc.tcsetattr
        self.tcsetattr.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_void_p]
        self.sigaction = libc.sigaction
        self.sigaction.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p]
        self.termios = ctypes.create_string_buffer(TERMIOS_BYTES)
        self.tty_fd = -1
        self.lines = {s: self._line(s, None) for s in FATAL}
        self.callback = ctypes.CFUNCTYPE(None, ctypes.c_int)(self._on_fault)

    @staticmethod
    def _line(signum: int, bus_context: str | None) -> bytes:
        name = signal.Signals(signum).name
        if signum == signal.SIGBUS and bus_context:
            text = f"molpy: {bus_context} ({name}); stopped"
        else:
            text = f"molpy: fatal error: {_WHAT[signum]} ({name}) in molpy or the emulator; stopped"
        return (text + "\n").encode("utf-8", "replace")

    def _on_fault(self, signum: int) -> None:
        # Only libc calls on prepared data from here on.
        self.signal(signal.SIGALRM, None)            # SIG_DFL: the alarm ends the process
        self.alarm(ALARM_SECONDS)
        if self.tty_fd >= 0:
            self.tcsetattr(self.tty_fd, TCSANOW, self.termios)
        line = self.lines.get(signum, b"molpy: fatal error; stopped\n")
        self.write(2, line, len(line))
        self.exit(SIGNAL_BASE + signum)

    def install(self) -> None:
        action = _Sigaction()
        action.sa_handler = ctypes.cast(self.callback, ctypes.c_void_p).value
        # A fault inside the handler itself gets the default action: no loop.
        action.sa_flags = SA_RESETHAND | SA_NODEFER | SA_ONSTACK
        self.previous = {}
        for signum in FATAL:
            old = _Sigaction()
            if self.sigaction(signum, ctypes.byref(action), ctypes.byref(old)) != 0:
                raise OSError(ctypes.get_errno(), f"sigaction({signum}) failed")
            self.previous[signum] = old

    def uninstall(self) -> None:
        for signum, old in self.previous.items():
            self.sigaction(signum, ctypes.byref(old), None)


_net: _Net | None = None


def install() -> None:
    """Catch fatal faults for the rest of the process's life (idempotent)."""
    global _net
    if _net is None:
        net = _Net()
        net.install()
        _net = net


def uninstall() -> None:
    """Put back the handlers found at ``install`` (molpy used as a library inside a program)."""
    global _net
    if _net is not None:
        _net.uninstall()
        _net = None


def set_terminal(fd: int | None) -> None:
    """Save ``fd``'s terminal settings now (before raw mode); a fault puts them back.

    None: the terminal is already back to the user's settings, nothing to restore.
    """
    if _net is None:
        return
    if fd is None:
        _net.tty_fd = -1
    elif _net.tcgetattr(fd, _net.termios) == 0:
        _net.tty_fd = fd


def set_bus_context(text: str | None) -> None:
    """What a SIGBUS means now, e.g. 'the session file X changed under the running guest'."""
    if _net is not None:
        _net.lines[signal.SIGBUS] = _Net._line(signal.SIGBUS, text)
