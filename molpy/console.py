"""Console front-ends: where the guest's TTY goes and where its keys come from.

Three front-ends share one small interface (write, getc, wait_input, poll, request):
a terminal in raw mode (hotkeys: Ctrl-] quits, F12 saves the session), a pipe
(stdin bytes go to the guest, output unbuffered, no terminal calls) and an
in-memory buffer for the library and tests.
"""

from __future__ import annotations

import collections
import os
import select
import termios
import time

from . import crashnet
from .hostsignals import SignalExit, interruptible

CTRL_RBRACKET = 0x1D
# What xterm, tmux, screen and the Linux console send for F12 (plain and with modifiers).
F12_SEQUENCES = (b"\x1b[24~", b"\x1b[24;2~", b"\x1b[24;5~", b"\x1b[[L")
ESC_HOLD_SECONDS = 0.05   # how long a lone ESC prefix waits for the rest of a sequence

OUT_CHUNK = 4096          # guest output is written when this much is waiting, or sooner
INPUT_QUEUE_MAX = 64 << 10  # keys not yet read by the guest; more input waits in the pipe
QUIT = "quit"
SAVE = "save"
INTERRUPT = "interrupt"


class Frontend:
    """Base: an input queue fed by ``_feed`` and a place for output.

    Optional capabilities, declared here with defaults that do nothing: ``line_open``
    (the guest's last line has no newline yet), ``output_error`` (why its output could
    not be written) and ``attach_signals`` (be woken by a signal)."""

    line_open: bool = False
    output_error: "OSError | None" = None

    def attach_signals(self, guard) -> None:
        """Signals stop the guest within one slice: this front-end is polled, not woken."""

    def __init__(self) -> None:
        self._queue: collections.deque[int] = collections.deque()
        self.request: str | None = None   # QUIT, SAVE or INTERRUPT, taken by the run loop
        self.eof = False
        self.quit_on_eof = False          # a guest idling after the input ended quits
        self._out = bytearray()           # guest output since the last flush

    # -- guest side --
    def write(self, data: bytes) -> None:
        raise NotImplementedError

    def putc(self, c: int) -> None:
        """One character from the guest; written out by ``flush`` (at the latest each slice)."""
        self._out.append(c)
        if len(self._out) >= OUT_CHUNK:
            self.flush()

    def flush(self) -> None:
        if self._out:
            data = bytes(self._out)
            self._out.clear()
            self.write(data)

    def getc(self) -> int:
        """Next key for the guest, or -1 when none is waiting."""
        self.flush()
        if not self._queue:
            self.poll()
        return self._queue.popleft() if self._queue else -1

    def wait_input(self, seconds: float) -> None:
        """Sleep up to ``seconds``; return early when a key arrives or a request is made."""
        time.sleep(seconds)

    def has_input(self) -> bool:
        return bool(self._queue)

    def pending_input(self) -> bytes:
        return bytes(self._queue)

    def restore_input(self, data: bytes) -> None:
        """Put keys back into the queue (session resume)."""
        self._queue.clear()
        self._queue.extend(data)

    # -- host side --
    def poll(self) -> None:
        """Take whatever input is available now, without blocking."""

    def take_request(self) -> str | None:
        req, self.request = self.request, None
        return req

    def _feed(self, data: bytes) -> None:
        self._queue.extend(data)

    def close(self) -> None:
        pass


class BufferConsole(Frontend):
    """In-memory console for the library and tests."""

    def __init__(self, input_bytes: bytes = b"") -> None:
        super().__init__()
        self.output = bytearray()
        self._feed(input_bytes)

    def write(self, data: bytes) -> None:
        self.output += data

    def feed(self, data: bytes) -> None:
        self._feed(data)

    def wait_input(self, seconds: float) -> None:
        if not self._queue:
            time.sleep(seconds)


