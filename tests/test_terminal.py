"""`molpy run` on a real terminal (a pty as controlling terminal): raw mode, hotkeys, restore."""

from __future__ import annotations

import fcntl
import os
import select
import subprocess
import sys
import termios
import time

import pytest

from molpy.boot import bundled_guest


class Pty:
    """A pseudo-terminal driving a real molpy process, as a user at a keyboard would."""

    def __init__(self, *args: str, cwd=None, argv: list[str] | None = None, pass_fds=()) -> None:
        """``molpy ARGS`` on the terminal, or ``argv`` (a program that runs molpy itself)."""
        self.master, self.slave = os.openpty()
        self.saved = termios.tcgetattr(self.slave)
        self.output = b""

        def controlling_tty():
            os.setsid()
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)

        self.proc = subprocess.Popen(argv or [sys.executable, "-m", "molpy", *args], stdin=self.slave,
                                     stdout=self.slave, stderr=self.slave, cwd=cwd,
                                     preexec_fn=controlling_tty, close_fds=True, pass_fds=pass_fds)

    def read_until(self, needle: bytes, timeout: float = 30) -> bytes:
        deadline = time.monotonic() + timeout
        while needle not in self.output:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"did not see {needle!r}; output so far: {self.output!r}")
            ready, _, _ = select.select([self.master], [], [], left)
            if ready:
                try:
                    self.output += os.read(self.master, 65536)
                except OSError:
                    break
        return self.output

    def send(self, data: bytes) -> None:
        os.write(self.master, data)

    def wait(self, timeout: float = 30) -> int:
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            ready, _, _ = select.select([self.master], [], [], 0.1)
            if ready:
                try:
                    self.output += os.read(self.master, 65536)
                except OSError:
                    pass
        if self.proc.poll() is None:
            self.proc.kill()
            raise AssertionError(f"molpy did not exit; output: {self.output!r}")
        try:   # drain what is left
            while select.select([self.master], [], [], 0.05)[0]:
                self.output += os.read(self.master, 65536)
        except OSError:
            pass
        return self.proc.returncode

    def restored(self) -> bool:
        return termios.tcgetattr(self.slave) == self.saved

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for fd in (self.master, self.slave):
            if fd >= 0:
                os.close(fd)
        self.master = self.slave = -1


@pytest.fixture
def demo_molrc(tmp_path):
    rc = tmp_path / "molrc"
    rc.write_text("ram_size: 32\n")
    return rc


@pytest.fixture
def term(closing):
    return lambda *args, **kw: closing(Pty, *args, **kw)


def test_exit_code_and_terminal_restored(term, demo_molrc):
    t = term("run", "-f", str(demo_molrc))
    t.read_until(b"molpy> ")
    t.send(b"echo hi there\r")
    t.read_until(b"hi there")
    t.send(b"exit 7\r")
    assert t.wait() == 7
    assert t.restored()


def test_raw_mode_while_running(term, demo_molrc):
    t = term("run", "-f", str(demo_molrc))
    t.read_until(b"molpy> ")
    attrs = termios.tcgetattr(t.slave)
    assert not attrs[3] & termios.ICANON and not attrs[3] & termios.ECHO
    t.send(b"exit\r")
    assert t.wait() == 0
    assert t.restored()


def test_ctrl_bracket_quits(term, demo_molrc):
    t = term("run", "-f", str(demo_molrc))
    t.read_until(b"molpy> ")
    t.send(b"\x1d")
    assert t.wait(10) == 0
    assert b"quit" in t.output
    assert t.restored()


def test_ctrl_c_while_guest_computes(term, demo_molrc):
    t = term("run", "-f", str(demo_molrc))
    t.read_until(b"molpy> ")
    t.send(b"spin 100000\r")       # minutes of guest compute with no OSI call
    t.read_until(b"spin 100000\r\n")  # the guest took the line: it computes now
    t.send(b"\x03")
    assert t.wait(10) == 130        # (the timeout only guards against a hang)
    assert t.restored()


def test_hotkey_seen_while_guest_computes(term, demo_molrc):
    t = term("run", "-f", str(demo_molrc))
    t.read_until(b"molpy> ")
    t.send(b"spin 100000\r")
    t.read_until(b"spin 100000\r\n")
    t.send(b"\x1d")
    assert t.wait(10) == 0
    assert t.restored()


def test_guest_fault_restores_terminal(term, tmp_path):
    rc = tmp_path / "molrc"
    rc.write_text(f"ram_size: 16\nbootfile: {bundled_guest('fault')}\nboot_args: illegal\n")
    t = term("run", "-f", str(rc))
    assert t.wait() == 3
    assert b"illegal instruction" in t.output
    assert t.restored()


def test_resume_shows_the_guest_line_again(term, tmp_path):
    rc = tmp_path / "molrc"
    rc.write_text(f"ram_size: 16\nsession_file: {tmp_path / 's.session'}\nsession_readonly: no\n")
    t = term("run", "-f", str(rc))
    t.read_until(b"molpy> ")
    t.send(b"ech")                                    # half a command typed, then F12
    t.read_until(b"molpy> ech")
    t.send(b"\x1b[24~")
    assert t.wait() == 0 and b"session saved" in t.output
    t = term("run", "-f", str(rc))
    t.read_until(b"resumed session")
    t.read_until(b"again\r\nmolpy> ech")              # the note, then the guest's line as it was
    t.send(b"o where\r")
    t.read_until(b"where\r\n")
    t.send(b"exit 2\r")
    assert t.wait() == 2
    assert t.restored()
