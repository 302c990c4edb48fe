"""Booting ELFs: the entry state, and refusals that name the file and the reason."""

from __future__ import annotations

import struct

import pytest

from molpy.boot import ARGS_PAGE, BootError, bundled_guest, demo_guest
from molpy.cpu import MSR_DR, MSR_FP, MSR_IR
from molpy.machine import Machine, MachineConfig


@pytest.fixture
def machine():
    m = Machine(MachineConfig(ram_mib=16))
    yield m
    m.close()


def patched(tmp_path, name: str, **fields) -> str:
    """A copy of the demo ELF with header fields changed (offsets of the ELF32 header)."""
    data = bytearray(demo_guest().read_bytes())
    for key, value in fields.items():
        if key == "ei_class":
            data[4] = value
        elif key == "ei_data":
            data[5] = value
        elif key == "e_type":
            struct.pack_into(">H", data, 16, value)
        elif key == "e_machine":
            struct.pack_into(">H", data, 18, value)
        elif key == "paddr":        # the first program header's p_paddr
            phoff = struct.unpack_from(">I", data, 28)[0]
            struct.pack_into(">I", data, phoff + 12, value)
        elif key == "entry":
            struct.pack_into(">I", data, 24, value)
    path = tmp_path / name
    path.write_bytes(bytes(data))
    return str(path)


def test_entry_state(machine):
    machine.boot(str(demo_guest()), "hello args")
    s = machine.get_state()
    size = 16 << 20
    assert s.gpr[3] == size
    assert s.gpr[4] == size - ARGS_PAGE
    assert machine.memory.read_cstring(s.gpr[4]) == b"hello args"
    assert s.gpr[1] % 16 == 0 and s.gpr[1] < s.gpr[4]
    assert s.msr & MSR_FP and not s.msr & (MSR_IR | MSR_DR)
    assert s.pc >= 0x10000


@pytest.mark.parametrize("fields, reason", [
    ({"ei_class": 2}, "32-bit big-endian"),
    ({"ei_data": 1}, "32-bit big-endian"),
    ({"e_machine": 3}, "not a PowerPC"),
    ({"e_type": 1}, "not an executable"),
    ({"paddr": 0x00FF8000}, "does not fit"),
    ({"entry": 0x00800000}, "entry point"),
])
def test_refusals_name_file_and_reason(machine, tmp_path, fields, reason):
    path = patched(tmp_path, "bad.elf", **fields)
    with pytest.raises(BootError) as e:
        machine.boot(path)
    assert path in str(e.value) and reason in str(e.value)


def test_not_an_elf(machine, tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("hello\n")
    with pytest.raises(BootError, match="not an ELF"):
        machine.boot(str(path))


def test_truncated_elf(machine, tmp_path):
    path = tmp_path / "cut.elf"
    path.write_bytes(demo_guest().read_bytes()[:60])
    with pytest.raises(BootError, match=str(path)):
        machine.boot(str(path))


def test_missing_file(machine, tmp_path):
    with pytest.raises(BootError, match="cannot open"):
        machine.boot(str(tmp_path / "nope.elf"))


def test_boot_args_too_long(machine):
    with pytest.raises(BootError, match="boot_args"):
        machine.boot(str(demo_guest()), "x" * ARGS_PAGE)


def test_cli_refusal_is_one_line(cli, tmp_path):
    bad = patched(tmp_path, "bad.elf", e_machine=3)
    rc = tmp_path / "molrc"
    rc.write_text(f"bootfile: {bad}\n")
    r = cli("run", "-f", str(rc))
    assert r.returncode == 2
    assert b"Traceback" not in r.stderr
    assert bad.encode() in r.stderr and b"not a PowerPC" in r.stderr


def test_bundled_guests_present():
    for name in ("osi_calls", "fpu", "fault", "regs", "bench"):
        assert bundled_guest(name).is_file(), name
