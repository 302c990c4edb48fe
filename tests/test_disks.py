"""Sessions at real disk sizes: digests kept from the writes, content checks after touch and
cp -a, the read-only recipe's guard, and -cow changes streamed into the session."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import random
import shutil
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from molpy.config import BlkdevSpec
from molpy.console import BufferConsole
from molpy.drivers import digests as D
from molpy.drivers.device import StateMismatch
from molpy.drivers.raw import create_image
from molpy.emulation.session import SessionError, open_session
from molpy.machine import Machine, MachineConfig, Stop
from test_session import F12
from test_terminal import Pty

BIG = 16 << 30
LAST = BIG // 512 - 1
ENTRY = struct.Struct(">4sIQQII")


def brute_root(path: Path, region: int = 1 << 20) -> str:
    """The disk digest as the format defines it, read the slow way."""
    size = path.stat().st_size
    digests = bytearray()
    with open(path, "rb") as f:
        for off in range(0, size, region):
            f.seek(off)
            digests += hashlib.sha256(f.read(min(region, size - off))).digest()
    return D.root_of(size, region, digests)


def sparse_root(path: Path) -> str:
    """The same for a big sparse disk: only regions with data are read."""
    size = path.stat().st_size
    region = D.region_size(size)
    fd = os.open(path, os.O_RDONLY)
    try:
        has_data = D.data_regions(fd, size, region)
        digests = bytearray()
        for i in range(len(has_data)):
            n = min(region, size - i * region)
            data = os.pread(fd, n, i * region) if has_data[i] else bytes(n)
            digests += hashlib.sha256(data).digest()
    finally:
        os.close(fd)
    return D.root_of(size, region, digests)


def chunks(path: Path) -> dict[bytes, tuple]:
    data = path.read_bytes()[:1 << 20]
    n = struct.unpack_from(">I", data, 104)[0]
    return {e[0]: e for e in (ENTRY.unpack_from(data, 4096 + 32 * i) for i in range(n))}


def markers(path: Path) -> list[dict]:
    e = chunks(path)[b"ABLK"]
    with open(path, "rb") as f:
        f.seek(e[2])
        return json.loads(f.read(e[3]))["disks"]


def molrc(tmp: Path, disk: Path, *, readonly: bool, flags: str = "-rw") -> Path:
    (tmp / "cow").mkdir(exist_ok=True)
    rc = tmp / "molrc"
    rc.write_text(f"ram_size: 16\nsession_file: {tmp / 's.session'}\nsession_readonly: "
                  f"{'yes' if readonly else 'no'}\ncow_dir: {tmp / 'cow'}\nblkdev: {disk} {flags}\n")
    return rc


def config(tmp: Path, disk: Path, *, readonly: bool = False, cow: bool = False) -> MachineConfig:
    (tmp / "cow").mkdir(exist_ok=True)
    return MachineConfig(ram_mib=16, blkdevs=[BlkdevSpec(path=str(disk), readonly=False, cow=cow)],
                         cow_dir=str(tmp / "cow"), session_file=str(tmp / "s.session"),
                         session_readonly=readonly)


def save_demo(conf: MachineConfig) -> None:
    """The demo guest booted to its prompt and saved."""
    m = Machine(conf, BufferConsole())
    try:
        m.boot()
        assert m.run(seconds=0.3) is Stop.TIMEOUT
        m.save_session()
    finally:
        m.close()


def rewrite_ablk(session: Path, change, version: int) -> None:
    """The session written again with its osi_blk state changed by ``change(doc)`` and
    recorded as ``version`` (what an older molpy, or a crafted file, holds)."""
    from molpy.emulation.session_write import write_session

    s = open_session(str(session))
    try:
        ram = bytearray(session.read_bytes()[s.ram.offset:s.ram.offset + s.ram.length])
        cpu = s.cpu_dict()
        versions = s.versions()
        devices = []
        for (kind, instance), data in s.device_chunks().items():
            if kind == "ABLK":
                doc = json.loads(data)
                change(doc)
                data = json.dumps(doc).encode()
            devices.append((kind, instance, data))
        assert not s.bulk_chunks()
    finally:
        s.close()
    write_session(str(session), memoryview(ram), cpu, devices, "", versions={**versions, ("ABLK", 0): version})


def ablk(m: Machine):
    return next(d for d in m.devices if d.kind == "ABLK")


def guest_write(m: Machine, offset: int, data: bytes, addr: int = 0x100000) -> None:
    """What the guest's SYNC_WRITE does: bytes from its RAM onto unit 0 at a sector."""
    assert offset % 512 == 0
    m.memory.view[addr:addr + len(data)] = data
    assert ablk(m).sync_write(0, 0, offset // 512, addr, len(data)) == 0


def saved_big(tmp: Path) -> Path:
    """A session saved (library) against a 16 GiB sparse disk with some data on it."""
    disk = tmp / "big.img"
    create_image(str(disk), BIG)
    m = Machine(config(tmp, disk), BufferConsole())
    try:
        m.boot()
        assert m.run(seconds=0.3) is Stop.TIMEOUT
        guest_write(m, 0, b"first" * 1000)
        guest_write(m, 5 << 30, random.Random(1).randbytes(3 << 20))
        guest_write(m, BIG - 4096, b"last" * 1024)
        m.save_session()
    finally:
        m.close()
    return disk


# -- F12 at real disk sizes --

def test_f12_with_a_16_gib_disk_then_touch_copy_and_change(tmp_path, cli, molpy_home):
    """On a terminal: boot, write near both ends of a 16 GiB sparse disk, F12. The marker's
    digest is what the disk holds; touch and cp -a resume after a content check (a note);
    a changed byte is refused, naming the disk."""
    disk = tmp_path / "big.img"
    create_image(str(disk), BIG)
    rc = molrc(tmp_path, disk, readonly=False)
    t = Pty("run", "-f", str(rc))
    try:
        t.read_until(b"molpy> ")
        t.send(f"write 0 {LAST} at-the-end\r".encode())
        t.read_until(b"wrote sector")
        t.send(b"write 0 2048 one-mib-in\r")
        t.read_until(b"wrote sector 2048")
        t.send(F12)
        t.read_until(b"session saved to")
        assert t.wait() == 0
    finally:
        t.close()
    session = tmp_path / "s.session"
    (m,) = markers(session)
    assert m["region"] == 1 << 20 and m["digest"] == sparse_root(disk)
    assert list((molpy_home / "digests").iterdir()), "the digests were not cached at close"
    r = cli("session", "verify", str(session), "-f", str(rc), "--deep")
    assert r.returncode == 0 and b"disk contents match" in r.stdout, r.stdout + r.stderr

    rc = molrc(tmp_path, disk, readonly=True, flags="-rw -cow")
    os.utime(disk)                                               # touch
    r = cli("run", "-f", str(rc), input=b"read 0 2048\nexit 4\n")
    out = r.stdout.decode()
    assert r.returncode == 4, r.stderr
    assert f"molpy: disk {disk}: it was modified since; its contents are still the ones the session was saved " \
           f"with (checked)" in out, out
    assert "6f 6e 65 2d" in out                                 # "one-" read back through the overlay
    fd = os.open(disk, os.O_RDONLY)
    try:                                                         # the check's result is kept for this identity
        assert D.DiskDigests(fd, BIG, str(disk)).load_cache(str(molpy_home))
    finally:
        os.close(fd)
    copy = tmp_path / "copy.img"
    subprocess.run(["cp", "-a", "--sparse=always", str(disk), str(copy)], check=True)
    os.replace(copy, disk)                                       # restored from a byte-identical copy
    r = cli("run", "-f", str(rc), input=b"exit 5\n")
    assert r.returncode == 5 and b"a different file now" in r.stdout and b"(checked)" in r.stdout, r.stdout
    with open(disk, "r+b") as f:                                 # one byte in a hole, far from the data
        f.seek(9 << 30)
        f.write(b"\x01")
    for args in (("run", "-f", str(rc)), ("run", "-f", str(rc), "--check")):
        r = cli(*args, input=b"exit 5\n")
        err = r.stderr.decode()
        assert r.returncode == 2 and err.count("\n") == 1 and str(disk) in err, err
        assert "its contents differ (checked)" in err and "--fresh" in err and "Traceback" not in err


@pytest.fixture(scope="module")
def big_session(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("big")
    old = os.environ.get("MOLPY_HOME")
    os.environ["MOLPY_HOME"] = str(tmp / "home")
    try:
        disk = saved_big(tmp)
    finally:
        if old is None:
            del os.environ["MOLPY_HOME"]
        else:
            os.environ["MOLPY_HOME"] = old
    return tmp, disk, config(tmp, disk, readonly=True, cow=True)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(where=st.one_of(st.integers(0, BIG - 1), st.sampled_from([0, 4999, (5 << 30) + 12345, BIG - 1])),
       keep_date=st.booleans())
def test_a_changed_byte_anywhere_is_refused(big_session, where, keep_date):
    """Whatever byte changes, the session is refused: at resume when the date changed, by
    `session verify --deep` when someone put the date back."""
    tmp, disk, conf = big_session
    st0 = disk.stat()
    with open(disk, "r+b") as f:
        f.seek(where)
        old = f.read(1)
        f.seek(where)
        f.write(bytes([old[0] ^ 0x5A]))
    try:
        if keep_date:
            os.utime(disk, ns=(st0.st_atime_ns, st0.st_mtime_ns))
        else:
            with pytest.raises(StateMismatch, match=f"disk {disk} changed: .*its contents differ"):
                Machine.from_session(conf.session_file, conf).close()
        m = Machine(dataclasses.replace(conf, session_file=None, inspect_only=True))
        try:
            s = open_session(conf.session_file)
            blk = ablk(m)
            problems = blk.verify_state(s.device_chunks()[("ABLK", 0)], 3, deep=True)
            s.close()
        finally:
            m.close()
        assert problems and str(disk) in problems[0], problems
    finally:
        with open(disk, "r+b") as f:
            f.seek(where)
            f.write(old)
        os.utime(disk, ns=(st0.st_atime_ns, st0.st_mtime_ns))
    Machine.from_session(conf.session_file, conf).close()    # as it was: resumes again


# -- the digests follow the writes --

@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=st.lists(st.tuples(st.integers(0, (24 << 20) // 512 - 1), st.integers(1, 3 << 11),
                                st.sampled_from(["write", "idle", "save"])), min_size=1, max_size=12))
def test_digests_follow_the_guests_writes(tmp_path_factory, steps):
    """Writes through osi_blk (which marks their regions) while the background thread
    re-hashes: every save's digest is the disk's, whatever the timing."""
    tmp = tmp_path_factory.mktemp("follow")
    disk = tmp / "d.img"
    create_image(str(disk), 24 << 20)
    rng = random.Random(len(steps))
    m = Machine(config(tmp, disk))
    try:
        for sector, count, what in steps:
            count = min(count, (24 << 20) // 512 - sector)
            guest_write(m, sector * 512, rng.randbytes(count * 512))
            if what == "idle":
                time.sleep(D.SETTLE * 3)
            elif what == "save":
                doc = json.loads(ablk(m).save_state())
                assert doc["disks"][0]["digest"] == brute_root(disk)
        doc = json.loads(ablk(m).save_later().finish())
        assert doc["disks"][0]["digest"] == brute_root(disk)
    finally:
        m.close()


def test_the_cache_is_used_only_for_the_disk_as_it_was(tmp_path, molpy_home):
    """Written at close when complete; refused after touch; a damaged entry is ignored; a
    deep check never reads it."""
    disk = tmp_path / "d.img"
    disk.write_bytes(random.Random(2).randbytes(3 << 20) + bytes(5 << 20))
    root = brute_root(disk)
    m = Machine(config(tmp_path, disk))
    ablk(m).save_state()                                      # every digest known: cached at close
    m.close()
    fd = os.open(disk, os.O_RDONLY)
    try:
        d = D.DiskDigests(fd, 8 << 20, str(disk))
        assert d.load_cache(str(molpy_home)) and d.root() == root
        entry = next((molpy_home / "digests").iterdir())
        data = bytearray(entry.read_bytes())
        data[200] ^= 1
        entry.write_bytes(bytes(data))
        assert not D.DiskDigests(fd, 8 << 20, str(disk)).load_cache(str(molpy_home))
        d.save_cache(str(molpy_home))                        # (unchanged identity: nothing to write)
        d._cached_key = None
        assert d.save_cache(str(molpy_home))
        os.utime(disk)
        assert not D.DiskDigests(fd, 8 << 20, str(disk)).load_cache(str(molpy_home))
        # a lying entry for the disk as it is now: the normal check trusts molpy's own folder,
        # --deep reads the disk
        fake = D.DiskDigests(fd, 8 << 20, str(disk))
        fake.compute("x")
        fake.digests[:32] = bytes(32)
        fake._cached_key = None
        assert fake.save_cache(str(molpy_home))
        trusting = D.DiskDigests(fd, 8 << 20, str(disk))
        assert trusting.load_cache(str(molpy_home)) and trusting.root() != root
        assert trusting.compute("deep") == root
    finally:
        os.close(fd)


def test_write_behind_flushes_a_disk_the_guest_stopped_writing(tmp_path):
    disk = tmp_path / "d.img"
    create_image(str(disk), 8 << 20)
    m = Machine(config(tmp_path, disk))
    try:
        u = ablk(m).units[0]
        guest_write(m, 4096, b"x" * 65536)
        assert u.unflushed
        deadline = time.monotonic() + 20
        while u.unflushed and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not u.unflushed, "the disk was not flushed in the background"
    finally:
        m.close()


# -- sessions of molpy 0.1.0: a plain SHA-256 of the whole disk --

def _as_version_2(session: Path, disk: Path) -> None:
    def change(doc):
        for m in doc["disks"]:
            del m["region"]
            m["digest"] = hashlib.sha256(disk.read_bytes()).hexdigest()
    rewrite_ablk(session, change, 2)


def test_older_sessions_whole_disk_digests_still_work(tmp_path, cli):
    disk = tmp_path / "d.img"
    disk.write_bytes(random.Random(3).randbytes(2 << 20) + bytes(6 << 20))
    save_demo(config(tmp_path, disk))
    session = tmp_path / "s.session"
    _as_version_2(session, disk)
    rc = molrc(tmp_path, disk, readonly=True, flags="-rw -cow")
    r = cli("session", "verify", str(session), "-f", str(rc), "--deep")
    assert r.returncode == 0 and b"disk contents match" in r.stdout, r.stdout
    os.utime(disk)
    for _ in range(2):                                          # (the second time from the cache)
        r = cli("run", "-f", str(rc), input=b"exit 7\n")
        assert r.returncode == 7 and b"(checked)" in r.stdout, r.stdout + r.stderr
    with open(disk, "r+b") as f:
        f.seek(7 << 20)
        f.write(b"!")
    r = cli("run", "-f", str(rc), input=b"exit 7\n")
    assert r.returncode == 2 and b"its contents differ" in r.stderr, r.stderr


def test_crafted_region_sizes_are_refused(tmp_path):
    disk = tmp_path / "d.img"
    create_image(str(disk), 4 << 20)
    conf = config(tmp_path, disk, cow=True)
    save_demo(conf)
    session = Path(conf.session_file)
    good = session.read_bytes()
    for region in (0, 3, 1000, 1 << 70, "1048576", None, 512):
        session.write_bytes(good)
        rewrite_ablk(session, lambda doc: doc["disks"][0].update(region=region), 3)
        with pytest.raises((SessionError, ValueError)) as e:
            Machine.from_session(str(session), dataclasses.replace(conf, session_readonly=True)).close()
        assert "region" in str(e.value) and "\n" not in str(e.value), (region, e.value)


# -- the read-only recipe --

def test_a_read_only_session_with_a_writable_disk_without_cow_is_refused(tmp_path, cli):
    disk = tmp_path / "d.img"
    create_image(str(disk), 4 << 20)
    save_demo(config(tmp_path, disk))
    before = disk.read_bytes()
    rc = molrc(tmp_path, disk, readonly=True, flags="-rw")
    for args in (("run", "-f", str(rc)), ("run", "-f", str(rc), "--check"), ("run", "-f", str(rc), "--fresh")):
        r = cli(*args, input=b"write 0 9 oops\nexit 0\n")
        err = r.stderr.decode()
        assert r.returncode == 2 and err.count("\n") == 1 and "add -cow" in err and str(disk) in err, (args, err)
    r = cli("session", "verify", str(tmp_path / "s.session"), "-f", str(rc))
    assert r.returncode == 1 and b"add -cow" in r.stdout
    with pytest.raises(StateMismatch, match="add -cow"):
        Machine.from_session(str(tmp_path / "s.session"), config(tmp_path, disk, readonly=True)).close()
    assert disk.read_bytes() == before
    for flags in ("-rw -cow", "-ro"):
        rc = molrc(tmp_path, disk, readonly=True, flags=flags)
        r = cli("run", "-f", str(rc), input=b"exit 4\n")
        assert r.returncode == 4, (flags, r.stderr)


# -- -cow changes streamed into the session --

def _overlay_machine(tmp: Path, shapes: list[tuple[int, bytes]]) -> Machine:
    disk = tmp / "base.img"
    if not disk.exists():
        disk.write_bytes(random.Random(4).randbytes(1 << 20) + bytes(63 << 20))
    m = Machine(config(tmp, disk, cow=True))
    backend = ablk(m).units[0].backend
    for offset, data in shapes:
        backend.write(offset, memoryview(data))
    return m


SHAPES = [(0, b"A" * 512), (1000, b"b" * 3000), (5 << 20, random.Random(5).randbytes(9 << 20)),
          ((64 << 20) - 700, b"end" * 200), (20 << 20, b"\0" * 4096)]


def _cowd(session: Path) -> tuple[bytes, int]:
    e = chunks(session)[b"COWD"]
    with open(session, "rb") as f:
        f.seek(e[2])
        return f.read(e[3]), e[4]


def test_the_streamed_overlay_is_byte_for_byte_the_overlay(tmp_path, monkeypatch):
    """The COWD chunk is the bitmap then every held sector in order, its CRC that of its
    bytes; the same with the kernel copy unavailable (another file system); the changes
    come back on resume."""
    m = _overlay_machine(tmp_path, SHAPES)
    ov = ablk(m).units[0].backend.overlay
    expect = bytes(ov.bits) + b"".join(os.pread(e.fd, e.count * 512, e.offset) for e in ov.block_status())
    view = bytearray(64 << 20)
    ablk(m).units[0].backend.readinto(0, memoryview(view))
    try:
        m.save_session()
        got, crc = _cowd(Path(m.config.session_file))
        assert got == expect and crc == zlib.crc32(expect)

        def no_kernel_copy(*args):
            raise OSError(18, "Invalid cross-device link")
        monkeypatch.setattr(os, "copy_file_range", no_kernel_copy)
        m.save_session()
        assert _cowd(Path(m.config.session_file)) == (got, crc)
    finally:
        m.close()
    monkeypatch.undo()
    conf = dataclasses.replace(m.config, session_readonly=True)
    r = Machine.from_session(conf.session_file, conf)
    try:
        again = bytearray(64 << 20)
        ablk(r).units[0].backend.readinto(0, memoryview(again))
        assert again == view
    finally:
        r.close()


def test_a_source_that_ends_early_is_an_error_not_a_short_copy(tmp_path):
    from molpy.files import ReadBehind, kernel_copy

    src = tmp_path / "src"
    src.write_bytes(b"x" * 10000)
    a, b = os.open(src, os.O_RDONLY), os.open(tmp_path / "dst", os.O_RDWR | os.O_CREAT)
    try:
        with pytest.raises(OSError, match="ends"):
            kernel_copy(a, 0, b, 0, 20000)
        check = ReadBehind(b, 0)
        kernel_copy(a, 0, b, 100, 10000, check.written)
        assert check.finish() == zlib.crc32(b"x" * 10100)       # (the failed copy wrote its 10000 first)
    finally:
        os.close(a)
        os.close(b)


def test_the_streamed_save_holds_little_memory(tmp_path):
    """A 256 MiB overlay saved: the process's peak RSS grows by far less than that."""
    script = f"""
import os, sys
sys.path.insert(0, {str(Path(__file__).parent)!r})
os.environ["MOLPY_HOME"] = {str(tmp_path / "home")!r}
from pathlib import Path
from test_disks import _overlay_machine
chunk = os.urandom(8 << 20)
m = _overlay_machine(Path({str(tmp_path)!r}), [(off, chunk) for off in range(0, 256 << 20, 16 << 20)])
def status(key):
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith(key + ":"))
before = status("VmRSS")
open("/proc/self/clear_refs", "w").write("5")
m.save_session()
print(status("VmHWM") - before)
m.close()
"""
    disk = tmp_path / "base.img"
    create_image(str(disk), 512 << 20)
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    grew_kib = int(r.stdout.split()[-1])
    assert grew_kib < 48 << 10, f"the save grew the process by {grew_kib} KiB"


# -- mistakes --

def test_session_verify_on_a_deleted_demo_disk_says_missing(cli, molpy_home):
    """The built-in config: the demo disk deleted, verify says so and makes no new one."""
    from molpy.config import load_config

    save_demo(MachineConfig.from_config(load_config(None)))
    demo = molpy_home / "demo.img"
    demo.unlink()
    r = cli("session", "verify", str(molpy_home / "default.session"))
    assert r.returncode == 1 and b"demo.img is missing" in r.stdout and not demo.exists(), r.stdout


def test_long_checks_show_a_bar_on_a_terminal_only(tmp_path, cli):
    disk = tmp_path / "d.img"
    create_image(str(disk), 256 << 20)
    with open(disk, "r+b") as f:
        f.write(random.Random(6).randbytes(D.PROGRESS_MIN + (8 << 20)))
    save_demo(config(tmp_path, disk))
    rc = molrc(tmp_path, disk, readonly=True, flags="-rw -cow")
    os.utime(disk)
    r = cli("run", "-f", str(rc), input=b"exit 2\n")
    assert r.returncode == 2 and b"checking" not in r.stderr + r.stdout and b"(checked)" in r.stdout
    shutil.rmtree(os.environ["MOLPY_HOME"] + "/digests")        # the next check reads the disk again
    os.utime(disk)
    t = Pty("run", "-f", str(rc))
    try:
        t.read_until(b"(checked)")
        assert b"checking d.img" in t.output
        t.read_until(b"molpy> ")
        t.send(b"exit 6\r")
        assert t.wait() == 6 and t.restored()
    finally:
        t.close()
