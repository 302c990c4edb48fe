"""Files against molpy: mutated session files, overlays and molrc files.

Every mutant must be refused with a one-line message (no traceback), and the file
must be left exactly as it was. A session's RAM has no per-resume check (resume never
reads RAM: that is what makes it instant), so RAM mutants must resume and then fail
`molpy session verify`, which reads RAM and checks its CRC.
"""

from __future__ import annotations

import collections
import dataclasses
import random
import struct
import zlib
from pathlib import Path

import pytest

from conftest import count, tally
from kit import demo_rc, saved_session
from molpy.cli import main as cli_main
from molpy.config import ConfigError, load_config
from molpy.console import BufferConsole
from molpy.drivers.block import BlockError
from molpy.drivers.device import StateMismatch
from molpy.emulation.session import SessionError
from molpy.machine import Machine, MachineConfig

REFUSALS = (SessionError, BlockError, StateMismatch, ConfigError)
ENTRY = struct.Struct(">4sIQQII")


def one_line(message: str) -> None:
    assert message and "\n" not in message.strip() and "Traceback" not in message, message


def one_error(stderr: str, *, listing: bool = False) -> None:
    """The CLI's refusal: one error line (warnings may come before it), no traceback.
    ``listing``: ``run --check``, which lists every problem, one line each."""
    lines = stderr.strip().splitlines()
    assert "Traceback" not in stderr and all(line.startswith("molpy: ") for line in lines), stderr
    errors = sum(line.startswith("molpy: error: ") for line in lines)
    assert errors >= 1 if listing else errors == 1, stderr


# -- a real session: the demo guest at its prompt, a -cow disk holding its boot count --

@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("files")
    rc, disk, conf = saved_session(tmp, ram_mib=8)
    return tmp, rc, conf, Path(conf.session_file).read_bytes()


def layout(data: bytes) -> tuple[int, list[list]]:
    nchunks = struct.unpack_from(">I", data, 104)[0]
    entries = [list(ENTRY.unpack_from(data, 4096 + 32 * i)) for i in range(nchunks)]
    return nchunks, entries


def reseal(data: bytearray) -> bytes:
    """Recompute the table and header checksums (a mutant that passes the outer checks)."""
    nchunks = struct.unpack_from(">I", data, 104)[0]
    struct.pack_into(">I", data, 108, zlib.crc32(data[4096:4096 + 32 * nchunks]))
    struct.pack_into(">I", data, 4092, zlib.crc32(data[:4092]))
    return bytes(data)


def session_mutants(good: bytes, rng: random.Random, n: int):
    """(kind, bytes, must_refuse_at_resume)."""
    nchunks, entries = layout(good)
    ram = next(e for e in entries if e[0] == b"RAM ")
    covered = [(0, 4096 + 32 * nchunks)] + [(e[2], e[2] + e[3]) for e in entries if e[0] != b"RAM " and e[3]]
    bounds = sorted({0, 4096, 4096 + 32 * nchunks, len(good) - 1}
                    | {e[2] for e in entries} | {e[2] + e[3] for e in entries if e[0] != b"RAM "})
    for b in bounds:                                   # truncation at every chunk boundary
        yield "truncated at a chunk boundary", good[:b], True
    kinds = ["flip", "flip", "truncate", "swap", "huge", "junk chunk", "swap data", "ram flip"]
    for _ in range(n):
        kind = rng.choice(kinds)
        data = bytearray(good)
        if kind == "flip":                             # header, table or a small chunk
            lo, hi = rng.choice(covered)
            pos = rng.randrange(lo, hi)
            data[pos] ^= 1 << rng.randrange(8)
            yield "bit flip (header, table, state)", bytes(data), True
        elif kind == "truncate":
            yield "truncated at a random byte", good[:rng.randrange(len(good))], True
        elif kind == "swap":                           # two table entries change places
            i, j = rng.sample(range(nchunks), 2)
            a, b = 4096 + 32 * i, 4096 + 32 * j
            data[a:a + 32], data[b:b + 32] = good[b:b + 32], good[a:a + 32]
            yield "swapped chunk table entries", bytes(data), True
        elif kind == "huge":                           # sizes and offsets, checksums made good
            i = rng.randrange(nchunks)
            field = rng.choice([2, 3])
            e = list(entries[i])
            e[field] = rng.choice([2**64 - 1, 2**63, 2**32, len(good), len(good) + 4096,
                                   ram[2] + 1, rng.randrange(2**64)])
            data[4096 + 32 * i:4096 + 32 * i + 32] = ENTRY.pack(*e)
            yield "huge size or offset in the table (checksums resealed)", reseal(data), True
        elif kind == "swap data":                      # two small chunks' kinds swapped
            small = [i for i, e in enumerate(entries) if e[0] != b"RAM "]
            i, j = rng.sample(small, 2)
            ei, ej = list(entries[i]), list(entries[j])
            ei[0], ej[0] = ej[0], ei[0]
            data[4096 + 32 * i:4096 + 32 * i + 32] = ENTRY.pack(*ei)
            data[4096 + 32 * j:4096 + 32 * j + 32] = ENTRY.pack(*ej)
            # two stateless devices (empty chunks) swapped change nothing: that one resumes
            same = good[ei[2]:ei[2] + ei[3]] == good[ej[2]:ej[2] + ej[3]]
            yield "swapped chunk contents (checksums resealed)", reseal(data), None if same else True
        elif kind == "junk chunk":                     # a device's bytes replaced, checksums good
            small = [i for i, e in enumerate(entries) if e[0] not in (b"RAM ", b"CPU ") and e[3]]
            i = rng.choice(small)
            e = list(entries[i])
            junk = bytearray(good[e[2]:e[2] + e[3]])
            for _ in range(rng.randint(1, 8)):
                junk[rng.randrange(len(junk))] = rng.randrange(256)
            data[e[2]:e[2] + e[3]] = junk
            e[4] = zlib.crc32(junk)
            data[4096 + 32 * i:4096 + 32 * i + 32] = ENTRY.pack(*e)
            yield "device state scrambled (checksums resealed)", reseal(data), None
        else:
            pos = ram[2] + rng.randrange(ram[3])
            data[pos] ^= 1 << rng.randrange(8)
            yield "bit flip in RAM (caught by session verify)", bytes(data), False


