"""Regression tests: one per defect the adversarial suite found (each next to its fix)."""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

from kit import saved_session
from molpy.cli import main as cli_main
from molpy.config import BlkdevSpec
from molpy.console import BufferConsole
from molpy.drivers.cow import CowBackend, Overlay
from molpy.drivers.overlays import overlay_name
from molpy.drivers.raw import RawBackend
from molpy.emulation.session_write import write_session
from molpy.machine import Machine, MachineConfig


def _session(tmp: Path) -> tuple[Path, Path, MachineConfig]:
    rc, disk, conf = saved_session(tmp, ram_mib=8)
    return rc, Path(conf.session_file), conf


def test_code_read_from_disk_over_code_already_run_is_the_new_code(tmp_path):
    """Found by the OSI fuzzer: a disk read into RAM left Unicorn's translations of the
    old code in place, so a guest loading code over code it had run in the same slice
    ran the old code. Fix: osi_blk drops the translations of what a read wrote."""
    disk = tmp_path / "code.img"
    sector = lambda v: struct.pack(">II", 0x3A800000 | v, 0x4E800020).ljust(512, b"\0")  # li r20,v; blr
    disk.write_bytes(sector(1) + sector(2))
    m = Machine(MachineConfig(ram_mib=2, blkdevs=[BlkdevSpec(str(disk))]))
    try:
        code: list[int] = []

        def read_sector(n: int) -> None:
            for r, v in zip(range(3, 11), [0x113724FA, 0x77810F9B, 84, 0, 0, n, 0x2000, 512]):
                code.extend([0x3C000000 | r << 21 | v >> 16, 0x60000000 | r << 21 | r << 16 | v & 0xFFFF])
            code.append(0x44000002)                                   # sc
            code.append(0x48000001 | (0x2000 - (0x1000 + 4 * len(code))) & 0x3FFFFFC)   # bl 0x2000

        read_sector(0)
        code.append(0x7E95A378)                                       # mr r21,r20
        read_sector(1)
        end = 0x1000 + 4 * len(code)
        m.memory.view[0x1000:end] = b"".join(struct.pack(">I", c) for c in code)
        m.cpu.pc = 0x1000
        m.cpu.uc.emu_start(0x1000, end)
        assert (m.cpu.reg(21), m.cpu.reg(20)) == (1, 2)
    finally:
        m.close()


def test_session_info_on_a_damaged_cpu_chunk_is_one_line(tmp_path, capsys):
    """Found by the session mutants: `molpy session info` raised a traceback when the CPU
    chunk held something else (checksums intact)."""
    rc, path, conf = _session(tmp_path)
    data = bytearray(path.read_bytes())
    n = struct.unpack_from(">I", data, 104)[0]
    entries = [list(struct.unpack_from(">4sIQQII", data, 4096 + 32 * i)) for i in range(n)]
    cpu = next(i for i, e in enumerate(entries) if e[0] == b"CPU ")
    dev = next(i for i, e in enumerate(entries) if e[0] not in (b"CPU ", b"RAM "))
    entries[cpu][0], entries[dev][0] = entries[dev][0], entries[cpu][0]
    for i in (cpu, dev):
        struct.pack_into(">4sIQQII", data, 4096 + 32 * i, *entries[i])
    struct.pack_into(">I", data, 108, zlib.crc32(data[4096:4096 + 32 * n]))
    struct.pack_into(">I", data, 4092, zlib.crc32(data[:4092]))
    path.write_bytes(data)
    assert cli_main(["session", "info", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "CPU state is damaged" in err


def test_a_flipped_chunk_table_entry_is_refused(tmp_path, capsys):
    """Found by the session mutants: the chunk table had no checksum, so a flip in the RAM
    entry's CRC field resumed silently. Format 2 keeps the table's CRC in the header."""
    rc, path, conf = _session(tmp_path)
    data = bytearray(path.read_bytes())
    n = struct.unpack_from(">I", data, 104)[0]
    ram = next(i for i in range(n) if data[4096 + 32 * i:4096 + 32 * i + 4] == b"RAM ")
    data[4096 + 32 * ram + 24] ^= 1                                   # the RAM chunk's CRC
    path.write_bytes(data)
    assert cli_main(["session", "info", str(path)]) == 2
    assert "chunk table fails its checksum" in capsys.readouterr().err


def test_session_verify_leaves_cow_overlays_alone(tmp_path, capsys):
    """Found by the session mutants: `session verify` opened -cow disks like a run does,
    moving the previous run's overlay aside as .prev. Verify now only looks."""
    rc, path, conf = _session(tmp_path)
    m = Machine(conf, BufferConsole(b"write 0 50 mine\n"))
    try:
        m.boot()
        m.run(seconds=0.5)
    finally:
        m.close()
    cow = tmp_path / "cow"
    before = {p.name: p.read_bytes() for p in cow.iterdir()}
    cli_main(["session", "verify", str(path), "-f", str(rc)])
    capsys.readouterr()
    assert {p.name: p.read_bytes() for p in cow.iterdir()} == before


def _overlay(tmp: Path) -> tuple[Path, Path]:
    disk = tmp / "d.img"
    disk.write_bytes(bytes(1 << 20))
    path = tmp / overlay_name(str(disk))
    b = CowBackend(RawBackend(str(disk)), Overlay.create(str(path), RawBackend(str(disk), lock=False).identity()))
    b.write(512 * 1000, memoryview(b"x" * 4096))
    b.close()
    return disk, path


def test_an_overlay_cut_short_inside_its_data_is_refused(tmp_path, capsys):
    """Found by the overlay mutants: an overlay truncated inside the sectors its bitmap
    claims was accepted, and a commit would have written zeros over the disk."""
    disk, path = _overlay(tmp_path)
    os.truncate(path, path.stat().st_size - 512)
    assert cli_main(["cow", "commit", str(path)]) == 2
    assert "the overlay is truncated" in capsys.readouterr().err
    assert disk.read_bytes() == bytes(1 << 20)


def test_an_overlay_naming_an_impossible_disk_path_is_refused(tmp_path, capsys):
    """Found by the overlay mutants: a NUL in the header's disk path (checksum intact)
    raised ValueError out of `molpy cow info`."""
    disk, path = _overlay(tmp_path)
    data = bytearray(path.read_bytes())
    data[100] = 0
    struct.pack_into(">I", data, 4092, zlib.crc32(data[:4092]))
    path.write_bytes(data)
    assert cli_main(["cow", "info", str(path)]) == 2
    assert "overlay header is damaged (disk path)" in capsys.readouterr().err


def test_a_save_removes_the_temporaries_of_killed_saves(tmp_path):
    """Found by the save kill storm: every killed save left its temporary file (as big as
    the session) behind for ever."""
    dead = tmp_path / ".s.session.tmp.999999999"
    dead.write_bytes(b"partial")
    alive = tmp_path / f".s.session.tmp.{os.getppid()}"
    alive.write_bytes(b"someone else saving")
    write_session(str(tmp_path / "s.session"), memoryview(bytearray(1 << 20)), {"pc": 0}, [], "")
    assert not dead.exists() and alive.exists()
