"""Signals and faults against a running molpy on a real terminal (a pty).

Every signal that ends molpy, at the prompt and in the middle of an F12 save: the
status is 128+signal, the terminal is as the user left it, no temporary file is left
and the session on disk is whole. Ctrl-Z under a job-control shell gives the terminal
back while molpy is stopped and takes it again on SIGCONT. A session file truncated
under the running guest, and a fault in native code, end in one line, never a raw
terminal, a hang or a core dump. The tests of `molpy run` on a terminal run twice: molpy
on its own, and every run handed to the warm server (molpy.warm).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from conftest import LONG, count, tally
from molpy.emulation.session import open_session
from molpy.hostsignals import TERMINATING, signal_name
from test_session import F12, saved_at_prompt
import serverkit
from test_terminal import Pty
from waits import catches, piled_up, sleeping, wait_for

NAMED = [s for s in TERMINATING if s < signal.SIGRTMIN] + [signal.SIGRTMIN, signal.SIGRTMAX]
AT_PROMPT = list(TERMINATING) if LONG else NAMED
DURING_SAVE = list(TERMINATING) if LONG else [signal.SIGINT, signal.SIGTERM, signal.SIGHUP,
                                               signal.SIGQUIT, signal.SIGUSR1, signal.SIGRTMIN]


def _leftovers(folder: Path, keep: set[str]) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name not in keep)


def _one_molpy_line(output: bytes, needle: bytes) -> None:
    assert b"Traceback" not in output, output
    assert output.count(needle) == 1, output


@pytest.fixture
def pty_run(closing):
    return lambda *args, **kw: closing(Pty, *args, **kw)


@pytest.fixture(params=["alone", "served"])
def molpy_pty(request, closing):
    """`molpy run` on a pty, twice: molpy on its own, and handed to the warm server
    (molpy.warm), which must then have served it. ``t.molpy_pid()``: the process that runs
    the guest."""
    def make(*args, **kw):
        t = closing(Pty, *args, **kw)
        t.molpy_pid = (lambda: t.proc.pid) if request.param == "alone" else (lambda: serverkit.worker_of(t.proc.pid))
        return t

    if request.param == "alone":
        yield make
        return
    pid = serverkit.start()
    try:
        yield make
        assert serverkit.served() > 0
    finally:
        serverkit.stop(pid)


def test_every_terminating_signal_at_the_prompt(tmp_path, molpy_pty):
    rc = tmp_path / "molrc"
    rc.write_text("ram_size: 16\n")
    for signum in AT_PROMPT:
        t = molpy_pty("run", "-f", str(rc), cwd=tmp_path)
        t.read_until(b"molpy> ")
        t.proc.send_signal(signum)
        status = t.wait(10)
        assert status == 128 + signum, (signal_name(signum), status, t.output[-200:])
        assert t.restored(), signal_name(signum)
        _one_molpy_line(t.output, f"molpy: stopped by {signal_name(signum)}".encode())
        assert _leftovers(tmp_path, {"molrc"}) == []
        t.close()
    tally("every terminating signal at the prompt (status 128+signal, terminal restored)", len(AT_PROMPT))


def test_ctrl_backslash_and_ctrl_c_keys(tmp_path, molpy_pty):
    rc = tmp_path / "molrc"
    rc.write_text("ram_size: 16\n")
    for key, signum in ((b"\x1c", signal.SIGQUIT), (b"\x03", signal.SIGINT)):
        t = molpy_pty("run", "-f", str(rc), cwd=tmp_path)
        t.read_until(b"molpy> ")
        t.send(key)
        assert t.wait(10) == 128 + signum
        assert t.restored()
        assert list(tmp_path.glob("core*")) == []


@pytest.fixture(scope="module")
def busy_session(tmp_path_factory):
    """A session whose RAM is 192 MiB of non-zero pages, so that a save takes a while."""
    tmp = tmp_path_factory.mktemp("busy")
    rc = tmp / "molrc"
    rc.write_text(f"ram_size: 256\nsession_file: {tmp / 's.session'}\nsession_readonly: no\n")
    path = saved_at_prompt(rc)
    s = open_session(str(path))
    ram_offset = s.ram.offset
    s.close()
    block = bytes(range(1, 256)) * (1 << 16)                 # ~16 MiB, no zero page
    with open(path, "r+b") as f:
        for start in range(32 << 20, 224 << 20, len(block)):   # above the guest, below its stack
            f.seek(ram_offset + start)
            f.write(block[:min(len(block), (224 << 20) - start)])
    return path.read_bytes()


def _written(pid: int) -> int:
    with open(f"/proc/{pid}/io") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("wchar:"))


def test_every_terminating_signal_during_a_save(tmp_path, molpy_pty, busy_session):
    session = tmp_path / "s.session"
    rc = tmp_path / "molrc"
    rc.write_text(f"ram_size: 256\nsession_file: {session}\nsession_readonly: no\n")
    for signum in DURING_SAVE:
        session.write_bytes(busy_session)
        t = molpy_pty("run", "-f", str(rc), cwd=tmp_path)
        t.read_until(b"resumed session")
        molpy = t.molpy_pid()                                  # the process that does the work
        before = _written(molpy)
        t.send(F12)
        deadline = time.monotonic() + 20
        while _written(molpy) < before + (16 << 20):       # the save is writing RAM now
            assert time.monotonic() < deadline and t.proc.poll() is None, t.output
            time.sleep(0.001)
        t.proc.send_signal(signum)
        status = t.wait(30)
        name = signal_name(signum)
        assert status == 128 + signum, (name, status, t.output[-300:])
        assert t.restored(), name
        _one_molpy_line(t.output, f"molpy: stopped by {name} (the session was saved first)".encode())
        assert b"session saved to" in t.output
        assert _leftovers(tmp_path, {"molrc", "s.session"}) == [], name
        s = open_session(str(session))                       # whole, and not yet resumed
        try:
            assert not s.used and s.ram_size == 256 << 20
        finally:
            s.close()
        t.close()
    tally("every terminating signal during an F12 save (saved whole, no temporaries)", len(DURING_SAVE))


# A minimal job-control shell: molpy runs in its own process group in the foreground;
# the shell reports what the terminal looks like while molpy is stopped and after it
# continued, on file descriptor REPORT.
JOB_SHELL = textwrap.dedent("""
    import os, signal, sys, termios, time
    report, args = int(sys.argv[1]), sys.argv[2:]
    signal.signal(signal.SIGTTOU, signal.SIG_IGN)
    saved = termios.tcgetattr(0)
    def say(text):
        os.write(report, (text + "\\n").encode())
    pid = os.fork()
    if pid == 0:
        os.setpgid(0, 0)
        os.tcsetpgrp(0, os.getpid())                  # as a shell's child does too: no race with the parent
        signal.signal(signal.SIGTTOU, signal.SIG_DFL)
        os.close(report)                              # the reports end when this shell does
        os.execv(sys.executable, [sys.executable, "-m", "molpy", *args])
    try:
        os.setpgid(pid, pid)
    except PermissionError:                           # it exec'd already, having done it itself
        pass
    os.tcsetpgrp(0, pid)
    while True:
        _, st = os.waitpid(pid, os.WUNTRACED)
        os.tcsetpgrp(0, os.getpgrp())
        if not os.WIFSTOPPED(st):
            say(f"exit {os.waitstatus_to_exitcode(st)} restored {termios.tcgetattr(0) == saved}")
            break
        say(f"stopped {os.WSTOPSIG(st)} restored {termios.tcgetattr(0) == saved}")
        os.tcsetpgrp(0, pid)                          # fg
        os.kill(-pid, signal.SIGCONT)
        deadline = time.monotonic() + 10
        while termios.tcgetattr(0)[3] & termios.ECHO and time.monotonic() < deadline:
            time.sleep(0.01)
        say(f"raw {not termios.tcgetattr(0)[3] & termios.ECHO}")