def resume(path: str, conf: MachineConfig) -> str | None:
    """None when it resumed, else the refusal's message."""
    try:
        m = Machine.from_session(path, conf)
    except REFUSALS as e:
        return str(e)
    m.close()
    return None


def test_mutated_sessions(saved, capsys):
    tmp, rc, conf, good = saved
    path = conf.session_file
    rng = random.Random(11)
    tried = collections.Counter()
    for kind, data, must_refuse in session_mutants(good, rng, count(120, 1000)):
        with open(path, "wb") as f:
            f.write(data)
        writable = dataclasses.replace(conf, session_readonly=rng.random() < 0.5)
        why = resume(path, writable)
        if must_refuse:
            assert why is not None, f"{kind}: resumed"
        if why is not None:
            one_line(why)
            assert Path(path).read_bytes() == data, f"{kind}: the refused file was written"
        capsys.readouterr()                            # what resume() said is not checked here
        if must_refuse is False:                       # RAM: verify must catch it
            status = cli_main(["session", "verify", path, "-f", str(rc)])
            out = capsys.readouterr()
            assert status != 0, f"{kind}: session verify passed"
            assert "RAM chunk fails its checksum" in out.out and "Traceback" not in out.err, out
            tried["ram"] += 1
        elif why is not None:
            tried["refused"] += 1
            if rng.random() < 0.2:                     # and the CLI says the same in one line
                status = cli_main(["session", "info", path])
                err = capsys.readouterr().err
                if status:
                    one_line(err)
        else:                                          # scrambled device state that still parses
            tried["resumed"] += 1
    with open(path, "wb") as f:
        f.write(good)
    assert resume(path, conf) is None
    tally("session files mutated (flips, truncations, swaps, huge table values): refused", tried["refused"])
    tally("session RAM bit flips: resume by design, `session verify` caught each", tried["ram"])
    tally("session device state scrambled with checksums resealed, still valid: resumed", tried["resumed"])


# -- overlays --

@pytest.fixture(scope="module")
def overlay(tmp_path_factory):
    """A real overlay left by a run that wrote to a -cow disk."""
    tmp = tmp_path_factory.mktemp("overlay")
    rc, disk = demo_rc(tmp, ram_mib=8)
    m = Machine(MachineConfig.from_config(load_config(rc)), BufferConsole(b"write 0 100 hello\nwrite 0 900 again\n"))
    try:
        m.boot()
        m.run(seconds=1)
    finally:
        m.close()
    [ov] = [p for p in (tmp / "cow").iterdir() if p.suffix == ".cow"]
    return disk, ov, ov.read_bytes()


