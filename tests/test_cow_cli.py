"""`molpy cow` as real processes: what commit says, where its bar goes, info on an overlay in use."""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time
from pathlib import Path

from molpy.drivers.cow import CowBackend, Overlay
from molpy.drivers.overlays import overlay_name
from molpy.drivers.raw import RawBackend
from test_session import molrc, saved_at_prompt

SECTOR = 512


def overlay_on(disk: Path, folder: Path, writes: int = 0) -> Path:
    """An overlay of ``disk`` in ``folder`` holding ``writes`` changed sectors (0: empty)."""
    path = folder / overlay_name(str(disk))
    backend = CowBackend(RawBackend(str(disk)), Overlay.create(str(path), RawBackend(str(disk), lock=False).identity()))
    for i in range(writes):
        backend.write(i * 8 * SECTOR, memoryview(bytes([i + 1]) * SECTOR))
    backend.close()
    return path


def verify(cli, session: Path, rc: Path) -> int:
    return cli("session", "verify", str(session), "-f", str(rc)).returncode


# -- 13. what commit says is true --

def test_commit_of_an_empty_overlay_says_the_disk_was_not_written(cli, tmp_path):
    """Found: an empty overlay's commit said sessions would no longer resume; they still do."""
    rc = molrc(tmp_path, readonly=True, cow=True)
    session = saved_at_prompt(rc)
    disk = tmp_path / "disk.img"
    before = disk.read_bytes(), disk.stat().st_mtime_ns
    overlay = overlay_on(disk, tmp_path)
    assert verify(cli, session, rc) == 0
    r = cli("cow", "commit", str(overlay))
    assert r.returncode == 0, r.stderr
    assert r.stdout.decode() == f"nothing to commit: {overlay} holds no changes; {disk} was not written\n"
    assert r.stderr == b""                                    # no "will no longer resume"
    assert (disk.read_bytes(), disk.stat().st_mtime_ns) == before
    assert verify(cli, session, rc) == 0                      # what it said is true
    assert b"holds:    0 sectors" in cli("cow", "info", str(overlay)).stdout


def test_commit_of_changes_says_sessions_no_longer_resume_and_they_do_not(cli, tmp_path):
    """The class: each thing commit says about sessions is checked against `session verify`."""
    rc = molrc(tmp_path, readonly=True, cow=True)
    session = saved_at_prompt(rc)
    overlay = overlay_on(tmp_path / "disk.img", tmp_path, writes=3)
    r = cli("cow", "commit", str(overlay))
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(b"committed 3 sectors") and b"will no longer resume" in r.stderr
    assert verify(cli, session, rc) == 1
    r = cli("cow", "commit", str(overlay))                    # now empty: the second commit writes nothing
    assert r.returncode == 0 and r.stdout.startswith(b"nothing to commit") and r.stderr == b""


def test_an_empty_overlay_of_a_read_only_disk_commits_nothing(cli, tmp_path):
    """An empty overlay needs no write access to its disk: nothing is opened for writing."""
    disk = tmp_path / "d.img"
    disk.write_bytes(bytes(64 * SECTOR))
    overlay = overlay_on(disk, tmp_path)
    disk.chmod(0o444)
    r = cli("cow", "commit", str(overlay))
    assert r.returncode == 0 and r.stdout.startswith(b"nothing to commit"), r.stderr


# -- 13. one bar, on stderr, only on a terminal --

def test_commit_output_to_a_file_is_the_result_line_only(tmp_path):
    """Found: `cow commit OVERLAY > out.txt` wrote a stray blank line into the file."""
    disk = tmp_path / "d.img"
    disk.write_bytes(bytes(256 * SECTOR))
    for writes in (4, 0):
        overlay = overlay_on(disk, tmp_path, writes)
        out = tmp_path / f"out{writes}.txt"
        with open(out, "wb") as f:
            r = subprocess.run([sys.executable, "-m", "molpy", "cow", "commit", str(overlay)], stdout=f,
                               stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, timeout=60)
        assert r.returncode == 0, r.stderr
        text = out.read_text()
        assert text.count("\n") == 1 and text.strip() and text.endswith("\n"), repr(text)
        assert "\x1b" not in r.stderr.decode() and "commit " + overlay.name not in r.stderr.decode()
        overlay.unlink()