""")


def test_ctrl_z_gives_the_terminal_back_and_takes_it_again(tmp_path, molpy_pty):
    rc = tmp_path / "molrc"
    rc.write_text("ram_size: 16\n")
    r, w = os.pipe()
    t = molpy_pty(argv=[sys.executable, "-c", JOB_SHELL, str(w), "run", "-f", str(rc)], pass_fds=(w,),
                cwd=tmp_path)
    os.close(w)
    reports = os.fdopen(r)
    t.read_until(b"molpy> ")
    rounds = count(3, 30)
    for i in range(rounds):
        t.send(b"\x1a")                                   # Ctrl-Z
        line = reports.readline()
        assert line.split() == ["stopped", str(int(signal.SIGTSTP)), "restored", "True"], (line, t.output[-600:])
        line = reports.readline()
        assert line.split() == ["raw", "True"], (line, t.output[-600:])
        t.send(b"echo back again %d\r" % i)
        t.read_until(b"back again %d\r\n" % i)
    t.send(b"exit 5\r")
    line = reports.readline()
    assert line.split() == ["exit", "5", "restored", "True"], (line, t.output[-600:])
    assert t.wait(10) == 0
    reports.close()
    tally("Ctrl-Z under a job-control shell (terminal given back, raw again on fg)", rounds)


def test_session_truncated_under_the_running_guest(tmp_path, molpy_pty):
    """Never a raw terminal, a hang or a core dump: the guest goes on (RAM detached in time)
    or molpy stops with one line naming the session file."""
    rc = tmp_path / "molrc"
    rc.write_text(f"ram_size: 16\nsession_file: {tmp_path / 's.session'}\nsession_readonly: yes\n")
    saved_at_prompt(rc)
    rounds = count(2, 20)
    for _ in range(rounds):
        t = molpy_pty("run", "-f", str(rc), cwd=tmp_path)
        t.read_until(b"resumed session")
        os.truncate(tmp_path / "s.session", 8192)
        t.send(b"help\rexit 4\r")
        status = t.wait(20)
        assert t.restored()
        if status != 4:
            assert status == 128 + signal.SIGBUS, (status, t.output[-300:])
            _one_molpy_line(t.output, b"was truncated or changed under the running guest (SIGBUS); stopped")
        assert list(tmp_path.glob("core*")) == []
        t.close()
        saved_at_prompt(rc)
    tally("session file truncated under the running guest (terminal restored, one line)", rounds)


# The net itself, whatever prevents the truncation: RAM mapped from a file as molpy maps
# a session's, the file truncated, then the guest (emu_start, no GIL) or the host (a copy
# out of RAM with the GIL held) touches a lost page.
FAULTER = textwrap.dedent("""
    import ctypes, os, sys
    from molpy import crashnet
    from molpy.console import TerminalConsole
    from molpy.emulation.memory import GuestMemory
    from unicorn import UC_PROT_ALL, Uc, UC_ARCH_PPC, UC_MODE_PPC32, UC_MODE_BIG_ENDIAN
    path, how = sys.argv[1], sys.argv[2]
    with open(path, "wb") as f:
        f.write(b"\\x11" * (1 << 20))
    crashnet.install()
    console = TerminalConsole()
    fd = os.open(path, os.O_RDONLY)
    memory = GuestMemory(1 << 20, file_fd=fd, file_offset=0)
    uc = Uc(UC_ARCH_PPC, UC_MODE_PPC32 | UC_MODE_BIG_ENDIAN)
    uc.mem_map_ptr(0, 1 << 20, UC_PROT_ALL, memory.address)
    uc.mem_write(0, bytes.fromhex("3c600008" "80830000" "48000000"))  # lis r3,8; lwz r4,0(r3); b .
    os.write(1, b"ready\\n")
    os.truncate(path, 4096)
    if how == "guest":
        uc.emu_start(0, 0xFFFF0, timeout=5_000_000)
    elif how == "host":
        print(bytes(memory.view[0x80000:0x80010]))
    elif how == "segv":
        ctypes.string_at(16)
    print("not reached")
    console.close()
