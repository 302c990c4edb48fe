"""Sessions: save, resume (read-only any number of times, else once), reset, refusals."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import random
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from molpy.boot import bundled_guest
from molpy.config import load_config
from molpy.console import BufferConsole
from molpy.drivers.demo_disk import make_demo_disk
from molpy.emulation.session import SessionError, open_session
from molpy.machine import Machine, MachineConfig, Stop
from molpy.timebase import TB_FREQ
from test_terminal import Pty

F12 = b"\x1b[24~"


def digest(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def molrc(tmp_path: Path, *, readonly: bool, cow: bool, extra: str = "") -> Path:
    disk = tmp_path / "disk.img"
    if not disk.exists():
        make_demo_disk(disk, 4 << 20)
    rc = tmp_path / "molrc"
    (tmp_path / "cow").mkdir(exist_ok=True)       # molpy creates no cow_dir a molrc names
    rc.write_text(f"ram_size: 32\nsession_file: {tmp_path / 's.session'}\n"
                  f"session_readonly: {'yes' if readonly else 'no'}\ncow_dir: {tmp_path / 'cow'}\n"
                  f"blkdev: {disk} -rw{' -cow' if cow else ''} -boot\n{extra}")
    return rc


def machine_config(rc: Path) -> MachineConfig:
    return MachineConfig.from_config(load_config(rc))


def saved_at_prompt(rc: Path, keys: bytes = b"") -> Path:
    """Boot the demo guest from ``rc``, type ``keys``, save at the prompt."""
    conf = dataclasses.replace(machine_config(rc), session_readonly=False)   # the first step
    m = Machine(conf, BufferConsole(keys))
    try:
        m.boot()
        assert m.run(seconds=1) is Stop.TIMEOUT
        m.save_session()
    finally:
        m.close()
    return Path(conf.session_file)


def test_the_recipe_on_a_terminal(tmp_path):
    """MOL's recipe: save with F12, go read-only + -cow, resume three times."""
    rc = molrc(tmp_path, readonly=False, cow=False)
    t = Pty("run", "-f", str(rc))
    try:
        t.read_until(b"boot count: 1")
        t.read_until(b"molpy> ")
        t.send(F12)
        t.read_until(b"session saved to")
        assert t.wait() == 0 and t.restored()
    finally:
        t.close()
    session = tmp_path / "s.session"
    rc = molrc(tmp_path, readonly=True, cow=True)
    disk_digest, session_digest = digest(tmp_path / "disk.img"), digest(session)
    for _ in range(3):
        t = Pty("run", "-f", str(rc))
        try:
            t.read_until(b"resumed session " + str(session).encode())
            t.send(b"count\r")
            t.read_until(b"boot count: 1\r\n")
            t.send(b"write 0 1 scribble\r")        # lands in the overlay
            t.read_until(b"wrote sector 1")
            t.send(b"exit 9\r")
            assert t.wait() == 9 and t.restored()
            assert b"boot count: 2" not in t.output
        finally:
            t.close()
        assert digest(tmp_path / "disk.img") == disk_digest
        assert digest(session) == session_digest


def test_registers_survive_save_and_a_new_process(tmp_path):
    path = tmp_path / "regs.session"
    conf = MachineConfig(ram_mib=16, bootfile=str(bundled_guest("regs")), boot_args="set",
                         session_file=str(path))
    m = Machine(conf)
    try:
        m.boot()
        assert m.run(seconds=0.3) is Stop.TIMEOUT
        expect = m.get_state().as_dict()
        expect_at = time.monotonic()
        m.save_session()
        saved_at = time.monotonic()
    finally:
        m.close()
    script = textwrap.dedent(f"""
        import json, sys, time
        started = time.monotonic()
        from molpy.machine import Machine, Stop
        m = Machine.from_session({str(path)!r})
        before = m.get_state().as_dict()
        before_at = time.monotonic()
        assert m.run(seconds=0.2) is Stop.TIMEOUT     # still spinning at the same place
        after = m.get_state().as_dict()
        print(json.dumps([before, after, started, before_at]))
    """)
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    import json
    before, after, started, before_at = json.loads(r.stdout)

    def timeless(d: dict) -> dict:
        return {**d, "spr": {k: v for k, v in d["spr"].items() if k not in ("TBL", "TBU", "DEC")}}

    def tb(d: dict) -> int:
        return d["spr"]["TBU"] << 32 | d["spr"]["TBL"]

    assert timeless(before) == timeless(expect) and timeless(after) == timeless(expect)
    # Guest time stood still between the save and the resume in the other process:
    # the time base advanced by at most the time the guest existed on either side.
    lived = (before_at - expect_at) - (started - saved_at)
    advanced = tb(before) - tb(expect)
    assert 0 <= advanced <= (lived + 0.005) * TB_FREQ
    assert (expect["spr"]["DEC"] - before["spr"]["DEC"]) & 0xFFFFFFFF == pytest.approx(advanced, abs=2)
    assert tb(after) - tb(before) >= 0.2 * TB_FREQ                  # and it goes on counting


