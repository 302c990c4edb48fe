"""osi_blk on real guest code and real files: sync and ring I/O, -ro, -rw, -cow, bad requests."""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from blkguest import SECTOR, demo_sum, pattern, run_blk
from molpy.config import BlkdevSpec
from molpy.drivers.cow import STATE_COMMITTING, Header, Overlay
from molpy.drivers.overlays import overlay_name
from molpy.drivers.osi_blk import E_FAULT, E_INVAL, E_LENGTH, E_NOUNIT, E_RANGE, E_ROFS

RAM = 16 << 20


def digest(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def image(path: Path, sectors: int, seed: int | None = None) -> Path:
    data = random.Random(seed).randbytes(sectors * SECTOR) if seed is not None else bytes(sectors * SECTOR)
    path.write_bytes(data)
    return path


def rw(path, **kw) -> BlkdevSpec:
    return BlkdevSpec(path=str(path), readonly=False, **kw)


def test_sync_and_ring_io_with_patterns(tmp_path):
    disk = image(tmp_path / "d.img", 512)
    out = run_blk([rw(disk)], ["w 0 0 1 7", "w 0 10 20 8", "W 0 100 33 9", "W 0 511 1 10",
                               "r 0 0 1", "R 0 10 20", "r 0 100 33", "R 0 100 33", "r 0 511 1"])
    assert out[:4] == ["w 0", "w 0", "W 0", "W 0"]
    assert out[4] == f"r 0 {demo_sum(pattern(0, 1, 7))}"
    assert out[5] == f"R 0 {demo_sum(pattern(10, 20, 8))}"
    assert out[6] == out[7].replace("R", "r") == f"r 0 {demo_sum(pattern(100, 33, 9))}"
    assert out[8] == f"r 0 {demo_sum(pattern(511, 1, 10))}"
    data = disk.read_bytes()
    assert data[10 * SECTOR:30 * SECTOR] == pattern(10, 20, 8)
    assert data[100 * SECTOR:133 * SECTOR] == pattern(100, 33, 9)
    assert data[SECTOR:10 * SECTOR] == bytes(9 * SECTOR)


def test_readonly_refuses_writes(tmp_path):
    disk = image(tmp_path / "ro.img", 64, seed=1)
    before = digest(disk)
    cd = image(tmp_path / "cd.iso", 64, seed=2)
    out = run_blk([BlkdevSpec(path=str(disk)), BlkdevSpec(path=str(cd), cd=True)],
                  ["w 0 1 1 5", "W 0 1 1 5", "w 1 0 1 5", "r 0 1 1", "raw 81 0 0", "raw 81 0 1"])
    # the ring reports an engine error as MOL's does: the engine stops short (the guest says -1)
    assert out[:3] == [f"w {E_ROFS}", "W -1", f"w {E_ROFS}"]
    assert out[3] == f"r 0 {demo_sum(disk.read_bytes()[SECTOR:2 * SECTOR])}"
    assert out[4] == "raw 0 64 5 0"            # media present + read-only
    assert out[5] == "raw 0 64 23 0"           # + removable + cdrom
    assert digest(disk) == before


def test_cow_leaves_the_disk_alone_and_commit_applies(tmp_path, cli):
    disk = image(tmp_path / "base.img", 256, seed=3)
    before = digest(disk)
    cow_dir = tmp_path / "cow"
    out = run_blk([rw(disk, cow=True)], ["w 0 5 3 1", "W 0 7 10 2", "r 0 5 12", "R 0 0 4"],
                  cow_dir=str(cow_dir))
    base = disk.read_bytes()
    expect = bytearray(base)
    expect[5 * SECTOR:8 * SECTOR] = pattern(5, 3, 1)
    expect[7 * SECTOR:17 * SECTOR] = pattern(7, 10, 2)
    assert out[2] == f"r 0 {demo_sum(bytes(expect[5 * SECTOR:17 * SECTOR]))}"
    assert out[3] == f"R 0 {demo_sum(bytes(expect[:4 * SECTOR]))}"
    assert digest(disk) == before
    overlay = cow_dir / overlay_name(str(disk))
    r = cli("cow", "info", str(overlay))
    assert r.returncode == 0 and b"holds:    12 sectors" in r.stdout and b"disk matches: yes" in r.stdout
    r = cli("cow", "commit", str(overlay))
    assert r.returncode == 0, r.stderr
    assert b"committed 12 sectors" in r.stdout and b"will no longer resume" in r.stderr
    assert disk.read_bytes() == bytes(expect)
    assert b"holds:    0 sectors" in cli("cow", "info", str(overlay)).stdout


ops = st.lists(st.tuples(st.sampled_from("wW"), st.integers(0, 255), st.integers(1, 16),
                         st.integers(0, 2**32 - 1)), min_size=1, max_size=12)


@settings(max_examples=25, deadline=None)
@given(ops, st.integers(0, 2**16))
def test_random_writes_match_a_model(tmp_path_factory, writes, seed):
    tmp = tmp_path_factory.mktemp("model")
    disk = image(tmp / "base.img", 272, seed=seed)
    model = bytearray(disk.read_bytes())
    before = digest(disk)
    cmds = []
    for op, lba, n, s in writes:
        cmds.append(f"{op} 0 {lba} {n} {s}")
        model[lba * SECTOR:(lba + n) * SECTOR] = pattern(lba, n, s)
    reads = [(random.Random(seed + i).randrange(0, 240), random.Random(seed - i).randrange(1, 33))
             for i in range(4)]
    cmds += [f"{'rR'[i % 2]} 0 {lba} {n}" for i, (lba, n) in enumerate(reads)]
    out = run_blk([rw(disk, cow=True)], cmds, cow_dir=str(tmp / "cow"))
    assert out[:len(writes)] == [f"{op} 0" for op, *_ in writes]
    for line, (lba, n) in zip(out[len(writes):], reads):
        assert line.split()[1:] == ["0", demo_sum(bytes(model[lba * SECTOR:(lba + n) * SECTOR]))]
    assert digest(disk) == before
    from molpy.drivers.commit import commit
    commit(str(tmp / "cow" / overlay_name(str(disk))))
    assert disk.read_bytes() == bytes(model)


def test_malformed_requests_get_error_codes(tmp_path):
    disk = image(tmp_path / "d.img", 64)
    cmds = [
        "raw 84 0 0 64 0x100000 512",          # sector past the end
        "raw 84 0 0 63 0x100000 1024",         # runs past the end
        f"raw 84 0 0 0 {RAM - 256} 512",       # buffer past RAM
        "raw 84 0 0 0 0xFFFFFF00 512",         # buffer at the top of the address space
        "raw 84 0 0 0 0x100000 0x7FFFFE00",    # huge length
        "raw 84 0 0 0 0x100000 0xFFFFFE00",    # negative length
        "raw 84 0 0 0xFFFFFFFF 0x100000 512",  # negative sector (MOL's is signed)
        "raw 84 0 5 0 0x100000 512",           # unknown unit
        "raw 84 1 0 0 0x100000 512",           # bad channel
        "raw 81 0 9",                          # DISK_INFO of an unknown unit
        f"raw 79 0 {RAM - 64} 8",              # ring outside RAM
        "raw 79 0 0x100000 6",                 # not a power of two
        "raw 79 0 0x100000 0",                 # n = 0 is accepted (MOL) as no usable ring
        "raw 80 0 3 0",                        # ... so START refuses
        "raw 82 0",                            # kick while stopped: 0, as MOL
        "raw 80 0 99 0",                       # unknown CNTRL command
        "raw 84 0 0 0 0x100000 100",           # not whole sectors: fine, as MOL
        "r 0 0 1",                             # and a valid request still works
    ]
    out = run_blk([rw(disk)], cmds)
    codes = [int(line.split()[1]) for line in out]
    assert codes[:-1] == [E_RANGE, E_RANGE, E_FAULT, E_FAULT, E_LENGTH, E_LENGTH, E_RANGE, E_NOUNIT,
                          E_INVAL, E_NOUNIT, E_FAULT, E_INVAL, 0, E_INVAL, 0, E_INVAL, 0]
    assert codes[-1] == 0


def test_bad_rings_stop_the_engine_not_the_host(tmp_path):
    disk = image(tmp_path / "d.img", 64)
    ring = 0x200000
    cmds = [f"raw 79 0 {ring} 4", "raw 80 0 3 0"]
    # a descriptor without request flags
    cmds += [f"poke {ring + 16} 0", f"poke {ring + 20} 0", f"poke {ring + 4} 1", "raw 82 0", "raw 83 0"]
    # a data entry pointing past RAM
    cmds += ["raw 80 0 3 0",
             f"poke {ring + 16} 1", f"poke {ring + 24} 0", f"poke {ring + 28} 0", f"poke {ring + 20} 1",
             f"poke {ring + 32} 8", f"poke {ring + 40} {RAM - 512}", f"poke {ring + 44} 4096",
             f"poke {ring + 36} 0", f"poke {ring + 4} 1", "raw 82 0", "raw 83 0"]
    # a ring that re-arms itself: every slot a NOP with proceed set
    cmds += ["raw 80 0 3 0"]
    for slot in range(4):
        cmds += [f"poke {ring + 16 * slot} 256", f"poke {ring + 16 * slot + 4} 1",
                 f"poke {ring + 16 * slot + 8} 0"]
    cmds += ["raw 82 0", "raw 83 0", "raw 80 0 3 0", "R 0 0 2", "r 0 0 2"]
    out = [line for line in run_blk([rw(disk)], cmds) if line != "poke"]
    raws = [[int(w) for w in line.split()[1:3]] for line in out if line.startswith("raw")]
    # (setup, start, kick, ack) then (start, kick, ack) twice. KICK answers 0 (as MOL); each
    # bad ring stops the engine short: IRQ_ACK shows the line up and what completed (the
    # data entry past RAM: only its request; the re-arming ring: one lap of NOPs less one)
    assert [r[0] for r in raws[:3] + raws[4:6] + raws[7:9]] == [0] * 7, raws
    assert [raws[3], raws[6], raws[9]] == [[1, 0], [1, 1], [1, 3]], raws
    assert out[-2].split()[1:] == ["0", demo_sum(bytes(1024))]
    assert out[-1].split()[1:] == ["0", demo_sum(bytes(1024))]


def _molrc(tmp_path: Path, line: str) -> Path:
    rc = tmp_path / "molrc"
    (tmp_path / "cow").mkdir(exist_ok=True)       # molpy creates no cow_dir a molrc names
    rc.write_text(f"{line}\ncow_dir: {tmp_path / 'cow'}\n")
    return rc


def test_second_process_on_the_same_disk_is_refused(tmp_path, cli):
    disk = image(tmp_path / "d.img", 64)
    rc = _molrc(tmp_path, f"blkdev: {disk} -rw")
    first = subprocess.Popen([sys.executable, "-m", "molpy", "run", "-f", str(rc)], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        seen = b""
        while b"molpy> " not in seen:                    # its disks are open
            chunk = os.read(first.stdout.fileno(), 4096)
            assert chunk, first.stderr.read()
            seen += chunk
        r = cli("run", "-f", str(rc), input=b"exit\n")
        assert r.returncode == 2
        assert f"disk {disk} is in use by another molpy (pid {first.pid})".encode() in r.stderr
        cow_rc = _molrc(tmp_path, f"blkdev: {disk} -rw -cow")
        r = cli("run", "-f", str(cow_rc), input=b"exit\n")
        assert r.returncode == 2 and b"in use by another molpy" in r.stderr
    finally:
        first.communicate(b"exit\n", timeout=30)
    assert first.returncode == 0


def test_overlay_with_changes_is_kept_aside(tmp_path, cli):
    disk = image(tmp_path / "d.img", 64)
    rc = _molrc(tmp_path, f"blkdev: {disk} -rw -cow")
    overlay = tmp_path / "cow" / overlay_name(str(disk))
    r = cli("run", "-f", str(rc), input=b"exit\n")       # reads only: the overlay stays empty
    assert r.returncode == 0 and overlay.exists() and b"kept as" not in r.stderr
    r = cli("run", "-f", str(rc), input=b"write 0 3 first\nexit\n")
    assert r.returncode == 0 and b"kept as" not in r.stderr
    r = cli("run", "-f", str(rc), input=b"read 0 3\nexit\n")
    assert b"kept as" in r.stderr and str(overlay).encode() + b".prev" in r.stderr
    assert b"first" not in r.stdout                       # a fresh overlay: the disk's own data
    prev = Overlay.open(str(overlay) + ".prev")
    try:
        assert prev.sectors_held() == 1
    finally:
        prev.close()
    assert digest(disk) == hashlib.sha256(bytes(64 * SECTOR)).hexdigest()


def test_commit_refuses_a_changed_disk_unless_forced(tmp_path, cli):
    disk = image(tmp_path / "d.img", 64)
    rc = _molrc(tmp_path, f"blkdev: {disk} -rw -cow")
    cli("run", "-f", str(rc), input=b"write 0 3 change\nexit\n")
    overlay = tmp_path / "cow" / overlay_name(str(disk))
    os.utime(disk, ns=(1, 1))
    r = cli("cow", "info", str(overlay))
    assert b"disk matches: NO - it was modified" in r.stdout
    r = cli("cow", "commit", str(overlay))
    assert r.returncode == 2 and b"use --force" in r.stderr
    assert disk.read_bytes() == bytes(64 * SECTOR)
    r = cli("cow", "commit", "--force", str(overlay))
    assert r.returncode == 0
    assert disk.read_bytes()[3 * SECTOR:3 * SECTOR + 6] == b"change"
    r = cli("cow", "discard", str(overlay))
    assert r.returncode == 0 and not overlay.exists()
    r = cli("cow", "commit", str(tmp_path / "d.img"))
    assert r.returncode == 2 and b"not a molpy overlay" in r.stderr


def test_commit_killed_at_random_points_then_rerun(tmp_path, cli):
    """SIGKILL anywhere in a commit; running it again gives base + overlay exactly."""
    from molpy.drivers.cow import CowBackend
    from molpy.drivers.raw import RawBackend

    sectors = 96 << 11                          # 96 MiB disk
    disk = tmp_path / "big.img"
    with open(disk, "wb") as f:
        f.truncate(sectors * SECTOR)
    rng = random.Random(5)
    expect = {}
    path = str(tmp_path / overlay_name(str(disk)))
    backend = CowBackend(RawBackend(str(disk)), Overlay.create(path, RawBackend(str(disk), lock=False).identity()))
    for _ in range(200):
        lba, n = rng.randrange(0, sectors - 2048), rng.randrange(1, 2048)
        data = rng.randbytes(16) * (n * SECTOR // 16)
        backend.write(lba * SECTOR, memoryview(data))
        for i in range(n):
            expect[lba + i] = data[i * SECTOR:(i + 1) * SECTOR]
    backend.close()
    kills = 0
    for attempt in range(8):
        proc = subprocess.Popen([sys.executable, "-m", "molpy", "cow", "commit", path],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # wait until the commit has started writing the disk, then kill it a little later
        while proc.poll() is None and _overlay_state(path) != STATE_COMMITTING:
            time.sleep(0.001)
        time.sleep(rng.uniform(0, 0.05))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
        if proc.returncode == 0:
            break
    r = cli("cow", "commit", path)
    assert r.returncode == 0, r.stderr
    with open(disk, "rb") as f:
        for lba, data in expect.items():
            f.seek(lba * SECTOR)
            assert f.read(SECTOR) == data, lba
    assert b"holds:    0 sectors" in cli("cow", "info", path).stdout
    assert kills >= 1


def _overlay_state(path: str) -> int:
    from molpy.drivers.block import BlockError
    try:
        with open(path, "rb") as f:
            return Header.unpack(f.read(4096), path).state
    except BlockError:           # caught in the middle of a header write
        return -1


def test_img_create_and_info(tmp_path, cli):
    img = tmp_path / "new.img"
    r = cli("img", "create", str(img), "64M")
    assert r.returncode == 0 and img.stat().st_size == 64 << 20 and img.stat().st_blocks == 0
    assert cli("img", "create", str(img), "1M").returncode == 2
    assert img.stat().st_size == 64 << 20
    r = cli("img", "create", str(tmp_path / "x.img"), "12Q")
    assert r.returncode == 2 and b"not a size" in r.stderr
    r = cli("img", "info", str(img))
    assert r.returncode == 0 and b"131072 sectors" in r.stdout


def test_default_config_makes_the_demo_disk_and_counts_boots(cli, tmp_path, molpy_home):
    for n in (1, 2, 3):
        r = cli("run", input=b"count\nexit\n", cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        assert f"boot count: {n}\n".encode() in r.stdout
    assert (molpy_home / "demo.img").stat().st_size == 32 << 20
    r = cli("run", input=b"sum 0 64\nexit\n", cwd=tmp_path)
    data = (molpy_home / "demo.img").read_bytes()[:64 * SECTOR]
    assert f"sum 0 64: {demo_sum(data)}".encode() in r.stdout