""")


@pytest.mark.parametrize("how,signum", [("guest", signal.SIGBUS), ("host", signal.SIGBUS),
                                        ("segv", signal.SIGSEGV)])
def test_fault_net_restores_the_terminal(tmp_path, pty_run, how, signum):
    t = pty_run(argv=[sys.executable, "-c", FAULTER, str(tmp_path / "ram"), how], cwd=tmp_path)
    t.read_until(b"ready")
    assert t.wait(10) == 128 + signum, t.output
    assert t.restored()
    assert b"not reached" not in t.output and b"Traceback" not in t.output
    _one_molpy_line(t.output, f"({signal.Signals(signum).name}) in molpy or the emulator; stopped".encode())
    assert list(tmp_path.glob("core*")) == []
    tally("faults in native code (SIGBUS guest/host, SIGSEGV): terminal restored, one line", 1)


def test_a_signal_during_start_up_is_held_until_molpy_can_report_it():
    """A signal that lands while molpy is still installing its handlers (after it took the
    signal, before its one-line report is running) is held, then raised where it is reported:
    it once escaped as a traceback with status 1."""
    script = textwrap.dedent("""
        import os, signal
        from molpy.hostsignals import SignalExit, SignalGuard
        guard = SignalGuard().hold().install()
        os.kill(os.getpid(), signal.SIGTERM)          # as if it landed in crashnet.install()
        print("held", flush=True)
        try:
            guard.release()
        except SignalExit as e:
            print("raised", e.status, flush=True)
    """)
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=60)
    assert r.stdout.split() == [b"held", b"raised", b"143"], r


def test_a_signal_inside_a_weakref_callback_is_raised_after_it():
    """A signal that lands in a weakref callback (the import system's module-lock callback
    runs during every import): Python prints and drops an exception raised there, so a
    SIGTERM during one of molpy's imports once gave a traceback on stderr beside the line."""
    script = textwrap.dedent("""
        import os, signal, time, weakref
        from molpy.hostsignals import SignalExit, SignalGuard
        guard = SignalGuard().install()
        space = {"os": os, "signal": signal}
        exec(compile("def cb(ref):\\n    os.kill(os.getpid(), signal.SIGTERM)\\n    x = 1\\n    return x\\n",
                     "<frozen importlib._bootstrap>", "exec"), space)
        class Thing: pass
        thing = Thing()
        ref = weakref.ref(thing, space["cb"])
        try:
            del thing                                   # the callback runs here
            deadline = time.monotonic() + 20            # until the signal comes back (at once, or never):
            while time.monotonic() < deadline:          # Python runs the handler between these bytecodes
                pass
            print("not raised", flush=True)
        except SignalExit as e:
            print("raised", e.status, flush=True)
    """)
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=60)
    assert r.stdout.split() == [b"raised", b"143"] and r.stderr == b"", r


