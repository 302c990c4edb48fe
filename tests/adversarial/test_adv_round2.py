"""Round 2: what an independent attack found, each as its whole class (issue 9).

Planted files at every name molpy creates; commits into a disk that is not the one the
commit started on; crafted device and CPU state with resealed checksums; backends
called with any offset; session tables that overlap; FIFOs and directories where
files belong; a session file truncated under the running guest; a save whose overlay
is bigger than any in-memory chunk; -cow against raw for every request shape; the ring
engine's own RAM writes; a stop request during long I/O; two molpy processes on one
session.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import struct
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import LONG, count, tally
from kit import demo_rc, saved_session, sha
from sessionkit import ENTRY, chunk_of, replace_chunk, reseal
from molpy.cli import main as cli_main
from molpy.config import BlkdevSpec, load_config
from molpy.console import BufferConsole
from molpy.drivers import osi_blk as B
from molpy.drivers.block import BlockError
from molpy.drivers.cow import STATE_COMMITTING, CowBackend, Header, Overlay
from molpy.drivers.overlays import overlay_name
from molpy.drivers.raw import RawBackend, create_image
from molpy.drivers.demo_disk import make_demo_disk
from molpy.emulation.session import SessionError, open_session
from molpy.emulation.session_write import write_session
from molpy.machine import Machine, MachineConfig, Stop
from waits import read_until

PLANTS = ("symlink to a victim", "dangling symlink", "FIFO", "directory")


def cli(*args: str, input: bytes = b"", timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "molpy", *args], input=input, capture_output=True,
                          timeout=timeout)


def one_line_error(stderr: bytes) -> str:
    err = stderr.decode()
    assert "Traceback" not in err, err
    assert sum(line.startswith("molpy: error: ") for line in err.splitlines()) == 1, err
    return err


def plant(path: Path, how: str, victim: Path) -> None:
    if how == "symlink to a victim":
        path.symlink_to(victim)
    elif how == "dangling symlink":
        path.symlink_to(victim.parent / "nothing-here")
    elif how == "FIFO":
        os.mkfifo(path)
    else:
        path.mkdir()


def victim_file(tmp: Path) -> tuple[Path, bytes]:
    victim = tmp / "victim.txt"
    data = b"the user's precious file\n" * 100
    victim.write_bytes(data)
    return victim, data


# -- 1. nothing planted at a name molpy creates redirects it --

@pytest.mark.parametrize("how", PLANTS)
def test_planted_save_temporaries_redirect_nothing(tmp_path, how):
    """Found: a save opened `.NAME.tmp.PID` with O_CREAT|O_TRUNC and followed a symlink
    there, overwriting its target and leaving the session a symlink to it."""
    victim, data = victim_file(tmp_path)
    session = tmp_path / "s.session"
    for name in (f".s.session.tmp.{os.getpid()}", ".s.session.tmp.1"):
        plant(tmp_path / name, how, victim)
    write_session(str(session), memoryview(bytearray(1 << 20)), {"pc": 0}, [], "")
    assert victim.read_bytes() == data
    assert session.is_file() and not session.is_symlink()
    open_session(str(session)).close()
    tally("planted files at names molpy creates (symlink, FIFO, directory): victims written", 1)


@pytest.mark.parametrize("how", PLANTS)
def test_planted_overlay_names_redirect_nothing(tmp_path, how):
    """The overlay and its .prev: whatever sits there is moved aside or refused, never
    written through; the guest's writes go to a fresh overlay."""
    victim, data = victim_file(tmp_path)
    rc, disk = demo_rc(tmp_path)
    base = sha(disk)
    cow = tmp_path / "cow"
    name = overlay_name(str(disk))
    plant(cow / name, how, victim)
    if how != "directory":
        plant(cow / (name + ".prev"), how, victim)
    conf = MachineConfig.from_config(load_config(rc))
    said: list[str] = []
    m = Machine(conf, BufferConsole(b"write 0 100 planted\nexit 2\n"))
    try:
        m.boot()
        assert m.run(seconds=10) is Stop.EXIT and m.exit_code == 2
    finally:
        m.close()
    assert victim.read_bytes() == data and sha(disk) == base
    ov = Overlay.open(str(cow / name), writable=False)
    try:
        assert ov.sectors_held() > 0 and not os.path.islink(cow / name)
    finally:
        ov.close()
    del said
    tally("planted files at names molpy creates (symlink, FIFO, directory): victims written", 1)


