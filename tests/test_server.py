"""The warm server (molpy.warm): `molpy server start`, then `molpy run` handed to it, as
real processes on real terminals: output, exit status, F12 and resume, signals passed on,
a killed client, a stale or untrusted server never used, and bad requests survived."""

from __future__ import annotations

import array
import hashlib
import json
import os
import re
import signal
import socket
import sys
import textwrap

import pytest

from serverkit import gone, run_cli, running, served, start, status, stop, worker_of
from test_terminal import term  # noqa: F401  (the fixture: molpy on a pty, closed after the test)
from waits import wait_for

F12 = b"\x1b[24~"


@pytest.fixture
def server(molpy_home):
    """A server in this test's molpy folder; stopped (and its process checked gone) after."""
    pid = start()
    yield pid
    stop(pid)


def test_start_status_stop(molpy_home):
    code, out = status()
    assert code == 1 and "no server running" in out
    r = run_cli("server", "start")
    assert r.returncode == 0, r.stderr
    pid = int(re.search(rb"pid (\d+)", r.stderr).group(1))
    again = run_cli("server", "start")
    assert again.returncode == 0 and b"already running" in again.stderr
    code, out = status()
    assert code == 0 and f"pid {pid}" in out and "serves this molpy: yes" in out
    assert (molpy_home / "server").stat().st_mode & 0o777 == 0o700
    r = run_cli("server", "stop")
    assert r.returncode == 0 and b"server stopped" in r.stderr
    wait_for(lambda: gone(pid), "the server's process to end")
    assert status()[0] == 1
    assert not (molpy_home / "server" / "server.sock").exists()


def test_run_is_served_with_its_output_and_exit_status(server, tmp_path):
    rc = tmp_path / "molrc"
    rc.write_text("ram_size: 32\n")
    r = run_cli("run", "-f", "molrc", input=b"echo served warm\nexit 5\n", cwd=tmp_path)
    assert r.returncode == 5, r.stderr
    assert b"served warm" in r.stdout and b"molpy demo guest" in r.stdout
    assert served() == 1
    bad = run_cli("run", "-f", "no-such-molrc", cwd=tmp_path)       # a run's own error, served too
    assert bad.returncode == 2 and bad.stderr.startswith(b"molpy: error: ") and b"Traceback" not in bad.stderr
    assert served() == 2


def test_terminal_f12_and_resume_through_the_server(server, term, tmp_path):
    rc = tmp_path / "molrc"
    settings = f"ram_size: 16\nsession_file: {tmp_path / 's.session'}\n"
    rc.write_text(settings)
    t = term("run", "-f", str(rc))
    t.read_until(b"molpy> ")
    t.send(b"ech")
    t.read_until(b"molpy> ech")
    t.send(F12)
    assert t.wait() == 0 and b"session saved" in t.output
    assert t.restored()
    rc.write_text(settings + "session_readonly: yes\n")
    session = (tmp_path / "s.session").read_bytes()
    for _ in range(3):                               # the read-only session, resumed warm each time
        t = term("run", "-f", str(rc))
        t.read_until(b"resumed session")
        t.read_until(b"molpy> ech")
        t.send(b"o where\r")
        t.read_until(b"where\r\n")
        t.send(b"exit 2\r")
        assert t.wait() == 2
        assert t.restored()
    assert served() == 4
    assert (tmp_path / "s.session").read_bytes() == session


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_signals_reach_the_served_run(server, term, signum):
    t = term("run")
    t.read_until(b"molpy> ")
    worker_of(t.proc.pid)
    t.proc.send_signal(signum)
    assert t.wait() == 128 + signum
    assert f"stopped by {signal.Signals(signum).name}".encode() in t.output
    assert t.restored()
    assert running() == {}


