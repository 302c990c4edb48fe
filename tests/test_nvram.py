"""NVRAM (OSI 91/52/53): MOL's 8 KiB, read from the nvram image, written back safely."""

from __future__ import annotations

import logging
import os
import stat

import pytest

from molpy.console import BufferConsole
from molpy.drivers.device import DeviceError
from molpy.drivers.nvram import NVRAM_SIZE
from molpy.machine import Machine, MachineConfig
from probe import Probe


@pytest.fixture
def image(tmp_path) -> tuple[str, bytes]:
    data = os.urandom(NVRAM_SIZE)
    path = tmp_path / "nvram.test"
    path.write_bytes(data)
    os.chmod(path, 0o640)
    return str(path), data


def test_size_and_bytes_from_the_image(image):
    path, data = image
    p = Probe(nvram=path)
    p.call(91)
    for off in (0, 1, 0x1FFF, 0x2000, 0xFFFFFFFF, 0x80000000):
        p.call(53, off)
    a = p.run()
    assert a[0][0] == 0x2000
    assert [x[0] for x in a[1:]] == [data[0], data[1], data[0x1FFF], 0, 0, 0]


def test_writes_go_back_into_the_image_atomically(image):
    path, data = image
    before = os.stat(path)
    p = Probe(nvram=path)
    p.call(52, 5, 0x1AB)                # the low byte is stored
    p.call(52, 0x1FFF, 7)
    p.call(52, 0x2000, 9)               # outside: ignored, still 0
    p.call(52, 0xFFFFFFFF, 9)
    p.call(53, 5)
    a = p.run()
    assert [x[0] for x in a] == [0, 0, 0, 0, 0xAB]
    after = os.stat(path)
    expected = bytearray(data)
    expected[5] = 0xAB
    expected[0x1FFF] = 7
    assert open(path, "rb").read() == bytes(expected)
    assert after.st_ino != before.st_ino                 # a new file renamed over the old
    assert stat.S_IMODE(after.st_mode) == 0o640          # with the image's permissions
    assert not [f for f in os.listdir(os.path.dirname(path)) if ".tmp." in f]


def test_an_unchanged_nvram_is_not_rewritten(image):
    path, _ = image
    ino = os.stat(path).st_ino
    p = Probe(nvram=path)
    p.call(53, 0)
    p.run()
    assert os.stat(path).st_ino == ino


def test_missing_or_short_image_is_written_at_start(tmp_path):
    missing = str(tmp_path / "new.nvram")
    m = Machine(MachineConfig(nvram=missing), BufferConsole())
    try:
        assert open(missing, "rb").read() == bytes(NVRAM_SIZE)      # MOL: "Creating nvram-image"
        assert stat.S_IMODE(os.stat(missing).st_mode) == 0o600
    finally:
        m.close()
    short = tmp_path / "short.nvram"
    short.write_bytes(b"\x42" * 100)
    m = Machine(MachineConfig(nvram=str(short)), BufferConsole())
    m.close()
    assert short.read_bytes() == b"\x42" * 100 + bytes(NVRAM_SIZE - 100)


def test_bytes_past_8k_are_kept(tmp_path):
    path = tmp_path / "long.nvram"
    path.write_bytes(bytes(NVRAM_SIZE) + b"tail data")
    p = Probe(nvram=str(path))
    p.call(52, 0, 1)
    p.run()
    assert path.read_bytes() == b"\x01" + bytes(NVRAM_SIZE - 1) + b"tail data"


def test_oldworld_writes_back_only_pram_and_above(image):
    """MOL's oldworld cleanup wrote 0x1300-0x1400 and 0x1400-0x2000 only."""
    path, data = image
    p = Probe(nvram=path, boot_type="oldworld")
    p.call(52, 0x10, 1)
    p.call(52, 0x1300, 2)
    p.call(52, 0x1FFF, 3)
    p.run()
    now = open(path, "rb").read()
    assert now[0x10] == data[0x10] and now[0x1300] == 2 and now[0x1FFF] == 3


def test_a_link_at_the_image_name_is_refused(tmp_path, image):
    path, data = image
    link = tmp_path / "link.nvram"
    link.symlink_to(path)
    with pytest.raises(DeviceError, match="symbolic link"):
        Machine(MachineConfig(nvram=str(link)), BufferConsole())
    assert open(path, "rb").read() == data
    fifo = tmp_path / "fifo.nvram"
    os.mkfifo(fifo)
    with pytest.raises(DeviceError, match="is a FIFO"):
        Machine(MachineConfig(nvram=str(fifo)), BufferConsole())


def test_a_failed_write_back_leaves_the_image(image, monkeypatch, caplog):
    path, data = image
    p = Probe(nvram=path)
    p.call(52, 0, 0x55)

    def no_space(*args):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(os, "replace", no_space)        # the disk fills at the rename
    with caplog.at_level(logging.ERROR, logger="molpy.nvram"):
        p.run()
    assert open(path, "rb").read() == data
    assert any("No space left" in r.getMessage() for r in caplog.records)
    assert not [f for f in os.listdir(os.path.dirname(path)) if ".tmp." in f]


def test_nvram_is_part_of_a_session(image, tmp_path):
    path, data = image
    session = str(tmp_path / "s.mol")
    p = Probe(nvram=path)
    p.call(52, 9, 0x99)
    p.run(keep=True, extra="")
    p.machine.save_session(session)
    p.machine.close()
    os.unlink(path)
    with open(path, "wb") as f:
        f.write(bytes(NVRAM_SIZE))                       # the image changed meanwhile
    conf = MachineConfig(nvram=path, session_file=session, session_readonly=True)
    r = Machine.from_session(session, conf, BufferConsole())
    try:
        nv = next(d for d in r.devices if d.kind == "NVRM")
        assert nv.data[9] == 0x99 and nv.data[10] == data[10]   # the session's NVRAM wins (MOL)
        nv.write_byte(9, 1)
        r.reset()
        assert nv.data[9] == 0x99
    finally:
        r.close()


def test_session_verify_never_writes(image):
    path, data = image
    m = Machine(MachineConfig(nvram=path, inspect_only=True), BufferConsole())
    nv = next(d for d in m.devices if d.kind == "NVRM")
    nv.write_byte(0, 1)
    m.close()
    assert open(path, "rb").read() == data
