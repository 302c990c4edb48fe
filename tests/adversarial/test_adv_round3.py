"""Hostile inputs, round 3 (issue 18): a disk changed under molpy, molpy's own files aimed at
disks, symlinks in its data folder, a shared NVRAM image, crafted device trees, guest loops."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import tally
from kit import demo_rc, saved_session
from molpy.config import load_config
from molpy.console import BufferConsole
from molpy.drivers import digest_cache
from molpy.drivers import digests as D
from molpy.drivers.device import StateMismatch
from molpy.drivers.digests import DiskDigests
from molpy.machine import Machine, MachineConfig, Stop


def cli(*args: str, input: bytes = b"", timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "molpy", *args], input=input, capture_output=True,
                          timeout=timeout)


def scribble(disk: Path, offset: int = 1 << 20, data: bytes = b"another program was here") -> None:
    """Another program writes the disk in place (same size, same inode, new contents)."""
    with open(disk, "r+b") as f:
        f.seek(offset)
        f.write(data)
    st = os.stat(disk)                     # mtime moves on even on a coarse clock
    os.utime(disk, ns=(st.st_atime_ns, st.st_mtime_ns + 10_000_000))


def blk_of(m: Machine):
    return next(d for d in m.devices if type(d).__name__ == "OsiBlk")


def settled(d: DiskDigests, timeout: float = 30) -> None:
    """Wait (on the condition) until the background thread knows every region."""
    with d._lock:                          # the thread notifies it when its last region is done
        assert d._lock.wait_for(lambda: d.known and d.stale.find(1) < 0 and not d._inflight, timeout), \
            "digests never settled"


# -- 1. a disk changed while molpy has it open --

def test_a_disk_changed_while_resumed_is_not_cached_with_its_old_digest(tmp_path):
    """The issue's case: touched, resumed (digests from the cache, checked), changed by another
    program while open, closed; the next resume must see the change, not trust the cache."""
    rc, disk, conf = saved_session(tmp_path)
    st = os.stat(disk)
    os.utime(disk, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000))   # touched: a content check
    m = Machine.from_session(conf.session_file, conf, BufferConsole(b""))
    try:
        assert m.run(seconds=0.2) is Stop.TIMEOUT
        scribble(disk)
    finally:
        m.close()
    with pytest.raises(StateMismatch, match="contents differ"):
        Machine.from_session(conf.session_file, conf, BufferConsole(b"")).close()


def test_f12_after_another_program_changed_the_disk_records_what_it_verified(tmp_path):
    """The digests followed a -cow base from the start; the base changes; the save must digest
    what the base holds now, so that the session verifies (deep) and resumes."""
    rc, disk = demo_rc(tmp_path, session=True)
    conf = dataclasses.replace(MachineConfig.from_config(load_config(rc)), session_readonly=False)
    m = Machine(conf, BufferConsole(b""))
    try:
        m.boot()
        assert m.run(seconds=0.5) is Stop.TIMEOUT
        settled(blk_of(m).units[0].digests)
        scribble(disk)
        m.save_session()
    finally:
        m.close()
    r = cli("session", "verify", "--deep", "-f", str(rc), str(conf.session_file))
    assert r.returncode == 0, r.stderr.decode()
    Machine.from_session(conf.session_file, dataclasses.replace(conf, session_readonly=True),
                         BufferConsole(b"")).close()


def _disk(tmp_path: Path, mib: int = 4) -> Path:
    p = tmp_path / "d.img"
    with open(p, "wb") as f:
        for i in range(mib):
            f.write(bytes([i + 1]) * (1 << 20))
    return p


def _true_root(path: Path) -> str:
    fd = os.open(path, os.O_RDONLY)
    try:
        d = DiskDigests(fd, os.fstat(fd).st_size, str(path))
        return d.compute("x")
    finally:
        os.close(fd)


@pytest.mark.parametrize("moment", ["after load", "after follow", "after a finish", "between own writes"])
def test_every_digest_after_a_foreign_change_is_of_the_disk_as_it_is(tmp_path, moment):
    """The class: wherever another program's change falls (after the cache was read, while the
    background thread follows, after a finish, between molpy's own writes), the next finish
    gives the disk's true digest and the cache never pairs the new identity with old digests."""
    home = tmp_path / "home"
    home.mkdir()
    path = _disk(tmp_path)
    fd = os.open(path, os.O_RDWR)
    try:
        size = os.fstat(fd).st_size
        first = DiskDigests(fd, size, str(path))
        first.finish()
        assert first.save_cache(str(home))
        d = DiskDigests(fd, size, str(path))
        assert d.load_cache(str(home))
        if moment == "after follow":
            d.start_background()
            settled(d)
        elif moment == "after a finish":
            d.finish()
        elif moment == "between own writes":
            d.before_write()
            os.pwrite(fd, b"molpy", 0)
            d.mark(0, 5)
        scribble(path)
        if moment == "between own writes":
            d.before_write()
            os.pwrite(fd, b"molpy again", 100)
            d.mark(100, 11)
        assert d.finish() == _true_root(path)
        d.close()
        assert d.save_cache(str(home))
        again = DiskDigests(fd, size, str(path))
        assert again.load_cache(str(home)) and again.finish() == _true_root(path)
        # changed after the last finish: closing must not cache the new identity
        scribble(path, 3 << 20)
        assert not again.save_cache(str(home))
        fresh = DiskDigests(fd, size, str(path))
        assert not fresh.load_cache(str(home))
    finally:
        os.close(fd)
    tally("digests after a foreign change", 1)