class _FdConsole(Frontend):
    """Shared by the pipe and terminal front-ends: select-based input on a descriptor."""

    def __init__(self, in_fd: int | None, out_fd: int) -> None:
        super().__init__()
        self.in_fd = in_fd
        self.out_fd = out_fd
        self.eof = in_fd is None
        self._wake_r, self._wake_w = os.pipe()
        for fd in (self._wake_r, self._wake_w):
            os.set_blocking(fd, False)
        self._guard = None
        self.output_error: OSError | None = None   # why the guest's output could not be written
        self.line_open = False                     # the last byte written was not a newline

    def attach_signals(self, guard) -> None:
        """Signals (molpy.hostsignals) stop the guest within one slice and wake any wait."""
        self._guard = guard
        guard.add_listener(self)
        guard.wake_with(self._wake_w)
        if guard.received is not None:         # it came while this console was being made
            self.on_signal(guard.received)

    def on_signal(self, signum: int) -> None:
        self.request = INTERRUPT

    def write(self, data: bytes) -> None:
        """Guest output, unbuffered. A failed write ends the run (``output_error``), a
        blocked one gives way to a signal; either way the rest of the output is dropped.
        Once a signal has asked the run to stop, output goes out only as far as it can
        without waiting: no second signal comes to end a write that blocks."""
        if self.output_error is not None or not data:
            return
        self.line_open = data[-1:] != b"\n"
        view = memoryview(data)
        while view:
            chunk = view
            if self.request == INTERRUPT:
                if not select.select([], [self.out_fd], [], 0)[1]:
                    return                   # stopping: what would wait is dropped
                chunk = view[:select.PIPE_BUF]   # fits whole where select saw room
            try:
                with interruptible():
                    n = os.write(self.out_fd, chunk)
            except SignalExit:
                return                       # the request is made: the run stops
            except BlockingIOError:
                if self.request == INTERRUPT:
                    return
                select.select([self._wake_r], [self.out_fd], [], 0.1)
                continue
            except OSError as e:             # EPIPE, ENOSPC, EIO (the terminal hung up) ...
                self.output_error = e
                self.request = self.request or QUIT
                return
            view = view[n:]

    def _read_available(self, timeout: float = 0.0) -> bytes:
        full = len(self._queue) >= INPUT_QUEUE_MAX      # a guest that does not read: no more
        fds = [self._wake_r] + ([] if self.eof or full else [self.in_fd])
        try:
            ready, _, _ = select.select(fds, [], [], timeout)
        except InterruptedError:  # pragma: no cover - PEP 475 retries
            return b""
        if self._wake_r in ready:
            try:
                os.read(self._wake_r, 512)
            except BlockingIOError:
                pass
        if self.eof or full or self.in_fd not in ready:
            return b""
        try:
            data = os.read(self.in_fd, 4096)
        except (BlockingIOError, InterruptedError):
            return b""
        except OSError:
            data = b""
        if not data:
            self.eof = True
        return data

    def poll(self) -> None:
        data = self._read_available(0.0)
        if data:
            self._input(data)

    def _input(self, data: bytes) -> None:
        self._feed(data)

    def wait_input(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self._queue and self.request is None:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            if self.eof:
                # Nothing can arrive but a signal: still wake on it.
                select.select([self._wake_r], [], [], left)
                self.poll()
                continue
            data = self._read_available(left)
            if data:
                self._input(data)

    def close(self) -> None:
        if self._guard is not None:
            self._guard.remove_listener(self)
            self._guard.wake_with(None)
            self._guard = None
        for fd in (self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass


class PipeConsole(_FdConsole):
    """stdin bytes go to the guest; output is written unbuffered; no terminal calls."""

    def __init__(self, in_fd: int | None, out_fd: int) -> None:
        super().__init__(in_fd, out_fd)
        self.quit_on_eof = True


class TerminalConsole(_FdConsole):
    """A terminal in raw mode: keys to the guest, Ctrl-] quits, F12 saves.

    The terminal's settings are restored by ``close``; the CLI calls it on every exit
    path, around a stop (Ctrl-Z: ``suspend``, then ``resume`` on SIGCONT), and
    molpy.crashnet puts them back after a fatal fault.
    """

    def __init__(self, in_fd: int = 0, out_fd: int = 1) -> None:
        super().__init__(in_fd, out_fd)
        self._saved = termios.tcgetattr(in_fd)
        self._pending = b""          # a partial escape sequence held back
        self._pending_since = 0.0
        mode = termios.tcgetattr(in_fd)
        iflag, oflag, cflag, lflag = mode[0:4]
        iflag &= ~(termios.IGNBRK | termios.BRKINT | termios.PARMRK | termios.ISTRIP
                   | termios.INLCR | termios.IGNCR | termios.ICRNL | termios.IXON)
        lflag &= ~(termios.ECHO | termios.ECHONL | termios.ICANON | termios.IEXTEN)
        cflag = (cflag & ~(termios.CSIZE | termios.PARENB)) | termios.CS8
        # OPOST stays on (guest "\n" becomes CR LF) and so does ISIG (Ctrl-C, Ctrl-\ and
        # Ctrl-Z are signals, handled by molpy.hostsignals).
        mode[0:4] = [iflag, oflag, cflag, lflag]
        mode[6] = list(mode[6])
        mode[6][termios.VMIN] = 1
        mode[6][termios.VTIME] = 0
        self._raw = mode
        crashnet.set_terminal(in_fd)
        termios.tcsetattr(in_fd, termios.TCSAFLUSH, mode)
        self._restored = False

    def _set(self, mode) -> None:
        # TCSANOW: OPOST is the same in both modes, and waiting for the output to drain
        # could block for ever on a terminal that is not read.
        try:
            termios.tcsetattr(self.in_fd, termios.TCSANOW, mode)
        except termios.error:         # the terminal hung up
            pass

    def suspend(self) -> None:
        """Ctrl-Z: the user's settings while molpy is stopped."""
        if not self._restored:
            self._set(self._saved)

    def resume(self) -> None:
        """SIGCONT: raw mode again."""
        if not self._restored:
            self._set(self._raw)

    def _input(self, data: bytes) -> None:
        data = self._pending + data
        self._pending = b""
        out = bytearray()
        i = 0
        while i < len(data):
            b = data[i]
            if b == CTRL_RBRACKET:
                self.request = QUIT
                i += 1
                continue
            if b == 0x1B:
                rest = data[i:]
                seq = next((s for s in F12_SEQUENCES if rest.startswith(s)), None)
                if seq is not None:
                    self.request = SAVE
                    i += len(seq)
                    continue
                if any(s.startswith(rest) for s in F12_SEQUENCES):
                    self._pending = rest          # maybe the start of F12: wait for more
                    self._pending_since = time.monotonic()
                    break
            out.append(b)
            i += 1
        self._feed(bytes(out))

    def poll(self) -> None:
        super().poll()
        if self._pending and time.monotonic() - self._pending_since > ESC_HOLD_SECONDS:
            held, self._pending = self._pending, b""
            self._feed(held)   # a lone ESC (or the like) after all: the guest gets it

    def close(self) -> None:
        if not self._restored:
            if self.line_open:
                self.write(b"\n")        # molpy's last words start on a line of their own
            self._set(self._saved)
            self._restored = True
            crashnet.set_terminal(None)
        super().close()


def open_console(in_fd: int = 0, out_fd: int = 1) -> Frontend:
    """A terminal front-end when stdin is a terminal, else a pipe front-end."""
    try:
        interactive = os.isatty(in_fd)
    except OSError:
        interactive = False
    if interactive:
        return TerminalConsole(in_fd, out_fd)
    try:
        os.fstat(in_fd)
        has_input = True
    except OSError:
        has_input = False
    return PipeConsole(in_fd if has_input else None, out_fd)
