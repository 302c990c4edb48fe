"""Where molpy writes: the guest's output and the log, attacked from the host side.

Output that cannot be written (a full device, a closed pipe) ends the run with one
line; the log cannot be redirected by anything planted at its name and never grows
past its cap (molpy.log + molpy.log.1, each at most logfile.MAX_BYTES).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys

from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import tally
from molpy.boot import bundled_guest
from molpy.logfile import MAX_BYTES, CappedLogHandler


def molpy(*args, stdin=b"", stdout=subprocess.PIPE, cwd=None):
    return subprocess.run([sys.executable, "-m", "molpy", *args], input=stdin, stdout=stdout,
                          stderr=subprocess.PIPE, cwd=cwd, timeout=60)


def test_output_to_a_full_device(tmp_path):
    rc = tmp_path / "molrc"
    rc.write_text("ram_size: 16\n")
    with open("/dev/full", "wb") as full:
        r = molpy("run", "-f", str(rc), stdin=b"help\nexit 3\n", stdout=full)
    assert r.returncode == 2, r.stderr
    assert r.stderr == b"molpy: cannot write the guest's output (No space left on device); stopped\n"
    with open("/dev/full", "wb") as full:                  # a command's own output
        r = molpy("run", "-f", str(rc), "--check", stdout=full)
    assert r.returncode == 2 and r.stderr.count(b"\n") == 1 and b"Traceback" not in r.stderr
    tally("output errors (full device, closed pipe): one line, clean exit", 2)


def test_output_to_a_closed_pipe(tmp_path):
    rc = tmp_path / "molrc"
    rc.write_text("ram_size: 16\n")
    proc = subprocess.Popen([sys.executable, "-m", "molpy", "run", "-f", str(rc)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.read(10)
    proc.stdout.close()                                    # `molpy run | head -c 10`
    _, err = proc.communicate(b"help\n" * 50 + b"exit 3\n", timeout=30)
    assert proc.returncode == 141, err
    assert err == b"molpy: the guest's output was closed (broken pipe); stopped\n"
    tally("output errors (full device, closed pipe): one line, clean exit", 1)


def _log_run(home, *extra):
    rc = home.parent / "log.molrc"
    rc.write_text(f"ram_size: 16\nbootfile: {bundled_guest('osi_calls')}\nboot_args: 6\n")
    return molpy("run", "-f", str(rc), *extra, stdin=b"q\n")   # the guest eats one key first


def test_nothing_planted_at_the_log_redirects_it(tmp_path, molpy_home):
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    log = molpy_home / "molpy.log"
    plants = {"symlink": lambda: log.symlink_to(victim), "fifo": lambda: os.mkfifo(log),
              "directory": lambda: log.mkdir(), "hard link": lambda: os.link(victim, log)}
    for what, plant in plants.items():
        plant()
        r = _log_run(molpy_home)
        assert r.returncode == 2, (what, r.stderr)
        assert r.stderr.count(b"\n") == 1 and b"the log" in r.stderr and b"Traceback" not in r.stderr, r.stderr
        assert victim.read_text() == "precious\n"
        log.rmdir() if what == "directory" else log.unlink()
    r = _log_run(molpy_home)
    assert r.returncode == 6 and b"hello log 42" in log.read_bytes()
    tally("things planted at the log's name (symlink, FIFO, directory, hard link): refused", len(plants))


def test_the_log_rotates_at_its_cap(tmp_path, molpy_home):
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    log = molpy_home / "molpy.log"
    log.write_bytes(b"old line\n")
    os.truncate(log, MAX_BYTES - 5)                        # the next line does not fit
    (molpy_home / "molpy.log.1").symlink_to(victim)        # rotation must not follow this
    r = _log_run(molpy_home)
    assert r.returncode == 6, r.stderr
    rotated = molpy_home / "molpy.log.1"
    assert not rotated.is_symlink() and rotated.stat().st_size == MAX_BYTES - 5
    assert rotated.read_bytes().startswith(b"old line\n")
    assert b"hello log 42" in log.read_bytes() and log.stat().st_size < 100
    assert victim.read_text() == "precious\n"
    tally("log at its cap (rotation, a symlink planted at molpy.log.1)", 1)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 300), min_size=1, max_size=200), st.integers(64, 1024))
def test_the_log_never_grows_past_twice_its_cap(tmp_path_factory, sizes, cap):
    folder = tmp_path_factory.mktemp("log")
    handler = CappedLogHandler(str(folder / "molpy.log"), max_bytes=cap)
    handler.setFormatter(logging.Formatter("%(message)s"))
    lines = []
    for i, n in enumerate(sizes):
        text = f"{i}:" + "x" * n
        lines.append(text + "\n")
        handler.emit(logging.LogRecord("molpy.guest", logging.INFO, "", 0, text, None, None))
    handler.close()
    files = [folder / "molpy.log.1", folder / "molpy.log"]
    kept = b"".join(f.read_bytes() for f in files if f.exists())
    for f in files:
        if f.exists():                                     # a line longer than the cap is alone in its file
            assert f.stat().st_size <= cap or f.read_bytes().count(b"\n") == 1
    assert "".join(lines).encode().endswith(kept)          # the newest lines, whole and in order
    assert kept.endswith(lines[-1].encode())
    tally("log handler with generated line sizes and caps (bounded, newest lines kept)", 1)