def test_the_bar_is_drawn_on_a_terminal_stderr_and_stdout_stays_clean(tmp_path):
    """stderr a terminal, stdout a file: the bar is on the terminal, the file gets one line."""
    disk = tmp_path / "d.img"
    disk.write_bytes(bytes(256 * SECTOR))
    overlay = overlay_on(disk, tmp_path, writes=5)
    out = tmp_path / "out.txt"
    master, slave = os.openpty()
    env = dict(os.environ, TERM="xterm", COLUMNS="120")
    env.pop("NO_COLOR", None)
    try:
        with open(out, "wb") as f:
            proc = subprocess.Popen([sys.executable, "-m", "molpy", "cow", "commit", str(overlay)],
                                    stdin=subprocess.DEVNULL, stdout=f, stderr=slave, env=env)
        os.close(slave)
        slave = -1
        screen = _read_all(master, proc)
    finally:
        for fd in (master, slave):
            if fd >= 0:
                os.close(fd)
    assert proc.returncode == 0, screen
    assert f"commit {overlay.name}".encode() in screen, screen          # the bar was drawn
    assert b"will no longer resume" in screen
    text = out.read_text()
    assert text.startswith("committed 5 sectors") and text.count("\n") == 1, repr(text)


def _read_all(master: int, proc: subprocess.Popen, timeout: float = 60) -> bytes:
    """Everything the process writes to the terminal, until it exits and the terminal is drained."""
    data = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(master, 65536)
            except OSError:                  # EIO: the last writer closed the terminal
                break
            if not chunk:
                break
            data += chunk
        elif proc.poll() is not None:
            break
    proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    return data


# -- 14. read-only inspection of files a running molpy holds --

class Running:
    """A real `molpy run` in pipe mode, waited on by what it prints (never by time)."""

    def __init__(self, rc: Path) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "molpy", "run", "-f", str(rc)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.output = b""

    def read_until(self, needle: bytes, timeout: float = 60) -> None:
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while needle not in self.output:
            left = deadline - time.monotonic()
            assert left > 0, f"did not see {needle!r}: {self.output!r}"
            if select.select([fd], [], [], left)[0]:
                chunk = os.read(fd, 65536)
                assert chunk, f"molpy ended before {needle!r}: {self.output!r} {self.proc.stderr.read()!r}"
                self.output += chunk

    def finish(self, keys: bytes) -> int:
        self.proc.communicate(keys, timeout=60)
        return self.proc.returncode

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()


def test_cow_info_works_on_an_overlay_a_running_molpy_holds(cli, tmp_path):
    """Found: `cow info` was refused on an overlay in use, though it only reads."""
    rc = molrc(tmp_path, readonly=True, cow=True)
    session = saved_at_prompt(rc)
    disk = tmp_path / "disk.img"
    run = Running(rc)
    try:
        run.read_until(b"molpy> ")                   # resumed: its disks and overlay are open and locked
        overlays = sorted((tmp_path / "cow").glob("*.cow"))
        assert len(overlays) == 1, overlays
        overlay = overlays[0]
        held = overlay.read_bytes()
        who = f"by another molpy (pid {run.proc.pid})"
        r = cli("cow", "info", str(overlay))
        assert r.returncode == 0, r.stderr
        out = r.stdout.decode()
        assert f"in use:   {who}, which writes to it; what it holds may change" in out, out
        assert "holds:    1 sectors" in out and "disk matches: yes" in out, out
        # the class: every look that only reads works and says so ...
        r = cli("img", "info", str(disk))
        assert r.returncode == 0 and f"in use:    {who}, which reads it (read-only" in r.stdout.decode(), r
        r = cli("session", "info", str(session))
        assert r.returncode == 0 and f"in use:   {who}, which resumed it" in r.stdout.decode(), r
        # ... and what writes is still refused, naming the holder, with nothing changed
        for action in ("commit", "discard"):
            r = cli("cow", action, str(overlay))
            assert r.returncode == 2 and f"pid {run.proc.pid}".encode() in r.stderr, r.stderr
        assert overlay.read_bytes() == held
        assert run.finish(b"exit 4\n") == 4
    finally:
        run.close()
    r = cli("cow", "info", str(overlay))
    assert r.returncode == 0 and b"in use" not in r.stdout, r.stdout
    assert b"in use" not in cli("img", "info", str(disk)).stdout
    assert b"in use" not in cli("session", "info", str(session)).stdout


def test_cow_info_on_an_overlay_nobody_holds_does_not_say_in_use(cli, tmp_path):
    disk = tmp_path / "d.img"
    disk.write_bytes(bytes(64 * SECTOR))
    overlay = overlay_on(disk, tmp_path, writes=2)
    r = cli("cow", "info", str(overlay))
    assert r.returncode == 0 and b"in use" not in r.stdout and b"holds:    2 sectors" in r.stdout, r