def test_a_killed_client_ends_its_run_and_leaves_the_base_disk(server, term, tmp_path):
    disk = tmp_path / "base.img"
    disk.write_bytes(os.urandom(1 << 20))
    before = hashlib.sha256(disk.read_bytes()).hexdigest()
    rc = tmp_path / "molrc"
    rc.write_text(f"ram_size: 32\nblkdev: {disk} -rw -cow\ncow_dir: {tmp_path}\n")
    t = term("run", "-f", str(rc))
    t.read_until(b"molpy> ")
    worker = worker_of(t.proc.pid)
    t.proc.kill()                                    # SIGKILL: nothing is passed on
    t.proc.wait()
    wait_for(lambda: gone(worker), "the worker to end once its client died")
    assert running() == {}
    assert hashlib.sha256(disk.read_bytes()).hexdigest() == before
    r = run_cli("run", "-f", str(rc), input=b"exit 0\n")            # the server still serves
    assert r.returncode == 0, r.stderr
    assert served() == 2


def test_stop_lets_the_runs_under_way_end_first(molpy_home, term, tmp_path):
    diskless = tmp_path / "molrc"
    diskless.write_text("ram_size: 16\n")
    pid = start()
    t = term("run")
    t.read_until(b"molpy> ")
    worker = worker_of(t.proc.pid)
    r = run_cli("server", "stop")
    assert r.returncode == 0 and b"when its 1 run(s) do (pid %d for pid %d)" % (worker, t.proc.pid) in r.stderr, r.stderr
    assert status()[0] == 1                              # it takes no more runs ...
    assert run_cli("run", "-f", str(diskless), input=b"exit 9\n").returncode == 9    # ... so this one runs on its own
    assert not gone(pid)                                 # ... but it still serves the one under way
    t.send(b"echo still here\r")
    t.read_until(b"still here\r\n")
    t.send(b"exit 4\r")
    assert t.wait() == 4
    wait_for(lambda: gone(pid), "the server to end with its last run")


def test_a_stale_server_is_not_used(server, tmp_path):
    changed = {"MOLPY_SOMETHING_NEW": "1"}              # read when molpy is imported: another molpy
    r = run_cli("run", input=b"exit 4\n", env=changed)
    assert r.returncode == 4
    assert served() == 0
    code, out = status(changed)
    assert code == 0 and "serves this molpy: no" in out
    r = run_cli("run", input=b"exit 4\n", env={"MOLPY_SERVER": "off"})
    assert r.returncode == 4 and served() == 0


def test_an_untrusted_folder_is_never_connected_to(server, molpy_home):
    folder = molpy_home / "server"
    folder.chmod(0o755)                                 # open to others: someone could plant a socket
    try:
        assert status()[0] == 1
        r = run_cli("run", input=b"exit 6\n")
        assert r.returncode == 6                        # run by the client itself
    finally:
        folder.chmod(0o700)
    assert served() == 0


def test_a_folder_open_to_others_is_not_served_from(molpy_home):
    folder = molpy_home / "server"
    folder.mkdir(mode=0o755)
    folder.chmod(0o755)
    r = run_cli("server", "start")
    assert r.returncode == 2 and r.stderr.count(b"\n") == 1 and b"chmod 700" in r.stderr, r.stderr
    assert list(folder.iterdir()) == []


def test_a_link_planted_at_the_folder_is_refused(molpy_home, tmp_path):
    target = tmp_path / "elsewhere"
    target.mkdir()
    (molpy_home / "server").symlink_to(target)
    r = run_cli("server", "start")
    assert r.returncode == 2
    assert r.stderr.count(b"\n") == 1 and b"symbolic link" in r.stderr
    assert list(target.iterdir()) == []


def _raw(folder, payload: bytes, fds=()) -> bytes:
    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as s:
        s.connect(str(folder / "server.sock"))
        if fds:
            s.sendmsg([payload], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])
        else:
            s.send(payload)
        s.settimeout(30)
        try:
            return s.recv(65536)
        except ConnectionResetError:
            return b""