@pytest.mark.parametrize("how", PLANTS)
def test_planted_image_and_demo_disk_names(tmp_path, how):
    victim, data = victim_file(tmp_path)
    target = tmp_path / "new.img"
    plant(target, how, victim)
    with pytest.raises(BlockError):
        create_image(str(target), 1 << 20)
    demo = tmp_path / "demo.img"
    plant(Path(f"{demo}.new.{os.getpid()}"), how, victim)
    try:
        make_demo_disk(demo, 1 << 20)
    except OSError:
        pass                                     # refusing is fine; writing through is not
    assert victim.read_bytes() == data
    tally("planted files at names molpy creates (symlink, FIFO, directory): victims written", 1)


# -- 2. a commit writes only into the disk whose identity it recorded --

def interrupted_commit(tmp: Path) -> tuple[Path, Path]:
    """An overlay in state 1 for a 1 MiB disk, as a commit killed after its start leaves it."""
    disk = tmp / "d.img"
    disk.write_bytes(bytes(1 << 20))
    path = tmp / overlay_name(str(disk))
    b = CowBackend(RawBackend(str(disk)), Overlay.create(str(path), RawBackend(str(disk), lock=False).identity()))
    b.write(0, memoryview(b"old data" * 512))
    b.close()
    ov = Overlay.open(str(path))
    ov.header.state = STATE_COMMITTING
    ov.write_header()
    ov.close()
    return disk, path


def test_interrupted_commit_into_a_replaced_disk_is_refused(tmp_path):
    """Found: a commit in state 1 checked nothing and needed no --force: an interrupted
    commit whose disk was then replaced by another image went into the new image."""
    disk, path = interrupted_commit(tmp_path)
    disk.unlink()
    disk.write_bytes(b"\xAA" * (3 << 20))               # another image at the same path
    new = sha(disk)
    r = cli("cow", "commit", str(path))
    err = one_line_error(r.stderr)
    assert r.returncode == 2 and "different file" in err and str(disk) in err, err
    assert sha(disk) == new
    r = cli("cow", "commit", "--force", str(path))
    assert r.returncode == 0, r.stderr
    assert disk.read_bytes()[:8] == b"old data"
    tally("commits into a disk other than the recorded one: written", 1)


def test_crafted_overlay_in_commit_state_naming_another_file(tmp_path):
    """A crafted overlay in state 1 naming any file: refused unless it is that very file."""
    victim, data = victim_file(tmp_path)
    disk, path = interrupted_commit(tmp_path)
    raw = bytearray(path.read_bytes()[:4096])
    h = Header.unpack(bytes(raw), str(path))
    st_ = victim.stat()
    for inode, size in ((st_.st_ino + 1, st_.st_size), (st_.st_ino, st_.st_size + 512)):
        h.base = dataclasses.replace(h.base, path=str(victim), inode=inode, size=size, dev=st_.st_dev,
                                     mtime_ns=st_.st_mtime_ns)
        h.nsectors = (h.base.size + 511) // 512
        forged = tmp_path / f"forged-{inode}-{size}.cow"
        forged.write_bytes(h.pack() + bytes(8192))
        r = cli("cow", "commit", str(forged))
        assert r.returncode == 2, r.stderr
        one_line_error(r.stderr)
        assert victim.read_bytes() == data
    tally("commits into a disk other than the recorded one: written", 2)


# -- 3 and 5. crafted state in resealed sessions --

@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("round2")
    rc, disk, conf = saved_session(tmp, ram_mib=8)
    return tmp, rc, conf, Path(conf.session_file).read_bytes()