def test_reset_gives_the_same_output_every_time(tmp_path):
    rc = molrc(tmp_path, readonly=True, cow=True)
    path = saved_at_prompt(rc)
    disk_digest = digest(tmp_path / "disk.img")
    m = Machine.from_session(str(path), machine_config(rc), BufferConsole())
    outputs = set()
    try:
        for i in range(20):
            m.reset()
            m.frontend.output.clear()
            m.frontend.feed(b"read 0 9\nwrite 0 9 run-" + str(i).encode() + b"\ncount\nexit 4\n")
            assert m.run(seconds=10) is Stop.EXIT and m.exit_code == 4
            out = bytes(m.frontend.output).decode()
            assert "run-" not in out.split("write")[0]           # the previous run's write is gone
            outputs.add(re.sub(r"run-\d+", "run-N", out))
    finally:
        m.close()
    assert len(outputs) == 1
    assert digest(tmp_path / "disk.img") == disk_digest


def _cli_run(cli, rc: Path, keys: bytes = b"exit 6\n"):
    return cli("run", "-f", str(rc), input=keys)


def test_non_readonly_session_resumes_once(tmp_path, cli):
    rc = molrc(tmp_path, readonly=False, cow=False)
    saved_at_prompt(rc)
    r = _cli_run(cli, rc)
    assert r.returncode == 6 and b"molpy: resumed session" in r.stdout and b"boot count" not in r.stdout
    r = _cli_run(cli, rc)
    assert r.returncode == 6
    assert b"was already resumed once" in r.stdout and b"boot count: 2" in r.stdout
    r = cli("run", "--fresh", "-f", str(rc), input=b"exit 6\n")
    assert b"resumed" not in r.stdout and b"boot count: 3" in r.stdout


def _mutants(data: bytes):
    """Truncations at chunk boundaries and inside chunks, flipped bytes, a wrong version."""
    import struct
    yield "empty", b""
    yield "header only", data[:4096]
    yield "half a table", data[:4096 + 40]
    yield "no RAM", data[:8192]
    yield "RAM cut short", data[:len(data) - 4096]
    yield "not a session", b"hello world" * 1000
    flipped = bytearray(data)
    flipped[30] ^= 0x55
    yield "header byte flipped", bytes(flipped)
    table = bytearray(data)
    table[4096 + 10] ^= 0x01
    yield "chunk table flipped", bytes(table)
    cpu = bytearray(data)
    cpu_off = struct.unpack_from(">Q", data, 4096 + 8)[0]
    cpu[cpu_off + 5] ^= 0x20
    yield "CPU chunk flipped", bytes(cpu)
    version = bytearray(data)
    version[8:12] = (99).to_bytes(4, "big")
    yield "version 99", bytes(version)


def test_damaged_sessions_are_refused_and_left_alone(tmp_path, cli):
    rc = molrc(tmp_path, readonly=True, cow=True)
    path = saved_at_prompt(rc)
    good = path.read_bytes()
    for name, data in _mutants(good):
        path.write_bytes(data)
        r = _cli_run(cli, rc)
        err = r.stderr.decode()
        assert r.returncode == 2, (name, err)
        assert "Traceback" not in err and err.count("\n") == 1, (name, err)
        assert "--fresh" in err, (name, err)
        assert path.read_bytes() == data, name
    path.write_bytes(good)
    assert _cli_run(cli, rc).returncode == 6
    (tmp_path / "v").write_bytes(bytes(_mutants(good).__next__()[1]))
    r = cli("session", "info", str(tmp_path / "v"))
    assert r.returncode == 2 and b"not a molpy session" in r.stderr


