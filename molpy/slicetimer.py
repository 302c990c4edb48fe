"""Ends a guest slice at a host time: molpy's replacement for ``emu_start``'s timeout.

Unicorn's timeout starts a thread for every ``emu_start`` and joins it at the end; the
thread polls in 2 us sleeps that oversleep, so a slice that ends early (an exception, an
OSI EXIT) costs ~300 us to join, which would cap exception delivery near 3,000 a second.
Its stop is also unsynchronised: it can land in whatever runs next on the engine.

This timer is one thread for the machine's life. ``arm`` before ``emu_start`` and
``disarm`` after it; the thread calls ``uc_emu_stop`` only while armed and holds the lock
while doing so, so once ``disarm`` has returned no stop can reach the SPR stub or the next
slice. A stop that lands just after the slice ended on its own is harmless (Unicorn
clears the request when the next ``emu_start`` begins); one that lands just before the
slice began would be lost the same way, so the thread repeats it until ``disarm``.
"""

from __future__ import annotations

import threading
import time

from .cpu import uclib

RETRY_NS = 200_000


class SliceTimer:
    def __init__(self, uch) -> None:
        self._uch = uch
        self._cond = threading.Condition()
        self._deadline: int | None = None     # monotonic ns the thread waits for
        self._armed = False
        self._closed = False
        self._urgent = False                   # urge(): every armed slice ends at once until calm()
        self.fired = 0                         # stops this timer sent (tests, benchmarks)
        self._thread: threading.Thread | None = None

    def arm(self, deadline_ns: int) -> None:
        """Stop the engine at ``deadline_ns`` unless ``disarm`` comes first."""
        with self._cond:
            self._start()
            self._armed = True
            if self._urgent:
                deadline_ns = 0
            if deadline_ns != self._deadline:
                self._deadline = deadline_ns
                self._cond.notify()

    def _start(self) -> None:
        """The thread, started on first use (under the lock: arm and urge may race)."""
        if self._thread is None and not self._closed:
            self._thread = threading.Thread(target=self._loop, name="molpy-slice-timer", daemon=True)
            self._thread.start()

    def disarm(self) -> None:
        with self._cond:
            self._armed = False

    def hurry(self, deadline_ns: int) -> None:
        """Bring an armed deadline forward (from a hook: the decrementer was just written)."""
        with self._cond:
            if self._deadline is None or deadline_ns < self._deadline:
                self._deadline = deadline_ns
                self._cond.notify()

    def urge(self) -> None:
        """End the slice now, and any slice armed before ``calm`` (a debugger's stop request)."""
        with self._cond:
            self._start()
            self._urgent = True
            self._deadline = 0
            self._cond.notify()

    def calm(self) -> None:
        """The stop ``urge`` asked for was taken: slices run their full time again."""
        with self._cond:
            self._urgent = False

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._armed = False
            self._cond.notify()
        if self._thread is not None:
            self._thread.join()

    def _loop(self) -> None:
        with self._cond:
            while not self._closed:
                deadline = self._deadline
                if deadline is None:
                    self._cond.wait()
                    continue
                left = deadline - time.monotonic_ns()
                if left > 0:
                    self._cond.wait(left / 1e9)
                    continue
                if self._armed:
                    uclib.uc_emu_stop(self._uch)
                    self.fired += 1
                    # A stop that lands before emu_start has begun is cleared by it: repeat
                    # until the slice is over (disarm), as Unicorn's own timer cannot.
                    self._deadline = time.monotonic_ns() + RETRY_NS
                else:
                    self._deadline = None