def test_a_disk_changed_while_it_is_read_fails_the_digest(tmp_path, monkeypatch):
    """Identity read again after hashing: a change during the pass is an error, not a digest."""
    path = _disk(tmp_path)
    fd = os.open(path, os.O_RDWR)
    real = D._read_exactly
    done = []

    def read_and_change(f, view, off):
        real(f, view, off)
        if not done:
            done.append(1)
            scribble(path, 2 << 20)
    monkeypatch.setattr(D, "_read_exactly", read_and_change)
    try:
        d = DiskDigests(fd, os.fstat(fd).st_size, str(path))
        with pytest.raises(D.DigestError, match="changed while molpy read it"):
            d.finish(workers=1)
        monkeypatch.setattr(D, "_read_exactly", real)
        assert d.finish() == _true_root(path)
    finally:
        os.close(fd)


# -- 2. files molpy writes aimed at the run's disks, overlays or session --

def _sha(path: Path) -> str:
    import hashlib
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _one_line(r: subprocess.CompletedProcess) -> str:
    err = r.stderr.decode()
    assert "Traceback" not in err, err
    return err


TARGETS = ["disk", "hard link to the disk", "-cow base", "session file"]
WRITERS = ["nvram", "log", "session_file"]


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("writer", WRITERS)
@pytest.mark.parametrize("how", ["--check", "run"])
def test_no_file_molpy_writes_may_be_a_disk_or_the_session(tmp_path, writer, target, how):
    """Every writer (nvram, --log, session_file) against every file of the run, by device
    and inode: refused at --check and at run in one line, the target unchanged."""
    if writer == "session_file" and target == "session file":
        pytest.skip("the session file is the session file")
    flags = "-rw -cow -boot" if target == "-cow base" else "-rw -boot"
    rc, disk = demo_rc(tmp_path, disk_flags=flags)
    session = tmp_path / "s.session"
    if target == "session file":
        session.write_bytes(b"MOLPY not really a session")
        aim = session
    elif target == "hard link to the disk":
        aim = tmp_path / "another-name.img"
        os.link(disk, aim)
    else:
        aim = disk
    sets = ["-s", f"session_file={session}", "-s", "session_readonly=no"] if writer != "session_file" \
        else ["-s", "session_readonly=no"]
    if writer == "nvram":
        sets += ["-s", f"nvram={aim}"]
    elif writer == "session_file":
        sets += ["-s", f"session_file={aim}"]
    log = ["--log", str(aim)] if writer == "log" else ["--log", str(tmp_path / "guest.log")]
    before = _sha(aim)
    args = ["run", "-f", str(rc), *sets, *log] + (["--check"] if how == "--check" else ["--fresh"])
    r = cli(*args, input=b"exit 0\n")
    err = _one_line(r)
    assert r.returncode != 0, err
    assert "would write" in err and "over it" in err, err
    assert _sha(aim) == before
    tally("molpy's output files aimed at the run's files", 1)


def test_the_nvram_is_never_written_over_an_open_disk_by_the_api(tmp_path):
    """At write time too (no preflight: the Python API), by the open files' device and inode."""
    rc, disk = demo_rc(tmp_path, disk_flags="-rw -cow -boot")
    other = tmp_path / "nv-link"
    os.link(disk, other)
    conf = dataclasses.replace(MachineConfig.from_config(load_config(rc)), nvram=str(other))
    before = _sha(disk)
    from molpy.drivers.block import BlockError
    from molpy.drivers.nvram import NvramError
    try:                    # refused at the start (the image's lock meets the disk's) ...
        m = Machine(conf, BufferConsole(b""))
    except (NvramError, BlockError) as e:
        assert "in use" in str(e) or "over it" in str(e)
    else:                   # ... or at the write
        nv = next(d for d in m.devices if type(d).__name__ == "Nvram")
        try:
            nv.write_byte(0x100, 0x5A)
            with pytest.raises(NvramError, match="does not write its NVRAM over it"):
                nv.write_back()
        finally:
            m.close()
    assert _sha(disk) == before


