"""Versioned device state: every device's state survives save -> restore, a newer molpy
loads older versions, and versions outside a device's range are refused by name."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import struct
from pathlib import Path

import pytest

from molpy.cli import main as cli_main
from molpy.config import BlkdevSpec
from molpy.console import BufferConsole
from molpy.drivers import osi_blk as B
from molpy.drivers.device import Device, StateMismatch, check_version
from molpy.drivers.registry import device_classes
from molpy.emulation.session import SessionError, open_session
from molpy.machine import Machine, MachineConfig, Stop
from molpy.restore import fit_records
from sessionkit import ENTRY, reseal_versions

TREE = """\
{
    (property name               <str>   "device-tree" )
    {
        (property name           <str>   "memory" )
        (property reg            <word>  0x00000000 0x00001000 )
    }
}
"""


def full_config(tmp: Path) -> MachineConfig:
    """A machine with every device molpy has (the device tree needs an oftree file)."""
    disk = tmp / "d.img"
    disk.write_bytes(bytes(1 << 20))
    tree = tmp / "tree"
    tree.write_text(TREE)
    (tmp / "cow").mkdir(exist_ok=True)
    return MachineConfig(ram_mib=8, blkdevs=[BlkdevSpec(str(disk), readonly=False, cow=True)],
                         cow_dir=str(tmp / "cow"), oftree=str(tree), nvram=str(tmp / "nvram"),
                         session_file=str(tmp / "s.session"))


def test_every_device_kind_is_versioned_and_round_trips(tmp_path):
    """save_state -> read_state, check_fit and restore into a new machine -> save_state
    gives the same bytes, for every device kind this molpy has, with the state some use
    left in it."""
    conf = full_config(tmp_path)
    m = Machine(conf, BufferConsole(b"typed before the save"))
    kinds = {d.kind for d in m.devices}
    assert kinds == set(device_classes()), "a device kind has no instance in the full machine"
    try:
        blk = next(d for d in m.devices if d.kind == "ABLK")
        assert blk.ring_setup(0, 0x10000, 16) == 0 and blk.cntrl(0, B.CNTRL_START, 0) == 0
        nvram = next(d for d in m.devices if d.kind == "NVRM")
        nvram.write_byte(7, 0x5A)
        saved = {(d.kind, d.instance): d.save_state() for d in m.devices}
    finally:
        m.close()
    conf = dataclasses.replace(conf, session_file=None)
    versions = {key: device_classes()[key[0]].version for key in saved}
    m = Machine(conf, BufferConsole(), restored=fit_records(conf, conf.ram_mib << 20, saved, versions, {}, "test"))
    try:
        assert {d.kind for d in m.devices} == kinds
        for d in m.devices:
            cls = type(d)
            assert 1 <= cls.min_version <= cls.version
            assert d.save_state() == saved[(d.kind, d.instance)], d.kind
            assert d.verify_state(saved[(d.kind, d.instance)], cls.version) == []
            assert "\n" not in cls.describe(saved[(d.kind, d.instance)], cls.version)
    finally:
        m.close()


def test_ring_console_and_irq_counts_survive_a_save_in_another_machine(tmp_path):
    """The ring registers, keys typed before the save and the IRQ_ACK count carry over."""
    conf = full_config(tmp_path)
    m = Machine(conf, BufferConsole(b"abc"))
    try:
        m.memory.view[0x1000:0x1004] = b"\x48\x00\x00\x00"             # b . (a guest at rest)
        m.cpu.pc = 0x1000
        blk = next(d for d in m.devices if d.kind == "ABLK")
        ring = 0x10000
        assert blk.ring_setup(0, ring, 16) == 0 and blk.cntrl(0, B.CNTRL_START, 0) == 0
        words = [(B.REQ_READ, 1, 0, 0), (B.REQ_SG_BUF, 0, 0x20000, 1024)]
        for i, w in enumerate(words, 1):
            m.memory.view[ring + 16 * i:ring + 16 * i + 16] = struct.pack(">IIII", *w)
        m.memory.view[ring + 4:ring + 8] = struct.pack(">I", 1)
        assert blk.kick(0) == 0                                       # the line is up, 2 completed
        ring_before = blk.ring.as_dict()
        m.save_session()
    finally:
        m.close()
    m = Machine.from_session(conf.session_file, dataclasses.replace(conf, session_readonly=True),
                             BufferConsole())
    try:
        blk = next(d for d in m.devices if d.kind == "ABLK")
        assert blk.ring.as_dict() == ring_before
        assert blk.irq_ack(0) == (1, 2, 0, 0)
        assert m.frontend.getc() == ord("a")                          # typed before the save
        assert m.run(seconds=0.05) is Stop.TIMEOUT
    finally:
        m.close()


@pytest.mark.parametrize("kind,version", [(b"ABLK", 4), (b"CONS", 99), (b"NVRM", 2), (b"CPU ", 2)])
def test_a_state_version_too_new_is_refused_naming_both(tmp_path, capsys, kind, version):
    conf = full_config(tmp_path)
    m = Machine(conf)
    m.save_session()
    m.close()
    path = Path(conf.session_file)
    path.write_bytes(reseal_versions(path.read_bytes(), {kind: version}))
    with pytest.raises(SessionError) as e:
        Machine.from_session(str(path), dataclasses.replace(conf, session_readonly=True)).close()
    name = kind.decode().strip()
    assert f"{name}" in str(e.value) and f"version {version}" in str(e.value) and "\n" not in str(e.value)
    assert cli_main(["session", "info", str(path)]) in (0, 2)
    out = capsys.readouterr()
    assert "Traceback" not in out.err
    if kind != b"CPU ":
        assert "not supported" in out.out


def test_check_version_rule():
    class Old(Device):
        kind, version, min_version = "TEST", 4, 2

    assert check_version("TEST", Old, 2) == "" and check_version("TEST", Old, 4) == ""
    assert "versions 2 to 4" in check_version("TEST", Old, 1)
    assert "versions 2 to 4" in check_version("TEST", Old, 5)
    assert "does not have" in check_version("NONE", None, 1)


def test_version_1_states_of_the_previous_molpy_still_load(tmp_path):
    """A newer reader loads older state: osi_blk's version 1 (the state header and -cow
    contents inline) and the console's version 1 (no terminal line), as molpy 0.1.0 wrote."""
    conf = full_config(tmp_path)
    m = Machine(conf, BufferConsole(b"k"))
    try:
        u = next(d for d in m.devices if d.kind == "ABLK").units[0]
        u.backend.write(4096, memoryview(b"\x77" * 1024))
        m.save_session()
    finally:
        m.close()
    path = Path(conf.session_file)
    data = path.read_bytes()
    n = struct.unpack_from(">I", data, 104)[0]
    entries = {ENTRY.unpack_from(data, 4096 + 32 * i)[0]: ENTRY.unpack_from(data, 4096 + 32 * i) for i in range(n)}
    doc = json.loads(data[entries[b"ABLK"][2]:entries[b"ABLK"][2] + entries[b"ABLK"][3]])
    cowd = entries[b"COWD"]
    overlay = data[cowd[2]:cowd[2] + cowd[3]]
    for marker in doc["disks"]:
        marker["overlay"] = len(overlay)
        del marker["boot"], marker["dev"], marker["region"]     # (added in versions 2 and 3)
        marker["digest"] = hashlib.sha256(Path(marker["path"]).read_bytes()).hexdigest()
    text = json.dumps(doc).encode()
    v1_ablk = b"MPBK" + struct.pack(">HI", 1, len(text)) + text + overlay
    v1_cons = struct.pack(">I", 1) + b"k"
    s = open_session(str(path))
    ram = bytes(open(path, "rb").read()[s.ram.offset:s.ram.offset + s.ram.length])
    cpu = json.loads(s.small[(b"CPU ", 0)])
    s.close()
    from molpy.drivers.oftree_state import to_json
    from molpy.emulation.session_write import write_session
    m = Machine(dataclasses.replace(conf, session_file=None))
    devices = [(d.kind, d.instance, to_json(d.tree) if d.kind == "OFTR" else d.save_state()) for d in m.devices]
    m.close()
    devices = [(k, i, v1_ablk if k == "ABLK" else v1_cons if k == "CONS" else b) for k, i, b in devices]
    write_session(str(path), memoryview(bytearray(ram)), cpu, devices, "",
                  versions={("ABLK", 0): 1, ("CONS", 0): 1, ("OFTR", 0): 1})   # OFTR 1: hex in JSON
    m = Machine.from_session(str(path), dataclasses.replace(conf, session_readonly=True), BufferConsole())
    try:
        u = next(d for d in m.devices if d.kind == "ABLK").units[0]
        buf = bytearray(1024)
        u.backend.readinto(4096, memoryview(buf))
        assert buf == b"\x77" * 1024
        assert m.frontend.getc() == ord("k")
    finally:
        m.close()