def ablk_state(good: bytes) -> dict:
    return json.loads(chunk_of(good, b"ABLK"))


def ablk_bytes(doc: dict | str) -> bytes:
    return (doc if isinstance(doc, str) else json.dumps(doc)).encode()


def crafted_sessions(good: bytes):
    """(what, session bytes): each must be refused with one line, whatever it targets."""
    cpu = json.loads(chunk_of(good, b"CPU "))
    yield "CPU chunk of 100,000 '['", replace_chunk(good, b"CPU ", b"[" * 100_000)
    yield "CPU state nested 100,000 deep", replace_chunk(good, b"CPU ", b"[" * 100_000 + b"]" * 100_000)
    for key, value in (("pc", "x"), ("pc", 2 ** 40), ("pc", -4), ("msr", 1.5), ("gpr", [0] * 31),
                       ("spr", {}), ("sr", None), ("pc", True)):
        yield f"CPU {key} = {value!r}", replace_chunk(good, b"CPU ", json.dumps({**cpu, key: value}).encode())
    yield "CPU pc = Infinity", replace_chunk(good, b"CPU ", json.dumps(cpu).replace(
        f'"pc": {cpu["pc"]}', '"pc": Infinity').encode())
    doc = ablk_state(good)
    ring_values = {"head": [float("inf"), -1, 1 << 40, "0"], "base": [-4096, 1 << 33, 8 << 20],
                   "n_el": [3, -16, 1 << 20], "cur_pos": [-8192, 1 << 62], "cur_unit": [5, -2],
                   "cur_op": [7, -1], "running": ["x", 2], "completed": [-1], "irq": [None]}
    for key, values in ring_values.items():
        for v in values:
            ring = dict(doc["ring"], **{key: v})
            if key == "cur_pos":
                ring.update(cur_op=B.REQ_WRITE, cur_unit=0, running=True, n_el=16)
            text = json.dumps({**doc, "ring": ring}).replace("Infinity", "Infinity")
            yield f"ring {key} = {v!r}", replace_chunk(good, b"ABLK", ablk_bytes(text))
    for key, v in (("overlay", "x"), ("size", -1), ("path", 7), ("unit", 3), ("digest", "zz"),
                   ("inode", 1.5)):
        disks = [dict(doc["disks"][0], **{key: v})]
        yield f"disk marker {key} = {v!r}", replace_chunk(good, b"ABLK", ablk_bytes({**doc, "disks": disks}))
    yield "osi_blk state nested deep", replace_chunk(good, b"ABLK", ablk_bytes('{"ring":' + "[" * 50_000
                                                                               + "]" * 50_000 + "}"))
    yield "console state claiming more keys than it holds", replace_chunk(good, b"CONS", b"\xff\xff\xff\xff")


def test_crafted_device_and_cpu_state_is_refused(saved, capsys):
    """Found: ring registers were loaded unchecked (a guest then wrote at overlay offset
    -8192, its own header), and JSON tricks gave RecursionError, OverflowError, TypeError."""
    tmp, rc, conf, good = saved
    path = Path(conf.session_file)
    tried = 0
    for what, data in crafted_sessions(good):
        path.write_bytes(data)
        for readonly in (True, False):
            with pytest.raises((SessionError, BlockError, ValueError)) as e:
                Machine.from_session(str(path), dataclasses.replace(conf, session_readonly=readonly)).close()
            assert "\n" not in str(e.value), what
        assert path.read_bytes() == data, f"{what}: the refused file was written"
        assert cli_main(["session", "verify", str(path), "-f", str(rc)]) != 0, what
        assert cli_main(["session", "info", str(path)]) in (0, 2), what
        out = capsys.readouterr()
        assert "Traceback" not in out.err, (what, out.err)
        tried += 1
    path.write_bytes(good)
    tally("crafted CPU and device state, checksums resealed: resumed", tried)