# -- 10. --check applies the run's rules to the nvram image --

@pytest.mark.parametrize("image", ["/proc/self/mem", "fifo", "link", "folder"])
def test_check_refuses_an_nvram_image_the_run_cannot_use(tmp_path, image):
    rc, disk = demo_rc(tmp_path)
    if image == "fifo":
        path = tmp_path / "nv.fifo"
        os.mkfifo(path)
    elif image == "link":
        path = tmp_path / "nv.link"
        (tmp_path / "real").write_bytes(bytes(8192))
        os.symlink(tmp_path / "real", path)
    elif image == "folder":
        path = tmp_path / "nvdir"
        path.mkdir()
    else:
        path = Path(image)
    r = cli("run", "--check", "-f", str(rc), "-s", f"nvram={path}")
    err = _one_line(r)
    assert r.returncode != 0 and "nvram" in err and str(path) in err and err.count("\n") == 1, err
    tally("nvram images --check refuses", 1)


# -- 3. molpy's data folder: no symbolic link followed, 0700, prune removes only its own --

def _user_files(folder: Path, n: int = 70) -> dict[str, bytes]:
    made = {}
    for i in range(n):
        name = f"{i:x}-{i + 1:x}.digest" if i % 2 else f"holiday-{i}.digest"
        data = f"the user's file {i}".encode()
        (folder / name).write_bytes(data)
        made[name] = data
    return made


def _cache_many(home: Path, tmp: Path, n: int) -> None:
    for i in range(n):
        p = tmp / f"disk{i}.img"
        p.write_bytes(bytes([i % 251 + 1]) * 4096)
        fd = os.open(p, os.O_RDONLY)
        try:
            d = DiskDigests(fd, 4096, str(p))
            d.finish()
            d.save_cache(str(home))
        finally:
            os.close(fd)


def test_a_symlink_planted_at_the_digest_folder_is_not_followed(tmp_path):
    """The issue's case: molpy wrote its cache into the link's target and pruned 7 of the
    user's 70 files there."""
    home, theirs = tmp_path / "home", tmp_path / "theirs"
    home.mkdir()
    theirs.mkdir()
    made = _user_files(theirs)
    os.symlink(theirs, home / "digests")
    _cache_many(home, tmp_path, 70)
    assert {p.name: p.read_bytes() for p in theirs.iterdir()} == made
    tally("digest cache writes through a planted link", 70)


def test_prune_removes_only_files_molpy_made(tmp_path):
    """The class: the user's files in molpy's own cache folder (names like molpy's, other
    contents) survive any number of cache writes; molpy keeps at most MAX_CACHED of its own."""
    home = tmp_path / "home"
    home.mkdir()
    (home / "digests").mkdir(mode=0o700)
    made = _user_files(home / "digests")
    _cache_many(home, tmp_path, digest_cache.MAX_CACHED + 6)
    names = {p.name for p in (home / "digests").iterdir()}
    assert set(made) <= names
    assert len(names - set(made)) == digest_cache.MAX_CACHED
    for name in made:
        assert (home / "digests" / name).read_bytes() == made[name]


@pytest.mark.parametrize("planted", ["link to a folder", "file", "dangling link"])
def test_molpys_folders_refuse_what_is_planted_at_their_names(tmp_path, planted, monkeypatch):
    """$MOLPY_HOME and its digests folder: created 0700, a link or a file there refused in
    one line (the CLI), never followed."""
    from molpy.files import HostFileError, data_dir, own_folder
    home = tmp_path / "home"
    monkeypatch.setenv("MOLPY_HOME", str(home))
    assert data_dir() == str(home) and (home.stat().st_mode & 0o777) == 0o700
    assert (Path(own_folder(str(home), "digests")).stat().st_mode & 0o777) == 0o700
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for where in (home / "sub", tmp_path / "home2"):
        if planted == "link to a folder":
            os.symlink(elsewhere, where)
        elif planted == "file":
            where.write_bytes(b"x")
        else:
            os.symlink(tmp_path / "nowhere", where)
    with pytest.raises(HostFileError, match="molpy"):
        own_folder(str(home), "sub")
    r = subprocess.run([sys.executable, "-m", "molpy", "run", "--check"], capture_output=True,
                       env={**os.environ, "MOLPY_HOME": str(tmp_path / "home2")}, cwd=tmp_path)
    err = r.stderr.decode()
    assert r.returncode != 0 and "Traceback" not in err and "home2" in err and err.count("\n") == 1, err
    assert ("is a regular file" if planted == "file" else "is a symbolic link") in err, err
    assert list(elsewhere.iterdir()) == []
    tally("things planted at molpy's folders", 2)


