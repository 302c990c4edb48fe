"""Host faults: a full disk, folders molpy may not write, a disk that vanishes or shrinks.

Each gives a clear message; where the guest asked for the I/O it gets an error code
(EIO) and goes on; nothing already saved is damaged. A full disk is RLIMIT_FSIZE for
writes that grow a file, and a 2 MiB tmpfs for the commit (which writes inside an
existing file); folders and files molpy may not write are made so with chmod, or as
root (who ignores modes) with chattr +i. Where the host allows neither (no mount, no
chattr), those tests are skipped and say why.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import textwrap
from contextlib import contextmanager
from pathlib import Path

import pytest

from conftest import tally
from kit import demo_rc, resumes, saved_session, sha
from molpy.config import load_config
from molpy.console import BufferConsole
from molpy.drivers import osi_blk as B
from molpy.drivers.commit import commit
from molpy.drivers.cow import CowBackend, Overlay
from molpy.drivers.overlays import overlay_name
from molpy.drivers.raw import RawBackend
from molpy.machine import Machine, MachineConfig

SECTOR = 512


def molpy(*args: str, limit: int | None = None, input: bytes = b"") -> subprocess.CompletedProcess:
    def preexec():
        if limit is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return subprocess.run([sys.executable, "-m", "molpy", *args], input=input, capture_output=True,
                          timeout=60, preexec_fn=preexec)


def assert_clear(stderr: bytes) -> str:
    text = stderr.decode()
    assert "Traceback" not in text, text
    return text


@contextmanager
def unwritable(path: Path):
    """``path`` (a file or folder) that molpy may not write, even as root."""
    if os.geteuid() != 0:
        mode = path.stat().st_mode
        path.chmod(0o555 if path.is_dir() else 0o444)
        try:
            yield
        finally:
            path.chmod(mode)
        return
    if subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode:
        pytest.skip("running as root and chattr +i is not available here: cannot deny a write")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)


@contextmanager
def small_filesystem(where: Path, size: str = "2m"):
    where.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True)
    if r.returncode:
        pytest.skip(f"cannot mount a small tmpfs here ({r.stderr.decode().strip()})")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


# -- a full disk --

SAVE_FULL = textwrap.dedent("""
    import dataclasses, resource, sys
    from molpy.config import load_config
    from molpy.console import BufferConsole
    from molpy.emulation.session import SessionError
    from molpy.machine import Machine, MachineConfig
    conf = MachineConfig.from_config(load_config(sys.argv[1]))
    m = Machine(dataclasses.replace(conf, session_readonly=False), BufferConsole())
    m.boot()
    m.run(seconds=0.5)
    m.memory.view[0x100000:0x900000] = b"full" * 0x200000
    resource.setrlimit(resource.RLIMIT_FSIZE, (4 << 20, 4 << 20))
    try:
        m.save_session()
        print("saved")
    except SessionError as e:
        print(f"refused: {e}")