@settings(max_examples=count(60, 400), deadline=None, suppress_health_check=list(HealthCheck))
@given(field=st.sampled_from(["base", "n_el", "running", "head", "completed", "irq", "cur_unit", "cur_op",
                              "cur_pos", "last_error"]),
       value=st.one_of(st.integers(-(1 << 70), 1 << 70), st.integers(-3, 70000), st.booleans(), st.none(),
                       st.floats(allow_nan=False), st.text(max_size=4),
                       st.lists(st.integers(0, 3), max_size=2)))
def test_generated_ring_registers_stay_in_bounds(saved, field, value):
    """Any value in any ring register: refused, or loaded within what the machine allows."""
    tmp, rc, conf, good = saved
    doc = ablk_state(good)
    doc["ring"] = dict(doc["ring"], **{field: value})
    data = replace_chunk(good, b"ABLK", ablk_bytes(doc))
    path = tmp / "gen.session"
    path.write_bytes(data)
    try:
        m = Machine.from_session(str(path), conf)
    except (SessionError, BlockError, ValueError) as e:
        assert "\n" not in str(e)
        return
    try:
        ring = next(d for d in m.devices if d.kind == "ABLK").ring
        assert ring.base + ring.n_el * 16 <= m.memory.size and 0 <= ring.head < max(ring.n_el, 1)
        assert ring.cur_pos >= 0 and ring.cur_op in B.OPS
    finally:
        m.close()


@settings(max_examples=count(80, 600), deadline=None, suppress_health_check=list(HealthCheck))
@given(offset=st.one_of(st.integers(-(1 << 40), 1 << 40), st.integers(-8192, 4096), st.sampled_from(
    [-1, -512, -8192, (1 << 20) - 1, 1 << 20, (1 << 20) + 1])), length=st.integers(0, 20000),
    write=st.booleans(), cow=st.booleans())
def test_backends_refuse_offsets_outside_the_disk(tmp_path_factory, offset, length, write, cow):
    """Whoever calls it, a backend never reads or writes outside [0, size): not before the
    disk (an overlay's own header), not past its end."""
    tmp = tmp_path_factory.mktemp("off")
    disk = tmp / "d.img"
    disk.write_bytes(b"\x11" * (1 << 20))
    path = tmp / "o.cow"
    base = RawBackend(str(disk), readonly=cow)
    b = CowBackend(base, Overlay.create(str(path), base.identity())) if cow else base
    head = path.read_bytes()[:4096] if cow else b""
    buf = memoryview(bytearray(b"\x22" * length))
    try:
        (b.write if write else b.readinto)(offset, buf)
        assert 0 <= offset and offset + length <= 1 << 20
    except BlockError:
        assert offset < 0 or offset + length > 1 << 20
    finally:
        b.close()
    assert disk.stat().st_size == 1 << 20
    if cow:
        assert path.read_bytes()[:4096] == head and sha(disk) == sha_of(b"\x11" * (1 << 20))


def sha_of(data: bytes) -> str:
    import hashlib
    return hashlib.sha256(data).hexdigest()


# -- 4. a save never replaces the previous session with one the reader refuses --