# -- 4. one NVRAM image, two runs --

HOLDER = r"""
import sys
from molpy.console import BufferConsole
from molpy.drivers.device import DeviceError
from molpy.machine import Machine, MachineConfig
try:
    m = Machine(MachineConfig(ram_mib=16, nvram=sys.argv[1]), BufferConsole(b""))
except DeviceError as e:
    print(e, file=sys.stderr)
    sys.exit(1)
nv = next(d for d in m.devices if type(d).__name__ == "Nvram")
nv.write_byte(int(sys.argv[2]), 0xA5)
print("ready", flush=True)
sys.stdin.readline()
m.close()
"""


def test_a_second_run_on_one_nvram_image_is_refused_naming_the_holder(tmp_path):
    """The issue's case in two processes: the second used to exit last and overwrite the
    first one's change; now it is refused, and the first one's change is kept."""
    image = tmp_path / "nvram.img"
    image.write_bytes(bytes(8192))
    a = subprocess.Popen([sys.executable, "-c", HOLDER, str(image), "16"], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert a.stdout.readline() == b"ready\n"
        b = subprocess.run([sys.executable, "-c", HOLDER, str(image), "32"], input=b"\n",
                           capture_output=True, timeout=60)
        assert b.returncode == 1 and b"in use by another molpy (pid %d)" % a.pid in b.stderr, b.stderr
        a.stdin.write(b"\n")
        a.stdin.flush()
        assert a.wait(60) == 0, a.stderr.read()
    finally:
        a.kill()
        a.wait()
    data = image.read_bytes()
    assert data[16] == 0xA5 and data[32] == 0


@pytest.mark.parametrize("start", ["missing", "short", "full"])
def test_the_nvram_lock_never_lapses(tmp_path, start):
    """The class: whatever the image was at start (the run rewrites a missing or short one at
    once, by rename), a second machine is refused while the first lives, and after the first
    exits the next one gets its NVRAM."""
    from molpy.drivers.nvram import NvramError
    image = tmp_path / "nvram.img"
    if start != "missing":
        image.write_bytes(bytes(100 if start == "short" else 8192))
    conf = MachineConfig(ram_mib=16, nvram=str(image))
    first = Machine(conf, BufferConsole(b""))
    try:
        nv = next(d for d in first.devices if type(d).__name__ == "Nvram")
        nv.write_byte(7, 0x42)
        with pytest.raises(NvramError, match="in use by another molpy"):
            Machine(conf, BufferConsole(b""))
    finally:
        first.close()
    second = Machine(conf, BufferConsole(b""))
    try:
        nv = next(d for d in second.devices if type(d).__name__ == "Nvram")
        assert nv.read_byte(7) == 0x42
    finally:
        second.close()
    tally("NVRAM images shared by two machines", 1)


# -- 5. saved device trees: every check linear --

from molpy.drivers import oftree as T   # noqa: E402
from molpy.drivers import oftree_file, oftree_state as S   # noqa: E402

TREE_TEXT = '{\n(property name <str> "device-tree" )\n{\n(property name <str> "memory" )\n}\n}\n'


def _shape(shape: str, n: int) -> T.DeviceTree:
    """A tree of ``n`` nodes: a parent chain (each node the only child of the one before), a
    star (every node a child of the root), or one long sibling chain under one node."""
    tree = T.DeviceTree()
    nodes = [T.Node(i + 1) for i in range(n)]
    tree.allnext = nodes
    tree.root = nodes[0]
    for i in range(1, n):
        if shape == "chain":
            nodes[i].parent = nodes[i - 1]
            nodes[i - 1].child = nodes[i]
        else:
            nodes[i].parent = nodes[0]
            if i + 1 < n:
                nodes[i].sibling = nodes[i + 1]
    if shape != "chain" and n > 1:
        nodes[0].child = nodes[1]
    return tree


GUARD = r"""
import sys, time
from molpy.drivers import oftree_state as S
sys.path[:0] = [sys.argv[1], sys.argv[1] + "/.."]
from test_adv_round3 import _shape
tree = _shape(sys.argv[2], int(sys.argv[3]))
for blob, load in ((S.to_json(tree), S.from_json), (S.to_bytes(tree), S.from_bytes)):
    again = load(blob)
    assert len(again.allnext) == len(tree.allnext)
    again.delete_node(again.allnext[1])
    assert len(again.allnext) == (1 if sys.argv[2] == "chain" else len(tree.allnext) - 1), len(again.allnext)
print("ok")
"""


@pytest.mark.parametrize("shape", ["chain", "star"])
def test_saved_trees_of_every_shape_load_and_delete_in_linear_time(shape):
    """The issue's case (a 16,000-deep parent chain took 14 s to load: at 65,536 nodes,
    minutes) and its class: both saved forms, chain and star, at the node limit, loaded and
    a subtree deleted (once recursive: a RecursionError on a deep chain). The bound is a
    hang guard (old code: minutes), not a speed assert."""
    r = subprocess.run([sys.executable, "-c", GUARD, str(Path(__file__).parent), shape, str(T.MAX_NODES)],
                       capture_output=True, timeout=120)
    assert r.returncode == 0 and r.stdout == b"ok\n", r.stderr.decode()[-2000:]
    tally("saved trees at the node limit (2 forms)", 1)


@pytest.mark.parametrize("damage", ["loop", "two parents", "outside"])
def test_damaged_saved_trees_are_refused_in_both_forms(damage):
    tree = _shape("chain", 50)
    nodes = tree.allnext
    if damage == "loop":
        nodes[10].parent = nodes[20]
    elif damage == "two parents":
        nodes[5].sibling = nodes[30]
    elif damage == "outside":
        nodes[40].child = None
    blobs = [S.to_json(tree), S.to_bytes(tree)]
    if damage == "bad ref":
        blobs = [blobs[0].replace(b"[2,null,1,", b"[2,null,99,"), blobs[1][:-3] + b"\x00\x00\x07"]
    for blob, load in zip(blobs, (S.from_json, S.from_bytes)):
        with pytest.raises(T.TreeError):
            load(blob)


# -- 6. what a guest or a file may build, a save can store --

@pytest.mark.parametrize("how", ["4 KiB set-props", "nodes with long units"])   # (small props: quadratic, issue 18 left)
def test_a_tree_grown_to_its_limit_always_saves_and_loads(how):
    """Grown until the tree refuses, by each route a guest has: the saved form fits the
    session's device-state chunk and loads back equal."""
    from molpy.emulation.session import MAX_SMALL_CHUNK
    tree = oftree_file.parse_tree(TREE_TEXT.encode())
    root = tree.root
    i = 0
    try:
        while True:
            i += 1
            if how == "4 KiB set-props":
                tree.set_property(root, b"p%d" % i, bytes(4096))
            elif how == "small props":
                tree.set_property(root.child, b"%d" % i, b"")
            else:
                tree.add_node(root, b"n@" + b"u" * 4000 + b"%d" % i)
    except T.TreeError:
        pass
    blob = S.to_bytes(tree)
    assert len(blob) == tree.size + T.HEAD.size <= MAX_SMALL_CHUNK
    assert len(blob) > MAX_SMALL_CHUNK - (8 << 10)          # grown to the limit, not short of it
    again = S.from_bytes(blob)
    assert S.to_bytes(again) == blob
    tally("device trees grown to the limit, saved and loaded", 1)


def test_f12_saves_a_tree_a_guest_grew_past_8_mib(tmp_path):
    """The issue's case: past about 8 MiB of properties the hex-JSON chunk could never be saved."""
    from test_device_state import full_config
    conf = full_config(tmp_path)
    m = Machine(conf, BufferConsole(b""))
    try:
        dt = next(d for d in m.devices if d.kind == "OFTR")
        for i in range(2100):
            dt.tree.set_property(dt.tree.root, b"big%d" % i, bytes([i & 0xFF]) * 4096)
        dt._dirty = True
        m.save_session()
    finally:
        m.close()
    m = Machine.from_session(conf.session_file, dataclasses.replace(conf, session_readonly=True),
                             BufferConsole(b""))
    try:
        dt = next(d for d in m.devices if d.kind == "OFTR")
        assert dt.tree.root.prop(b"big2099") == bytes([2099 & 0xFF]) * 4096
    finally:
        m.close()