def overlay_mutants(good: bytes, rng: random.Random, n: int):
    data_off = struct.unpack_from(">Q", good, 40)[0]
    for b in sorted({0, 8, 4095, 4096, data_off - 1, data_off, len(good) - 512, len(good) - 1}):
        if b < len(good):
            yield "truncated at a region boundary", good[:b]
    for _ in range(n):
        data = bytearray(good)
        kind = rng.choice(["flip", "flip", "huge", "identity", "truncate"])
        if kind == "flip":
            pos = rng.randrange(4096)
            data[pos] ^= 1 << rng.randrange(8)
            yield "header bit flip", bytes(data)
        elif kind == "huge":                           # a header field made huge, checksum good
            off = rng.choice([8, 12, 16, 24, 32, 40, 48, 80, 88, 96])    # layout fields
            data[off:off + 4] = rng.choice([b"\xff" * 4, b"\x7f\xff\xff\xff", b"\x00\x00\x10\x00"])
            struct.pack_into(">I", data, 4092, zlib.crc32(data[:4092]))
            if data != good:                           # (4096 written over 4096 is no mutant)
                yield "huge header field (checksum resealed)", bytes(data)
        elif kind == "identity":                       # the disk it belongs to, checksum good
            off = rng.choice([56, 64, 72, 98 + rng.randrange(8)])  # inode, mtime, dev, path
            data[off] ^= 1 << rng.randrange(8)
            struct.pack_into(">I", data, 4092, zlib.crc32(data[:4092]))
            yield "another disk's identity (checksum resealed)", bytes(data)
        else:
            yield "truncated inside held data", good[:rng.randrange(data_off, len(good) - 511)]


def test_mutated_overlays(overlay, capsys):
    disk, path, good = overlay
    base = disk.read_bytes()
    rng = random.Random(12)
    tried = 0
    for kind, data in overlay_mutants(good, rng, count(60, 1010)):
        path.write_bytes(data)
        for argv in (["cow", "info", str(path)], ["cow", "commit", str(path)]):
            status = cli_main(argv)
            out = capsys.readouterr()
            if argv[1] == "info" and kind.startswith("another disk") and status == 0:
                # a sound overlay of some other disk: info shows it, and says it does not match
                assert "disk matches: NO" in out.out, (kind, out)
                continue
            assert status != 0, f"{kind}: {' '.join(argv)} accepted it"
            one_line(out.err)
        assert path.read_bytes() == data, f"{kind}: the overlay was written"
        assert disk.read_bytes() == base, f"{kind}: the disk was written"
        tried += 1
    path.write_bytes(good)
    tally("overlay files mutated (header flips, huge fields, another disk, truncations)", tried)


# -- molrc files --

BAD_LINES = ["ram_size: -5", "ram_size: 99999999999999999999", "ram_size: twelve", "blkdev:",
             "blkdev: /nonexistent/disk.img -rw", "blkdev: {disk} -bogus", "session_readonly: perhaps",
             "bootfile: /nonexistent/guest.elf", "ram_size: 0x", "include /nonexistent/molrc",
             "\x00\x00", "ram_size 64", "blkdev: {disk} -rw -ro -cd -cow", "cow_dir: {disk}",
             "session_file: /proc/nope/s.session", "ram_size: 4096", "\xff\xfe binary",
             "include /dev/zero", "include /", "blkdev: {disk} -cwo", "cpu: g5", "ram_size:64",
             "ifdef ${{x}} {{", "}} else {{", "blkdev: ${{nodisk}} -rw"]


def test_mutated_molrc(saved, capsys, tmp_path):
    tmp, rc, conf, good = saved
    disk = tmp / "disk.img"
    text = rc.read_text()
    rng = random.Random(13)
    tried = refused = 0
    for i in range(count(80, 1000)):
        lines = text.splitlines()
        if i % 2:                                      # a bad line somewhere: must be refused
            lines.insert(0, rng.choice(BAD_LINES).format(disk=disk))   # first definition wins
            must = True
        else:                                          # random byte damage: refused or still valid
            raw = bytearray("\n".join(lines).encode())
            for _ in range(rng.randint(1, 4)):
                raw[rng.randrange(len(raw))] = rng.randrange(256)
            lines = [raw.decode("latin-1")]
            must = False
        mutant = tmp_path / "molrc"
        mutant.write_bytes("\n".join(lines).encode("latin-1", "replace") + b"\n")
        before = mutant.read_bytes()
        status = cli_main(["run", "-f", str(mutant), "--check"])
        err = capsys.readouterr().err
        if must:
            assert status != 0, f"accepted: {lines}"
        if status:
            one_error(err, listing=True)
            refused += 1
        assert mutant.read_bytes() == before
        tried += 1
    tally("molrc files mutated (bad lines, random byte damage)", tried)
