"""A refused resume changes nothing on disk (issue 19, item 1).

The session is checked whole, on stand-ins that only look, before any device of the
machine exists: no -cow overlay made or moved aside, no digest cached, no log, NVRAM
image or demo disk made, the session file not marked used. Each reason a resume is
refused for is tried, through the library and (two of them) through real `molpy run`
processes, and the session's folder and molpy's data folder are compared byte for byte
(names, kinds, contents, dates) before and after.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import stat
from pathlib import Path

import pytest

import molpy
from conftest import tally
from kit import resumes, saved_session
from molpy.config import BlkdevSpec
from molpy.console import BufferConsole
from molpy.drivers.device import StateMismatch
from molpy.errors import SessionError
from molpy.machine import Machine
from sessionkit import chunk_of, replace_chunk, reseal_versions


def snapshot(*roots: Path) -> dict[str, tuple]:
    """Every entry under ``roots``: kind, mode, size, date and contents (links: target)."""
    found: dict[str, tuple] = {}
    for root in roots:
        for folder, dirs, files in os.walk(root):
            for name in dirs + files:
                path = os.path.join(folder, name)
                st = os.lstat(path)
                if stat.S_ISLNK(st.st_mode):
                    found[path] = ("link", os.readlink(path))
                elif stat.S_ISDIR(st.st_mode):
                    found[path] = ("dir", st.st_mode, st.st_mtime_ns)
                else:
                    found[path] = ("file", st.st_mode, st.st_size, st.st_mtime_ns, Path(path).read_bytes())
    return found


def _spec(conf, **change) -> list[BlkdevSpec]:
    return [dataclasses.replace(conf.blkdevs[0], **change)]


def contents_changed(tmp, disk, conf):
    with open(disk, "r+b") as f:           # same size, other data: only a content check sees it
        f.seek(1 << 20)
        f.write(b"\xa5" * 4096)
    return conf, StateMismatch, "contents differ"


def disk_grew(tmp, disk, conf):
    with open(disk, "ab") as f:
        f.write(bytes(512))
    return conf, StateMismatch, "changed"


def other_disk(tmp, disk, conf):
    other = tmp / "other.img"
    shutil.copyfile(disk, other)
    return dataclasses.replace(conf, blkdevs=_spec(conf, path=str(other))), StateMismatch, "other.img"


def one_more_disk(tmp, disk, conf):
    extra = tmp / "extra.img"
    extra.write_bytes(bytes(1 << 20))
    more = conf.blkdevs + [dataclasses.replace(conf.blkdevs[0], path=str(extra), cow=True, boot=False)]
    return dataclasses.replace(conf, blkdevs=more), StateMismatch, "extra.img"


def overlay_without_cow(tmp, disk, conf):
    spec = _spec(conf, cow=False, readonly=True)
    return dataclasses.replace(conf, blkdevs=spec), StateMismatch, "-cow"


def missing_disk(tmp, disk, conf):
    disk.unlink()
    return conf, StateMismatch, "missing"


def _crafted(kind: bytes, edit):
    def craft(tmp, disk, conf):
        path = Path(conf.session_file)
        good = path.read_bytes()
        path.write_bytes(replace_chunk(good, kind, edit(chunk_of(good, kind))))
        return conf, SessionError, "damaged"
    craft.__name__ = f"crafted_{kind.decode().strip().lower()}_{edit.__name__.strip('_')}"
    return craft


def _ring_outside_ram(data: bytes) -> bytes:
    doc = json.loads(data)
    doc["ring"].update(base=0x7FFFF000, n_el=1024)
    return json.dumps(doc).encode()


def _marker_size_text(data: bytes) -> bytes:
    doc = json.loads(data)
    doc["disks"][0]["size"] = "big"
    return json.dumps(doc).encode()


def _cpu_pc_text(data: bytes) -> bytes:
    doc = json.loads(data)
    doc["pc"] = "somewhere"
    return json.dumps(doc).encode()


def _console_garbage(data: bytes) -> bytes:
    return b"\xff" * 7


def version_too_new(tmp, disk, conf):
    path = Path(conf.session_file)
    path.write_bytes(reseal_versions(path.read_bytes(), {b"ABLK": 99}))
    return conf, SessionError, "version 99"


def no_state_for_a_device(tmp, disk, conf):
    """A config with a device the session has no chunk for (an oftree makes DTRE)."""
    tree = tmp / "tree"
    tree.write_text('{\n  (property name <str> "device-tree" )\n}\n')
    return dataclasses.replace(conf, oftree=str(tree)), SessionError, "no state for device"


WHAT = "refused resumes (12 reasons; library and `molpy run`): a file or folder changed"
REASONS = [contents_changed, disk_grew, other_disk, one_more_disk, overlay_without_cow, missing_disk,
           _crafted(b"ABLK", _ring_outside_ram), _crafted(b"ABLK", _marker_size_text),
           _crafted(b"CONS", _console_garbage), _crafted(b"CPU ", _cpu_pc_text),
           version_too_new, no_state_for_a_device]


@pytest.mark.parametrize("readonly", [True, False], ids=["read-only", "resumes-once"])
@pytest.mark.parametrize("reason", REASONS, ids=lambda r: r.__name__)
def test_a_refused_resume_changes_nothing(tmp_path, molpy_home, reason, readonly):
    rc, disk, conf = saved_session(tmp_path)
    resumes(conf)                            # now there is an overlay and a digest cache to disturb
    conf = dataclasses.replace(conf, session_readonly=readonly)
    conf, error, words = reason(tmp_path, disk, conf)
    before = snapshot(tmp_path, molpy_home)
    with pytest.raises(molpy.Error) as e:
        Machine.from_session(conf.session_file, conf, BufferConsole(b"exit 4\n")).close()
    assert isinstance(e.value, error) and words in str(e.value) and "\n" not in str(e.value), str(e.value)
    assert snapshot(tmp_path, molpy_home) == before
    tally(WHAT, 1)


def test_what_a_resume_accepts_still_resumes_after_refusals(tmp_path, molpy_home):
    """The checks refuse what does not fit, not more: a touched disk (same contents) is
    accepted with a note after a refusal left it alone."""
    rc, disk, conf = saved_session(tmp_path)
    with pytest.raises(StateMismatch):
        Machine.from_session(conf.session_file, dataclasses.replace(conf, blkdevs=_spec(conf, cow=False,
                             readonly=True)), BufferConsole()).close()
    os.utime(disk)
    m = Machine.from_session(conf.session_file, conf, BufferConsole(b"exit 4\n"))
    try:
        assert any("still the ones" in n for dev in m.devices for n in dev.notes)
    finally:
        m.close()
    resumes(conf)


@pytest.mark.parametrize("reason", [disk_grew, _crafted(b"ABLK", _ring_outside_ram)],
                         ids=lambda r: r.__name__)
def test_a_refused_molpy_run_changes_nothing(tmp_path, molpy_home, cli, reason):
    rc, disk, conf = saved_session(tmp_path)
    assert cli("run", "-f", str(rc), input=b"exit 4\n").returncode == 4
    reason(tmp_path, disk, conf)
    before = snapshot(tmp_path, molpy_home)
    r = cli("run", "-f", str(rc), input=b"exit 4\n")
    err = r.stderr.decode()
    assert r.returncode == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert snapshot(tmp_path, molpy_home) == before
    tally(WHAT, 1)
