"""Special files where molpy expects a file: every CLI path answers in one line, status 2.

A directory, a FIFO (which would block an open for ever), a character device and a
socket are put wherever a command names a file: session_file, bootfile, blkdev and
cow_dir in a molrc, and the FILE argument of ``session info|verify`` and ``cow
info|commit|discard``. Each answer comes at once (a timeout fails the test), in one
line, with status 2, and nothing is created or changed.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from conftest import tally

KINDS = ("directory", "fifo", "chardev", "socket")


@pytest.fixture
def specials(tmp_path):
    made = {}
    made["directory"] = tmp_path / "a-dir"
    made["directory"].mkdir()
    made["fifo"] = tmp_path / "a-fifo"
    os.mkfifo(made["fifo"])
    made["chardev"] = "/dev/null"
    made["socket"] = tmp_path / "a-socket"
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(made["socket"]))
    yield made
    sock.close()


def molpy(*args, cwd):
    return subprocess.run([sys.executable, "-m", "molpy", *args], input=b"exit 9\n", capture_output=True,
                          cwd=cwd, timeout=30)


def one_line(r, *needles: str) -> None:
    err = r.stderr.decode()
    assert r.returncode == 2, (r.returncode, err)
    assert err.count("\n") == 1 and err.startswith("molpy: error: ") and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err


def test_special_files_in_a_molrc(tmp_path, specials):
    disk = tmp_path / "d.img"
    disk.write_bytes(bytes(1 << 20))
    rc = tmp_path / "molrc"
    tried = 0
    for kind in KINDS:
        path = specials[kind]
        for line, key in ((f"session_file: {path}", "session_file"), (f"bootfile: {path}", "bootfile"),
                          (f"blkdev: {path} -rw", "disk"),
                          (f"cow_dir: {path}\nblkdev: {disk} -cow", "cow_dir")):
            if key == "cow_dir" and kind == "directory":
                continue                                    # a folder is what cow_dir wants
            rc.write_text(f"ram_size: 16\n{line}\n")
            before = sorted(os.listdir(tmp_path))
            for check in ((), ("--check",)):
                one_line(molpy("run", "-f", str(rc), *check, cwd=tmp_path), key, str(path))
                tried += 1
            assert sorted(os.listdir(tmp_path)) == before
    tally("special files (directory, FIFO, device, socket) x molrc keys, run and --check", tried)


def test_special_files_as_command_arguments(tmp_path, specials):
    tried = 0
    for kind in KINDS:
        path = str(specials[kind])
        for args in (("session", "info", path), ("session", "verify", path), ("cow", "info", path),
                     ("cow", "commit", path), ("cow", "discard", path)):
            one_line(molpy(*args, cwd=tmp_path), path)
            tried += 1
        assert os.path.exists(path)
    tally("special files (directory, FIFO, device, socket) x session/cow commands", tried)
