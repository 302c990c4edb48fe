"""Session files of older molpys still resume (issue 19, item 8): tests/data/format3."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

from molpy.config import BlkdevSpec
from molpy.console import BufferConsole
from molpy.machine import Machine, MachineConfig, Stop
from sessionkit import chunk_of, replace_chunk

DATA = Path(__file__).parent / "data" / "format3"


def _unpack(name: str, to: Path) -> Path:
    to.write_bytes(gzip.decompress((DATA / name).read_bytes()))
    return to


def test_a_format_3_session_still_resumes(tmp_path):
    disk = _unpack("disk.img.gz", tmp_path / "disk.img")
    session = _unpack("format3.session.gz", tmp_path / "format3.session")
    data = session.read_bytes()
    state = json.loads(chunk_of(data, b"ABLK"))
    assert state["disks"][0]["path"] == "/tmp/f3/disk.img"
    state["disks"][0]["path"] = str(disk)                     # where this test unpacked it
    session.write_bytes(replace_chunk(data, b"ABLK", json.dumps(state).encode()))
    (tmp_path / "cow").mkdir()
    conf = MachineConfig(ram_mib=16, cow_dir=str(tmp_path / "cow"), session_file=str(session),
                         session_readonly=True,
                         blkdevs=[BlkdevSpec(path=str(disk), readonly=False, cow=True, boot=True)])
    for _ in range(2):                                    # read-only: again and again
        m = Machine.from_session(str(session), conf, BufferConsole(b"echo again\nexit 3\n"))
        try:
            notes = [n for dev in m.devices for n in dev.notes]    # (a new inode and date: checked)
            assert any("still the ones the session was saved with" in n for n in notes), notes
            assert m.run(seconds=10) is Stop.EXIT and m.exit_code == 3
            assert b"again" in bytes(m.frontend.output)
        finally:
            m.close()
    assert disk.read_bytes() == gzip.decompress((DATA / "disk.img.gz").read_bytes())