def test_a_big_overlay_is_streamed_into_the_session_and_back(tmp_path):
    """Found: an overlay over the reader's chunk limit made F12 save a session that could
    never be resumed, after the previous one was replaced. Overlays are bulk chunks now,
    streamed through a bounded buffer; the long mode writes more than the old 1 GiB limit."""
    held = (1100 << 20) if LONG else (40 << 20)
    disk = tmp_path / "big.img"
    create_image(str(disk), held + (8 << 20))
    (tmp_path / "cow").mkdir()
    conf = MachineConfig(ram_mib=8, blkdevs=[BlkdevSpec(str(disk), readonly=False, cow=True)],
                         cow_dir=str(tmp_path / "cow"), session_file=str(tmp_path / "s.session"))
    m = Machine(conf)
    rng = random.Random(4)
    blocks = {}
    try:
        u = next(d for d in m.devices if d.kind == "ABLK").units[0]
        step = 8 << 20
        for off in range(0, held, step):
            data = rng.randbytes(64) * (step // 64)
            u.backend.write(off, memoryview(data))
            blocks[off] = sha_of(data)
        m.save_session()
    finally:
        m.close()
    s = open_session(conf.session_file)
    try:
        assert max(c.length for c in s.chunks if not c.bulk and c.kind != b"RAM ") < 1 << 20
        assert any(c.bulk and c.length > held for c in s.chunks)
    finally:
        s.close()
    m = Machine.from_session(conf.session_file, dataclasses.replace(conf, session_readonly=True))
    try:
        u = next(d for d in m.devices if d.kind == "ABLK").units[0]
        buf = bytearray(8 << 20)
        for off, digest in blocks.items():
            u.backend.readinto(off, memoryview(buf))
            assert sha_of(buf) == digest, off
    finally:
        m.close()
    tally("a -cow overlay bigger than any in-memory chunk, saved and resumed: lost", 1)


def test_a_save_the_reader_would_refuse_keeps_the_previous_session(tmp_path):
    """A device whose state is over the reader's limit: the save is refused in one line
    and the previous session is untouched."""
    path = tmp_path / "s.session"
    write_session(str(path), memoryview(bytearray(1 << 20)), {"pc": 0}, [], "")
    before = path.read_bytes()
    from molpy.emulation.session import MAX_SMALL_CHUNK
    with pytest.raises(SessionError) as e:
        write_session(str(path), memoryview(bytearray(1 << 20)), {"pc": 0},
                      [("HUGE", 0, bytes(MAX_SMALL_CHUNK + 1))], "")
    assert "\n" not in str(e.value) and path.read_bytes() == before
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".s.session.tmp")]


# -- 5 and 6. tables, kinds of files, truncation under the guest --

def test_overlapping_chunk_tables_allocate_nothing(saved, capsys):
    """Found: 32 table entries pointing at one 256 MiB region made `session info`
    allocate 32 times the length. Chunks may not overlap now, so the reader reads each
    byte once at most."""
    tmp, rc, conf, good = saved
    n = struct.unpack_from(">I", good, 104)[0]
    entries = [list(ENTRY.unpack_from(good, 4096 + 32 * i)) for i in range(n)]
    cpu = next(e for e in entries if e[0] == b"CPU ")
    data = bytearray(good)
    for i, e in enumerate(entries):                # every device entry aims at the CPU chunk
        if e[0] not in (b"RAM ", b"CPU "):
            e[2], e[3], e[4] = cpu[2], cpu[3], cpu[4]
            data[4096 + 32 * i:4096 + 32 * i + 32] = ENTRY.pack(*e)
    path = tmp / "overlap.session"
    path.write_bytes(reseal(data))
    assert cli_main(["session", "info", str(path)]) == 2
    err = capsys.readouterr().err
    assert "out of place" in err, err


@pytest.mark.parametrize("kind", ["FIFO", "directory", "device"])
def test_special_files_as_session_file(tmp_path, kind):
    """Found: a FIFO as session_file blocked in open() for ever; a directory gave
    IsADirectoryError. Both are refused at once, in one line."""
    path = tmp_path / "s.session"
    if kind == "FIFO":
        os.mkfifo(path)
    elif kind == "directory":
        path.mkdir()
    else:
        path = Path("/dev/zero")
    for args in (["session", "info", str(path)], ["session", "verify", str(path)]):
        r = cli(*args, timeout=20)
        assert r.returncode == 2, r
        one_line_error(r.stderr)
    rc = tmp_path / "molrc"
    rc.write_text(f"ram_size: 8\nsession_file: {path}\n")
    r = cli("run", "-f", str(rc), timeout=20)
    assert r.returncode == 2, r
    one_line_error(r.stderr)
    tally("FIFOs, directories and devices where molpy expects a file: hung or traceback", 3)