def test_changed_disk_is_refused(tmp_path, cli):
    rc = molrc(tmp_path, readonly=True, cow=True)
    saved_at_prompt(rc)
    disk = tmp_path / "disk.img"
    with open(disk, "r+b") as f:
        f.seek(5000)
        f.write(b"changed")
    r = _cli_run(cli, rc)
    err = r.stderr.decode()
    assert r.returncode == 2 and f"disk {disk} changed" in err and "--fresh" in err
    assert "modified" in err


def test_verify_and_deep_verify(tmp_path, cli):
    rc = molrc(tmp_path, readonly=True, cow=True)
    path = saved_at_prompt(rc)
    r = cli("session", "verify", str(path), "-f", str(rc), "--deep")
    assert r.returncode == 0, r.stdout + r.stderr
    r = cli("session", "info", str(path))
    assert r.returncode == 0 and b"RAM:      32 MiB" in r.stdout and b"disk.img" in r.stdout
    disk = tmp_path / "disk.img"
    st = disk.stat()
    with open(disk, "r+b") as f:                    # same size and date, other contents
        f.seek(9000)
        f.write(b"sneaky")
    os.utime(disk, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert cli("session", "verify", str(path), "-f", str(rc)).returncode == 0
    r = cli("session", "verify", str(path), "-f", str(rc), "--deep")
    assert r.returncode == 1 and b"contents changed" in r.stdout


def test_cow_changes_at_save_time_come_back_on_every_resume(tmp_path, cli):
    rc = molrc(tmp_path, readonly=True, cow=True)
    saved_at_prompt(rc, b"write 0 9 in-the-overlay\n")
    disk_digest = digest(tmp_path / "disk.img")
    for _ in range(2):
        r = _cli_run(cli, rc, b"read 0 9\nwrite 0 9 later\nexit 6\n")
        assert r.returncode == 6
        assert b"in-the-overlay" in r.stdout.split(b"read 0 9")[1]
        assert digest(tmp_path / "disk.img") == disk_digest


def test_save_killed_leaves_the_previous_session(tmp_path):
    rc = molrc(tmp_path, readonly=True, cow=True)
    path = saved_at_prompt(rc)
    script = textwrap.dedent(f"""
        import sys
        from molpy.config import load_config
        from molpy.console import BufferConsole
        from molpy.machine import Machine, MachineConfig
        conf = MachineConfig.from_config(load_config({str(rc)!r}))
        m = Machine.from_session({str(path)!r}, conf, BufferConsole(b"spin 1\\n"))
        m.run(seconds=0.1)
        m.memory.view[0x1000000:0x1800000] = b"x" * 0x800000   # lots of RAM to write
        print("saving", flush=True)
        while True:
            m.save_session({str(path)!r})
    """)
    rng = random.Random(3)
    for _ in range(5):
        proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)
        assert proc.stdout.readline() == b"saving\n"
        time.sleep(rng.uniform(0, 0.3))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        s = open_session(str(path))
        s.close()
        m = Machine.from_session(str(path), machine_config(rc), BufferConsole(b"exit 2\n"))
        try:
            assert m.run(seconds=10) is Stop.EXIT and m.exit_code == 2
        finally:
            m.close()
    leftovers = [p for p in tmp_path.iterdir() if ".tmp." in p.name]
    assert len(leftovers) <= 5       # killed saves may leave their temporary file, never a bad session


def test_readonly_session_cannot_be_saved_over(tmp_path):
    rc = molrc(tmp_path, readonly=True, cow=True)
    path = saved_at_prompt(rc)
    before = digest(path)
    m = Machine.from_session(str(path), machine_config(rc))
    try:
        with pytest.raises(SessionError, match="read-only"):
            m.save_session()
    finally:
        m.close()
    assert digest(path) == before


def test_default_config_save_then_resume(tmp_path, molpy_home):
    t = Pty("run", cwd=tmp_path)
    try:
        t.read_until(b"molpy> ")
        t.send(F12)
        t.read_until(b"session saved to")
        assert t.wait() == 0
    finally:
        t.close()
    assert (molpy_home / "default.session").exists()
    t = Pty("run", cwd=tmp_path)
    try:
        t.read_until(b"resumed session")
        t.send(b"count\r")
        t.read_until(b"boot count: 1")
        t.send(b"exit\r")
        assert t.wait() == 0
    finally:
        t.close()
