"""Kill storms: SIGKILL at random points of a commit, a save and a -cow run.

After each kill: a re-run of the commit gives exactly base + overlay; the last good
session still resumes; the next run of a -cow guest starts from the untouched disk and
the killed run's overlay is kept aside (.prev) holding only what the guest wrote.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time

from conftest import count, tally
from kit import demo_rc, resumes, saved_session, sha
from molpy.config import load_config
from molpy.console import BufferConsole
from molpy.drivers.commit import commit
from molpy.drivers.cow import STATE_COMMITTING, CowBackend, Header, Overlay
from molpy.drivers.overlays import overlay_name
from molpy.drivers.raw import RawBackend
from molpy.emulation.session import open_session
from molpy.machine import Machine, MachineConfig

SECTOR = 512


def killed(proc: subprocess.Popen, delay: float) -> bool:
    """SIGKILL ``proc`` after ``delay`` s; True when the kill landed (it was still running)."""
    time.sleep(delay)
    landed = proc.poll() is None
    if landed:
        proc.send_signal(signal.SIGKILL)
    proc.wait()
    for pipe in (proc.stdin, proc.stdout):
        if pipe:
            pipe.close()
    return landed


def kill_at(cmd: list[str], delay: float, until_ready=None) -> bool:
    """Start ``cmd``, wait for ``until_ready()`` (if given), then kill it ``delay`` s later."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while until_ready is not None and proc.poll() is None and not until_ready():
        time.sleep(0.001)
    return killed(proc, delay)


def _state(path: str) -> int:
    try:
        with open(path, "rb") as f:
            return Header.unpack(f.read(4096), path).state
    except Exception:            # caught between writes of the header: not yet
        return -1


def test_commit_kill_storm(tmp_path):
    sectors = 64 << 11                                  # 64 MiB disk
    disk = tmp_path / "d.img"
    rng = random.Random(21)
    disk.write_bytes(rng.randbytes(1 << 20) * 64)
    path = str(tmp_path / overlay_name(str(disk)))
    target = count(6, 100)
    landed = rounds = 0
    while landed < target and rounds < 3 * target:
        expect = bytearray(disk.read_bytes())
        backend = CowBackend(RawBackend(str(disk)), Overlay.create(path, RawBackend(str(disk), lock=False).identity()))
        for _ in range(120):
            lba, n = rng.randrange(0, sectors - 1024), rng.randrange(1, 1024)
            data = rng.randbytes(SECTOR) * n
            backend.write(lba * SECTOR, memoryview(data))
            expect[lba * SECTOR:(lba + n) * SECTOR] = data
        backend.close()
        cmd = [sys.executable, "-m", "molpy", "cow", "commit", path]
        if rounds % 2:                                  # anywhere, start-up included
            landed += kill_at(cmd, rng.uniform(0, 0.12))
        else:                                           # once it writes the disk
            landed += kill_at(cmd, rng.uniform(0, 0.02), lambda: _state(path) == STATE_COMMITTING)
        commit(path)                                    # the re-run
        assert disk.read_bytes() == expect, f"round {rounds}: the disk is not base + overlay"
        os.unlink(path)
        rounds += 1
    tally("`molpy cow commit` killed with SIGKILL, then re-run", landed)
    assert landed >= target


SAVER = textwrap.dedent("""
    import dataclasses, random, sys
    from molpy.config import load_config
    from molpy.console import BufferConsole
    from molpy.machine import Machine, MachineConfig
    conf = MachineConfig.from_config(load_config(sys.argv[1]))
    # resume without marking the file used (a kill may come before the first save lands)
    m = Machine.from_session(conf.session_file, dataclasses.replace(conf, session_readonly=True),
                             BufferConsole())
    m.config = dataclasses.replace(conf, session_readonly=False)
    m.run(seconds=0.05)
    rng = random.Random(int(sys.argv[2]))
    print("saving", flush=True)
    while True:
        m.memory.view[0x200000:0x600000] = rng.randbytes(1 << 20) * 4     # new RAM each save
        m.save_session()
""")


def test_save_kill_storm(tmp_path):
    rc, disk, conf = saved_session(tmp_path)
    disk_sha = sha(disk)
    rng = random.Random(22)
    landed = 0
    for r in range(count(5, 100)):
        proc = subprocess.Popen([sys.executable, "-c", SAVER, str(rc), str(r)], stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL)
        assert proc.stdout.readline() == b"saving\n"
        landed += killed(proc, rng.uniform(0, 0.15))
        s = open_session(conf.session_file)           # the last good session opens ...
        s.close()
        resumes(conf)                                   # ... and resumes
    assert sha(disk) == disk_sha, "a -cow disk was written"
    leftovers = [p for p in tmp_path.iterdir() if ".tmp." in p.name]
    assert len(leftovers) <= 1, leftovers              # each save removes the ones killed before it
    tally("session save killed with SIGKILL (previous session resumed after each)", landed)


def test_cow_run_kill_storm(tmp_path):
    rc, disk = demo_rc(tmp_path)
    base = disk.read_bytes()
    cow = tmp_path / "cow"
    conf = MachineConfig.from_config(load_config(rc))
    overlay = cow / overlay_name(str(disk))
    rng = random.Random(23)
    keys = b"".join(b"write 0 %d run%d\n" % (100 + i, i) for i in range(300)) + b"exit 0\n"
    target = count(4, 100)
    landed = rounds = 0
    while landed < target and rounds < 3 * target:
        rounds += 1
        proc = subprocess.Popen([sys.executable, "-m", "molpy", "run", "-f", str(rc)], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        proc.stdin.write(keys)
        proc.stdin.flush()
        proc.stdout.read(1)                            # the guest is up
        landed += killed(proc, rng.uniform(0, 0.1))
        assert disk.read_bytes() == base, "the base disk of a -cow device was written"
        had = overlay.exists() and Overlay.open(str(overlay), writable=False)
        held = had.sectors_held() if had else 0
        if had:
            had.close()
        # the next run starts from the untouched disk and keeps the killed run's overlay aside
        m = Machine(conf, BufferConsole())
        try:
            blk = next(d for d in m.devices if d.kind == "ABLK")
            view = bytearray(2 << 20)
            blk.units[0].backend.readinto(0, memoryview(view))
            assert view == base, "the next run does not start clean"
        finally:
            m.close()
        if held:
            prev = Overlay.open(str(overlay) + ".prev", writable=False)
            try:
                assert prev.sectors_held() == held
                backend = CowBackend(RawBackend(str(disk)), prev)
                for first, n in prev.runs():
                    for lba in range(first, first + n):
                        buf = bytearray(SECTOR)
                        backend.readinto(lba * SECTOR, memoryview(buf))
                        if lba >= 100:                 # the guest's writes, whole and in order
                            text = b"run%d" % (lba - 100)
                            assert buf == text.ljust(SECTOR, b"\0"), (lba, bytes(buf[:16]))
            finally:
                prev.close()
                backend.base.close()
    tally("-cow run killed while the guest writes (next run clean, overlay kept)", landed)
    assert landed >= target