def test_a_fifo_at_the_overlay_name_is_moved_aside(tmp_path):
    """Found: a FIFO at the overlay's name gave "Illegal seek"."""
    rc, disk = demo_rc(tmp_path)
    fifo = tmp_path / "cow" / overlay_name(str(disk))
    os.mkfifo(fifo)
    r = cli("run", "-f", str(rc), input=b"exit 6\n", timeout=30)
    assert r.returncode == 6, r.stderr
    assert (tmp_path / "cow" / (fifo.name + ".prev")).is_fifo()


def test_session_file_truncated_under_the_running_guest(tmp_path):
    """Found: truncating (or rewriting in place) the session file a guest was resumed
    from killed molpy with SIGBUS and left the terminal raw. A read lease makes the
    writer wait until molpy has moved RAM off the file; the guest runs on."""
    rc, disk, conf = saved_session(tmp_path, ram_mib=16)
    session = conf.session_file
    p = subprocess.Popen([sys.executable, "-m", "molpy", "run", "-f", str(rc)], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        p.stdin.write(b"echo one\n")
        p.stdin.flush()
        line = b""
        while b"one" not in line:
            more = p.stdout.read1(4096)
            assert more, p.stderr.read()
            line += more
        done = threading.Event()
        threading.Thread(target=lambda: (os.truncate(session, 0), done.set()), daemon=True).start()
        assert done.wait(30), "the writer was never let through"
        p.stdin.write(b"echo two\nexit 4\n")
        p.stdin.flush()
        out, err = p.communicate(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 4, (p.returncode, err)
    assert b"two" in out and b"Traceback" not in err
    tally("session file truncated or rewritten under the running guest: crashed", 1)


def test_reset_after_the_session_file_changed_says_so(tmp_path):
    rc, disk, conf = saved_session(tmp_path, ram_mib=8)
    m = Machine.from_session(conf.session_file, dataclasses.replace(conf, session_readonly=True),
                             BufferConsole(b""))
    try:
        writer = subprocess.Popen([sys.executable, "-c", f"open({conf.session_file!r}, 'r+b').close()"])
        while writer.poll() is None:
            m.run(seconds=0.05)
        assert m.memory.detached
        assert m.run(seconds=0.2) is Stop.TIMEOUT
        with pytest.raises(SessionError):
            m.reset()
    finally:
        m.close()


# -- 6. a stop request is seen within long I/O --

def test_a_stop_request_ends_a_long_kick(tmp_path):
    """Found: one KICK of 2,048 big requests delayed SIGTERM by 84 s. The engine looks at
    the request between descriptors and within long transfers."""
    disk = tmp_path / "d.img"
    create_image(str(disk), 64 << 20)
    frontend = BufferConsole()
    m = Machine(MachineConfig(ram_mib=32, blkdevs=[BlkdevSpec(str(disk))]), frontend)
    try:
        blk = next(d for d in m.devices if d.kind == "ABLK")
        ring, n = 0x10000, 256
        assert blk.ring_setup(0, ring, n) == 0 and blk.cntrl(0, B.CNTRL_START, 0) == 0
        view = m.memory.view
        for i in range(1, n):
            word = (B.REQ_READ, 1, 0, 0) if i % 2 else (B.REQ_SG_BUF, 1 if i < n - 1 else 0, 0x100000, 24 << 20)
            view[ring + 16 * i:ring + 16 * i + 16] = struct.pack(">IIII", *word)
        view[ring + 4:ring + 8] = struct.pack(">I", 1)
        frontend.request = "interrupt"
        assert blk.kick(0) == 0
        assert blk.ring.completed < 4
        frontend.request = "save"                 # F12 does not cut I/O short
        assert blk.kick(0) == 0 and blk.ring.completed == n - 1
    finally:
        m.close()


# -- 7. -cow and raw agree byte for byte; the ring's RAM writes drop translations --

shapes = st.lists(st.tuples(st.booleans(), st.integers(0, 16 * 512 - 1),
                            st.lists(st.integers(1, 1500), min_size=1, max_size=4)), min_size=1, max_size=6)


@settings(max_examples=count(60, 400), deadline=None, suppress_health_check=list(HealthCheck))
@given(ops=shapes, sync=st.booleans())
def test_cow_and_raw_agree_on_every_request_shape(tmp_path_factory, ops, sync):
    """Found: a -cow ring READ of data entries of 100 then 924 bytes returned the second
    shifted once the overlay held the sector (raw was right), and such writes got EIO on
    -cow. Both now match a byte model for reads and writes of any shape."""
    tmp = tmp_path_factory.mktemp("shape")
    rng = random.Random(len(ops))
    content = rng.randbytes(64 << 10)
    model = bytearray(content)
    paths = []
    for name in ("raw", "cow"):
        (tmp / f"{name}.img").write_bytes(content)
        paths.append(str(tmp / f"{name}.img"))
    (tmp / "cow").mkdir()
    m = Machine(MachineConfig(ram_mib=2, cow_dir=str(tmp / "cow"), blkdevs=[
        BlkdevSpec(paths[0], readonly=False), BlkdevSpec(paths[1], readonly=False, cow=True)]))
    try:
        blk = next(d for d in m.devices if d.kind == "ABLK")
        view = m.memory.view
        buf = 0x40000
        for write, start, sizes in [(True, 7, [100, 924, 512])] + ops:
            data = rng.randbytes(sum(sizes))
            for unit in (0, 1):
                view[buf:buf + len(data)] = data if write else bytes(len(data))
                if sync:
                    at = start - start % 512
                    r = (blk.sync_write if write else blk.sync_read)(0, unit, at // 512, buf, len(data))
                    pos = at
                else:
                    pos = ring_request(blk, view, write, unit, start - start % 512, buf, sizes)
                    r = 0
                assert r == 0
                if not write:
                    got = bytes(view[buf:buf + len(data)])
                    assert got == bytes(model[pos:pos + len(data)]), (unit, start, sizes)
            if write:
                model[pos:pos + len(data)] = data
        for unit in (0, 1):
            now = bytearray(len(model))
            blk.units[unit].backend.readinto(0, memoryview(now))
            assert now == model, unit
    finally:
        m.close()
    assert Path(paths[1]).read_bytes() == content
    tally("request shapes on -cow and raw against a byte model: differed", 1)


def ring_request(blk, view, write: bool, unit: int, at: int, buf: int, sizes: list[int]) -> int:
    """One request with data entries of ``sizes`` bytes through a fresh ring; its disk offset."""
    ring = 0x10000
    blk.cntrl(0, B.CNTRL_RESET, 0)
    assert blk.ring_setup(0, ring, 16) == 0 and blk.cntrl(0, B.CNTRL_START, 0) == 0
    words = [(B.REQ_WRITE if write else B.REQ_READ, 1, unit, at // 512)]
    pos = buf
    for i, n in enumerate(sizes):
        words.append((B.REQ_SG_BUF, 1 if i < len(sizes) - 1 else 0, pos, n))
        pos += n
    for i, w in enumerate(words, 1):
        view[ring + 16 * i:ring + 16 * i + 16] = struct.pack(">IIII", *w)
    view[ring + 4:ring + 8] = struct.pack(">I", 1)
    assert blk.kick(0) == 0 and blk.ring.running and blk.ring.completed == len(words)
    return at


def test_ring_engine_writes_drop_translated_code(tmp_path):
    """Found: the engine's own RAM writes (START's NOP in slot 0, slots handed back)
    did not drop Unicorn's translations, so a guest ran stale code from there."""
    m = Machine(MachineConfig(ram_mib=2, blkdevs=[]))
    try:
        blk = next(d for d in m.devices if d.kind == "ABLK")
        ring = 0x8000
        li_r20_1, blr = 0x3A800001, 0x4E800020
        m.memory.view[ring:ring + 8] = struct.pack(">II", li_r20_1, blr)
        code = 0x1000
        m.memory.view[code:code + 8] = struct.pack(">II", 0x48000001 | (ring - code) & 0x3FFFFFC, 0x48000000)
        m.cpu.set_reg(20, 0)
        m.cpu.uc.emu_start(code, code + 4)          # runs (and translates) li r20,1 at the ring
        assert m.cpu.reg(20) == 1
        assert blk.ring_setup(0, ring, 16) == 0 and blk.cntrl(0, B.CNTRL_START, 0) == 0
        assert m.memory.view[ring:ring + 4] == struct.pack(">I", B.REQ_NOP)
        m.cpu.set_reg(20, 0)
        m.cpu.pc = code
        m.run(seconds=0.5)                           # bl ring: the word there is no code now
        assert m.cpu.reg(20) == 0 and m.fault is not None
    finally:
        m.close()


# -- 8. one session, several processes --

RACE = """
import os, sys
from molpy.cli import main
import molpy.commands.run, molpy.machine, molpy.emulation.session, molpy.drivers.osi_blk
rc, out = sys.argv[1], sys.argv[2]
kids = []
for i in range(2):
    pid = os.fork()
    if pid == 0:
        fd = os.open(f"{out}.{i}", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os._exit(main(["run", "-f", rc]))
    kids.append(pid)
for pid in kids:
    os.waitpid(pid, 0)
"""


def test_two_runs_of_a_resume_once_session_never_both_resume(tmp_path):
    """Found: two `molpy run` started together both resumed one non-read-only session in
    13 of 20 tries. The session is locked from the check of its used flag on. Both runs
    here are forked from one process that already imported molpy, so they reach the
    session within microseconds of each other."""
    rc, disk, conf = saved_session(tmp_path, ram_mib=8)
    rc.write_text(rc.read_text().replace("session_readonly: yes", "session_readonly: no"))
    good = Path(conf.session_file).read_bytes()
    tries = count(20, 60)
    out = tmp_path / "out"
    for _ in range(tries):
        Path(conf.session_file).write_bytes(good)
        subprocess.run([sys.executable, "-c", RACE, str(rc), str(out)], stdin=subprocess.DEVNULL, timeout=60,
                       check=True)
        texts = [Path(f"{out}.{i}").read_text() for i in range(2)]
        assert sum("resumed session" in t for t in texts) <= 1, texts
        assert all("Traceback" not in t for t in texts), texts
    tally("two molpy runs of one resume-once session at once: both resumed", tries)


def test_a_read_only_session_runs_in_many_processes_at_once(tmp_path):
    """The recipe's point: a read-only session with -cow disks resumes in any number of
    processes side by side, each with its own overlay (named in a note)."""
    rc, disk, conf = saved_session(tmp_path, ram_mib=8)
    base = sha(disk)
    n = 4
    procs = [subprocess.Popen([sys.executable, "-m", "molpy", "run", "-f", str(rc)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(n)]
    for i, p in enumerate(procs):
        p.stdin.write(f"write 0 100 instance{i}\n".encode())
        p.stdin.flush()
    # every guest has written (its overlay is open) before any of them is told to exit
    seen = [read_until(p, b"wrote sector 100 of disk 0") for p in procs]
    outs = [p.communicate(b"exit 3\n", timeout=60) for p in procs]
    outs = [(before + out, err) for before, (out, err) in zip(seen, outs)]
    assert [p.returncode for p in procs] == [3] * n, outs
    notes = [err for _, err in outs if b"this run's changes go to" in err]
    assert len(notes) >= n - 1, outs
    assert sha(disk) == base
    overlays = sorted(p.name for p in (tmp_path / "cow").iterdir() if p.name.endswith(".cow"))
    assert len(overlays) == n, overlays
    # only the save's own overlay went aside: no instance's new overlay was renamed under it
    prevs = [p.name for p in (tmp_path / "cow").iterdir() if p.name.endswith(".prev")]
    assert prevs == [overlay_name(str(disk)) + ".prev"], prevs
    tally("one read-only session resumed in 4 processes at once: refused or mixed up", 1)