def test_bad_requests_are_refused_and_the_server_lives(server, molpy_home):
    folder = molpy_home / "server"
    open_fds = len(os.listdir(f"/proc/{server}/fd"))
    null = os.open(os.devnull, os.O_RDWR)
    try:
        assert _raw(folder, b"\xff not json") == b""
        assert _raw(folder, b"[1, 2]") == b""
        assert _raw(folder, b"[" * 100_000) == b""                              # nested beyond any parser
        assert _raw(folder, b'{"op": "status"} {}') == b""                      # not one object
        assert json.loads(_raw(folder, json.dumps({"op": "run"}).encode())) == {"refused": "bad request"}
        good = {"op": "run", "key": "x", "argv": ["run"], "cwd": "/", "env": {}, "umask": 18}
        assert b"refused" in _raw(folder, json.dumps({**good, "argv": ["engine", "build"]}).encode(), [null] * 3)
        for bad in ({"umask": -1}, {"umask": True}, {"cwd": "relative"}, {"cwd": "/\0"},
                    {"env": {"A=B": "c"}}, {"env": {"A": "\0"}}, {"env": {"": "x"}}, {"argv": ["run", 3]}):
            assert b"bad request" in _raw(folder, json.dumps({**good, **bad}).encode(), [null] * 3), bad
        assert b"stale" in _raw(folder, json.dumps(good).encode(), [null] * 3)
        assert _raw(folder, json.dumps(good).encode(), [null] * 4) == b""      # too many descriptors
    finally:
        os.close(null)
    assert served() == 0
    wait_for(lambda: len(os.listdir(f"/proc/{server}/fd")) == open_fds, "the server to close what it was sent")


# A shell's `molpy run &`: molpy in a process group of its own that is not the terminal's
# foreground; the script reports how it ended or stopped.
BACKGROUND = textwrap.dedent("""
    import os, signal, sys
    pid = os.fork()
    if pid == 0:
        os.setpgid(0, 0)
        os.execv(sys.executable, [sys.executable, "-m", "molpy", *sys.argv[1:]])
    try:
        os.setpgid(pid, pid)
    except PermissionError:                    # it exec'd already, having done it itself
        pass
    _, st = os.waitpid(pid, os.WUNTRACED)
    print("stopped" if os.WIFSTOPPED(st) else "ended", os.WSTOPSIG(st) if os.WIFSTOPPED(st)
          else os.waitstatus_to_exitcode(st), flush=True)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
""")


def test_a_run_in_the_background_is_not_served_and_stops_at_the_terminal(server, term, tmp_path):
    rc = tmp_path / "molrc"
    rc.write_text("ram_size: 16\n")
    t = term(argv=[sys.executable, "-c", BACKGROUND, "run", "-f", str(rc)])
    t.read_until(b"stopped %d" % signal.SIGTTOU)      # as molpy on its own: it may not take the terminal
    assert t.wait() == 0
    assert served() == 0


def test_a_killed_server_hangs_its_runs_up(molpy_home, term):
    pid = start()
    t = term("run")
    t.read_until(b"molpy> ")
    worker = worker_of(t.proc.pid)
    spare = [int(p) for p in open(f"/proc/{pid}/task/{pid}/children").read().split() if int(p) != worker]
    os.kill(pid, signal.SIGKILL)
    assert t.wait() == 128 + signal.SIGHUP             # the worker's own report: stopped by SIGHUP
    assert b"molpy: stopped by SIGHUP" in t.output and t.restored()
    for p in [worker, *spare]:
        wait_for(lambda: gone(p), f"process {p} of the killed server to end")
    r = run_cli("run", input=b"exit 3\n")               # no server: the run starts on its own
    assert r.returncode == 3
    assert status()[0] == 1


def test_sigterm_stops_the_server_as_stop_does(molpy_home):
    pid = start()
    os.kill(pid, signal.SIGTERM)
    wait_for(lambda: gone(pid), "the server to end on SIGTERM")
    assert status()[0] == 1
    assert not (molpy_home / "server" / "server.sock").exists()
    assert b"Traceback" not in (molpy_home / "server" / "server.log").read_bytes()
