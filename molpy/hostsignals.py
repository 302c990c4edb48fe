"""Signals that end or stop molpy: each becomes an orderly stop with status 128+signal.

Where molpy can stop at once (start-up, reading a file, waiting), a terminating signal
raises :class:`SignalExit` and the cleanup code runs as it unwinds. Inside a
``deferred()`` section (the guest's run loop, a session save, a cow commit) the signal
is only recorded, the listeners are told (the console turns it into a stop request)
and any ``select`` wakes through the wakeup descriptor; the section's owner stops at
its next safe point, so no file is left half written. An ``interruptible()`` section
inside it (a blocked write) gives way at once.

SIGTSTP (Ctrl-Z) lets the listeners put the terminal back to the user's settings,
then stops molpy the ordinary way; SIGCONT lets them take it again. SIGKILL and
SIGSTOP cannot be caught; faults (SIGBUS, SIGSEGV ...) are molpy.crashnet's.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator

from .signalset import JOB_CONTROL, TERMINATING
from .status import SIGNAL_BASE

_RAISE, _DEFER = "raise", "defer"


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"SIGRTMIN+{signum - signal.SIGRTMIN}" if signal.SIGRTMIN <= signum <= signal.SIGRTMAX \
            else f"signal {signum}"


class SignalExit(BaseException):
    """A terminating signal arrived where molpy could stop at once (like KeyboardInterrupt)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal_name(signum))
        self.signum = signum

    @property
    def status(self) -> int:
        return SIGNAL_BASE + self.signum


class SignalGuard:
    """The process's handler for terminating signals and for Ctrl-Z; see the module doc.

    Listeners are objects with any of ``on_signal(signum)``, ``suspend()`` and ``resume()``.
    """

    def __init__(self) -> None:
        self.received: int | None = None   # the first terminating signal, if any
        self._modes: list[str] = []
        self._raised = False
        self._listeners: list = []
        self._previous: dict[int, object] = {}
        self._wakeup_previous: int | None = None

    # -- installation --

    def install(self) -> "SignalGuard":
        """Take every terminating signal still at its default, and SIGTSTP/SIGCONT."""
        global _current
        import threading  # noqa: F401  (for _handle, which must import nothing new)
        for signum in TERMINATING + JOB_CONTROL:
            old = signal.getsignal(signum)
            if old not in (signal.SIG_DFL, signal.default_int_handler):
                continue                    # someone else handles it (or ignores it on purpose)
            self._previous[signum] = old
            signal.signal(signum, self._handle)
        _current = self
        return self

    def uninstall(self) -> None:
        global _current
        for signum, old in self._previous.items():
            if signal.getsignal(signum) == self._handle:
                signal.signal(signum, old)
        self._previous.clear()
        self.wake_with(None)
        if _current is self:
            _current = None

    def ignore_from_now(self) -> None:
        """The process is about to exit with its status decided: later signals are ignored."""
        for signum in self._previous:
            if signal.getsignal(signum) == self._handle and signum not in (signal.SIGTSTP, signal.SIGCONT):
                signal.signal(signum, signal.SIG_IGN)

    def wake_with(self, fd: int | None) -> None:
        """Write a byte to ``fd`` on every signal (a select on its pipe then wakes)."""
        if fd is not None:
            old = signal.set_wakeup_fd(fd, warn_on_full_buffer=False)
            if self._wakeup_previous is None:
                self._wakeup_previous = old
        elif self._wakeup_previous is not None:
            signal.set_wakeup_fd(self._wakeup_previous)
            self._wakeup_previous = None

    def add_listener(self, listener) -> None:
        self._listeners.append(listener)

    def remove_listener(self, listener) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    # -- sections --

    def deferred(self) -> contextlib.AbstractContextManager[None]:
        """Signals are recorded, not raised: the code inside finishes what it does."""
        return self._mode(_DEFER)

    def interruptible(self) -> contextlib.AbstractContextManager[None]:
        """A signal raises SignalExit here even inside a deferred section (a blocked write)."""
        return self._mode(_RAISE)

    def hold(self) -> "SignalGuard":
        """Record signals, raise none, until :meth:`release`: for molpy's start-up, before
        the code that turns SignalExit into its one line is running."""
        self._modes.append(_DEFER)
        return self

    def release(self) -> None:
        """End :meth:`hold`; a signal that arrived meanwhile raises SignalExit now."""
        self._modes.pop()
        if self.received is not None and not self._modes and not self._raised:
            self._raised = True
            raise SignalExit(self.received)

    @contextlib.contextmanager
    def _mode(self, mode) -> Iterator[None]:
        self._modes.append(mode)
        try:
            yield
        finally:
            self._modes.pop()

    @property
    def status(self) -> int | None:
        return None if self.received is None else SIGNAL_BASE + self.received

    # -- the handler (runs in the main thread, between two Python instructions) --

    def _handle(self, signum: int, frame) -> None:
        if signum == signal.SIGTSTP:
            self._stop()
            return
        if signum == signal.SIGCONT:
            self._tell("resume")
            return
        # Outside any section only the first signal raises: the cleanup it starts runs to the end.
        mode = self._modes[-1] if self._modes else (_DEFER if self._raised else _RAISE)
        if mode == _RAISE and _swallowed_at(frame):
            # Again in a millisecond, from another thread: by then the callback has returned
            # (if not, this comes round once more). Not at once: the handler would run again
            # inside itself, still in the callback.
            import threading                    # loaded by install(): nothing is imported here

            again = threading.Timer(0.001, os.kill, (os.getpid(), signum))
            again.daemon = True
            again.start()
            return
        if self.received is None:
            self.received = signum
        self._tell("on_signal", signum)
        if mode == _RAISE:
            self._raised = True
            raise SignalExit(signum)

    def _stop(self) -> None:
        self._tell("suspend")
        signal.signal(signal.SIGTSTP, signal.SIG_DFL)
        try:
            os.kill(os.getpid(), signal.SIGTSTP)   # stops here until SIGCONT (fg, bg, kill -CONT)
        finally:
            signal.signal(signal.SIGTSTP, self._handle)
        self._tell("resume")

    def _tell(self, what: str, *args) -> None:
        for listener in list(self._listeners):
            fn = getattr(listener, what, None)
            if fn is not None:
                fn(*args)


def _swallowed_at(frame) -> bool:
    """Whether an exception raised at ``frame`` would be printed and dropped by Python: in a
    weakref callback (the import system's module-lock callback runs during any import) or
    in a ``__del__``; SignalExit there would end nothing and print a traceback."""
    while frame is not None:
        code = frame.f_code
        if code.co_name == "__del__" or (code.co_name == "cb" and "importlib._bootstrap" in code.co_filename):
            return True
        frame = frame.f_back
    return False


_current: SignalGuard | None = None


def current() -> SignalGuard | None:
    """The installed guard (the CLI installs one), or None in library use."""
    return _current


def deferred():
    """``current().deferred()``, or nothing when no guard is installed."""
    return _current.deferred() if _current is not None else contextlib.nullcontext()


def interruptible():
    return _current.interruptible() if _current is not None else contextlib.nullcontext()