""")


def test_full_disk_during_save_keeps_the_previous_session(tmp_path):
    rc, disk, conf = saved_session(tmp_path)
    before = sha(conf.session_file)
    r = subprocess.run([sys.executable, "-c", SAVE_FULL, str(rc)], capture_output=True, timeout=60)
    out = r.stdout.decode()
    assert_clear(r.stderr)
    assert out.startswith("refused: ") and out.count("\n") == 1, out
    assert "File too large" in out and "previous session" in out, out
    assert sha(conf.session_file) == before
    assert not [p for p in tmp_path.iterdir() if ".tmp." in p.name], "the partial save was left behind"
    resumes(conf, 5)
    tally("host faults: full disk during save (RLIMIT_FSIZE)", 1)


def test_full_disk_during_overlay_writes_gives_the_guest_eio(tmp_path):
    rc, disk = demo_rc(tmp_path)
    base = sha(disk)
    # sector 3000 lies 1.5 MiB into the overlay's data: past a 1 MiB file-size limit
    r = molpy("run", "-f", str(rc), limit=1 << 20,
              input=b"write 0 3000 far\nwrite 0 10 near\nread 0 10\nexit 0\n")
    out = r.stdout.decode()
    assert_clear(r.stderr)
    assert r.returncode == 0, (out, r.stderr)
    assert "write: I/O error" in out and "wrote sector 10 of disk 0" in out and "6e 65 61 72" in out, out
    assert sha(disk) == base
    ov = Overlay.open(str(tmp_path / "cow" / overlay_name(str(disk))), writable=False)
    try:
        held = {s for first, n in ov.runs() for s in range(first, first + n)}
        assert 10 in held and 3000 not in held        # the failed write claims nothing
    finally:
        ov.close()
    tally("host faults: full disk during -cow overlay writes (RLIMIT_FSIZE)", 1)


def test_full_filesystem_during_commit(tmp_path):
    with small_filesystem(tmp_path / "small") as small:
        disk = small / "d.img"
        with open(disk, "wb") as f:
            f.truncate(8 << 20)                        # sparse: 8 MiB on a 2 MiB filesystem
        path = str(tmp_path / overlay_name(str(disk)))
        ov = CowBackend(RawBackend(str(disk)), Overlay.create(path, RawBackend(str(disk), lock=False).identity()))
        data = os.urandom(4 << 20)
        ov.write(0, memoryview(data))
        ov.close()
        r = molpy("cow", "commit", path)
        err = assert_clear(r.stderr)
        assert r.returncode != 0 and err.count("\n") == 1 and "No space left" in err, err
        # make room (a bigger filesystem): the commit runs again and finishes exactly
        subprocess.run(["mount", "-o", "remount,size=16m", str(small)], check=True)
        commit(path)
        with open(disk, "rb") as f:
            assert f.read(4 << 20) == data
    tally("host faults: full filesystem during cow commit (tmpfs)", 1)


# -- folders and files molpy may not write --

def test_unwritable_cow_dir_is_a_clear_error(tmp_path):
    rc, disk = demo_rc(tmp_path)
    (tmp_path / "cow").mkdir(exist_ok=True)
    with unwritable(tmp_path / "cow"):
        r = molpy("run", "-f", str(rc), input=b"exit 0\n")
    err = assert_clear(r.stderr)
    assert r.returncode == 2 and err.count("\n") == 1 and "overlay" in err and "cannot create" in err, err
    tally("host faults: unwritable cow_dir", 1)


def test_unwritable_session_folder_refuses_the_save(tmp_path):
    rc, disk = demo_rc(tmp_path, f"session_file: {tmp_path / 'sessions' / 's.session'}\n")
    (tmp_path / "sessions").mkdir()
    conf = MachineConfig.from_config(load_config(rc))
    m = Machine(conf, BufferConsole())
    try:
        m.boot()
        m.run(seconds=0.3)
        m.save_session()
        before = sha(conf.session_file)
        with unwritable(tmp_path / "sessions"):
            from molpy.emulation.session import SessionError
            with pytest.raises(SessionError) as e:
                m.save_session()
        assert "\n" not in str(e.value) and "cannot write the session" in str(e.value)
        assert sha(conf.session_file) == before
    finally:
        m.close()
    tally("host faults: unwritable session folder", 1)


def test_permission_denied_on_a_disk(tmp_path):
    rc, disk = demo_rc(tmp_path, disk_flags="-rw -boot")
    with unwritable(disk):
        r = molpy("run", "-f", str(rc), input=b"exit 0\n")
    err = assert_clear(r.stderr)
    assert r.returncode == 2 and err.count("\n") == 1 and f"disk {disk}: cannot open it" in err, err
    tally("host faults: permission denied on a disk", 1)


# -- a disk that vanishes or shrinks under a running guest --

def _sync(m: Machine, sel: int, unit: int, blk: int, addr: int, size: int) -> int:
    cpu = m.cpu
    m.memory.view[0x1000:0x1008] = bytes.fromhex("44000002 48000000")
    for i, v in enumerate([0x113724FA, 0x77810F9B, sel, 0, unit, blk, addr, size]):
        cpu.set_reg(3 + i, v)
    cpu.pc = 0x1000
    cpu.uc.emu_start(0x1000, 0x1004)
    assert m._error is None and m.fault is None
    r = cpu.reg(3)
    return r - (1 << 32) if r & 0x80000000 else r


def test_disk_that_vanishes_or_shrinks_while_the_guest_runs(tmp_path):
    a, b = tmp_path / "a.img", tmp_path / "b.img"
    a.write_bytes(os.urandom(1 << 20))
    b.write_bytes(os.urandom(1 << 20))
    from molpy.config import BlkdevSpec
    m = Machine(MachineConfig(ram_mib=2, blkdevs=[BlkdevSpec(str(a), readonly=False),
                                                   BlkdevSpec(str(b), readonly=False)]))
    try:
        R, W = B.OSI_ABLK_SYNC_READ, B.OSI_ABLK_SYNC_WRITE
        assert _sync(m, W, 0, 0, 0x10000, 4096) == 0
        a.unlink()                                      # the image is deleted
        assert _sync(m, W, 0, 8, 0x10000, 4096) == B.E_IO, "a write to a deleted disk would be lost"
        assert _sync(m, R, 0, 0, 0x20000, 4096) == 0    # what is still there reads back
        os.truncate(b, 64 << 10)                        # the other one shrinks to 64 KiB
        assert _sync(m, R, 1, 0, 0x20000, 4096) == 0
        assert _sync(m, R, 1, 256, 0x20000, 4096) == B.E_IO, "reading past the new end"
        assert _sync(m, W, 1, 256, 0x20000, 4096) == B.E_IO, "writing past the new end"
        assert os.path.getsize(b) == 64 << 10
        assert _sync(m, R, 1, 0, 0x20000, 4096) == 0    # the guest goes on
    finally:
        m.close()
    tally("host faults: disk deleted or shrunk under the guest", 1)