def test_sigterm_the_moment_molpy_takes_it(tmp_path):
    """SIGTERM sent as soon as molpy's handler is in place (waited for, no guess): every
    time 143 and one line, never a traceback."""
    rc = tmp_path / "molrc"
    rc.write_text("ram_size: 16\n")
    for _ in range(count(8, 100)):
        proc = subprocess.Popen([sys.executable, "-m", "molpy", "run", "-f", str(rc)], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path)
        wait_for(lambda: proc.poll() is not None or catches(proc.pid, signal.SIGTERM), "molpy's handler")
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 143 and err == b"molpy: stopped by SIGTERM\n", (proc.returncode, err)
    tally("SIGTERM the moment molpy takes it (143, one line)", count(8, 100))


def test_signals_while_blocked(tmp_path):
    """A FIFO where a file is expected, output nobody reads: SIGTERM still ends molpy."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    rc = tmp_path / "molrc"
    for text, args in ((f"ram_size: 16\nsession_file: {fifo}\n", ["run", "-f", str(rc)]),
                       ("ram_size: 16\n", ["run", "-f", str(rc)]),
                       ("", ["session", "info", str(fifo)])):
        rc.write_text(text)
        proc = subprocess.Popen([sys.executable, "-m", "molpy", *args], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path)
        piles_up = "session_file" not in text and args[0] == "run"
        if piles_up:
            proc.stdin.write(b"help\n" * 200)          # 140 KB of output piles up: nobody reads it
            proc.stdin.flush()
        # molpy has taken SIGTERM (and, where output piles up, waits on its pipe) or has ended
        wait_for(lambda: proc.poll() is not None or catches(proc.pid, signal.SIGTERM)
                 and (not piles_up or piled_up(proc.stdout.fileno()) and sleeping(proc.pid)),
                 "molpy to wait")
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        finally:
            proc.kill()
        err = proc.stderr.read()
        assert proc.returncode in (2, 143), (args, proc.returncode, err)
        assert b"Traceback" not in err and err.count(b"\n") == 1, err
        for pipe in (proc.stdin, proc.stdout, proc.stderr):
            pipe.close()
    tally("SIGTERM while molpy waits (FIFO as a file, output nobody reads)", 3)


def test_signals_during_a_cow_commit(tmp_path):
    """The commit finishes (disk == base + overlay, overlay empty), then status 128+signal."""
    import random

    from molpy.drivers.cow import STATE_COMMITTING, CowBackend, Header, Overlay
    from molpy.drivers.overlays import overlay_name
    from molpy.drivers.raw import RawBackend

    disk = tmp_path / "d.img"
    rng = random.Random(31)
    disk.write_bytes(rng.randbytes(1 << 20) * 64)
    path = str(tmp_path / overlay_name(str(disk)))
    for signum in DURING_SAVE:
        expect = bytearray(disk.read_bytes())
        backend = CowBackend(RawBackend(str(disk)), Overlay.create(path, RawBackend(str(disk), lock=False).identity()))
        for _ in range(200):
            lba, n = rng.randrange(0, (64 << 11) - 2048), rng.randrange(1, 2048)
            data = rng.randbytes(512) * n
            backend.write(lba * 512, memoryview(data))
            expect[lba * 512:(lba + n) * 512] = data
        backend.close()
        proc = subprocess.Popen([sys.executable, "-m", "molpy", "cow", "commit", path],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)

        def state() -> int:
            try:
                with open(path, "rb") as f:
                    return Header.unpack(f.read(4096), path).state
            except Exception:
                return -1
        while proc.poll() is None and state() != STATE_COMMITTING:
            time.sleep(0.0005)
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=60)
        name = signal_name(signum)
        assert proc.returncode == 128 + signum, (name, proc.returncode, err)
        assert b"Traceback" not in err and err.count(f"stopped by {name}".encode()) == 1, err
        assert b"committed" in out
        assert disk.read_bytes() == expect, f"{name}: the disk is not base + overlay"
        ov = Overlay.open(path, writable=False)
        try:
            assert not ov.has_data()
        finally:
            ov.close()
        os.unlink(path)
        assert _leftovers(tmp_path, {"d.img"}) == []
    tally("every terminating signal during `molpy cow commit` (finished, then 128+signal)", len(DURING_SAVE))


def test_the_terminal_hangs_up(tmp_path, molpy_pty):
    """The terminal goes away (window closed): SIGHUP and EIO on every write; molpy ends, 129."""
    rc = tmp_path / "molrc"
    rc.write_text("ram_size: 16\n")
    for keys, busy in ((b"spin 3000\r", b"spin 3000\r\n"), (b"help\r" * 200, b"sum U [N]")):  # computing, printing
        t = molpy_pty("run", "-f", str(rc), cwd=tmp_path)
        t.read_until(b"molpy> ")
        t.send(keys)
        t.read_until(busy)                                    # the guest is at it
        os.close(t.master)
        os.close(t.slave)
        t.master = t.slave = -1
        assert t.proc.wait(10) == 128 + signal.SIGHUP
        assert list(tmp_path.glob("core*")) == []
    tally("terminal hung up while the guest computes or prints (status 129, no hang)", 2)