def _saved_at_rest(conf: MachineConfig) -> None:
    m = Machine(conf, BufferConsole())
    try:
        m.memory.view[0x1000:0x1004] = b"\x48\x00\x00\x00"             # b . (a guest at rest)
        m.cpu.pc = 0x1000
        m.save_session()
    finally:
        m.close()


@pytest.mark.parametrize("change", ["written", "replaced", "touched"])
def test_a_disk_changed_between_the_two_phases_is_refused(tmp_path, change):
    """Phase two opens the disks for real after phase one checked them on stand-ins; a disk
    another program changed in between is not the one checked: the resume is refused,
    naming it, and the disk is not written."""
    conf = full_config(tmp_path)
    _saved_at_rest(conf)
    resume = dataclasses.replace(conf, session_readonly=True)
    s = open_session(conf.session_file)
    try:
        records = fit_records(resume, s.ram_size, s.device_chunks(), s.versions(), s.bulk_chunks(), "test")
    finally:
        s.close()
    disk = Path(conf.blkdevs[0].path)
    if change == "written":
        with open(disk, "r+b") as f:
            f.write(b"X")
    elif change == "replaced":
        other = tmp_path / "other.img"
        other.write_bytes(disk.read_bytes())
        os.replace(other, disk)
    else:
        st = os.stat(disk)
        os.utime(disk, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    before = disk.read_bytes()
    with pytest.raises(StateMismatch, match=f"disk {disk} changed while the session was resumed"):
        Machine(resume, BufferConsole(), restored=records)
    assert disk.read_bytes() == before


def test_the_device_tree_is_restored_from_the_session_not_the_config(tmp_path):
    """DevTree.restore builds the device from its saved record: a different (valid) oftree
    file at resume does not replace the tree the guest saw."""
    conf = full_config(tmp_path)
    _saved_at_rest(conf)
    Path(conf.oftree).write_text(TREE.replace('"memory"', '"other"'))
    m = Machine.from_session(conf.session_file, dataclasses.replace(conf, session_readonly=True),
                             BufferConsole())
    try:
        tree = next(d for d in m.devices if d.kind == "OFTR").tree
        names = [n.prop(b"name") or b"" for n in tree.allnext]
        assert any(name.startswith(b"memory") for name in names), names
        assert not any(name.startswith(b"other") for name in names), names
    finally:
        m.close()
