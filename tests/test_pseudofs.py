"""Pseudo files (OSI 96): host files published by name, answered as MOL's pseudofs.c."""

from __future__ import annotations

import os

import pytest

from probe import SCRATCH, Probe, signed


@pytest.fixture
def files(tmp_path):
    a = tmp_path / "rom.bin"
    a.write_bytes(bytes(range(256)) * 4)
    b = tmp_path / "logo.raw"
    b.write_bytes(b"logo")
    c = tmp_path / "rom2.bin"
    c.write_bytes(b"second rom")
    # as the config names them (a repeated pseudofile becomes nwrom-1)
    return [("nwrom", str(a)), ("bootlogo", str(b)), ("nwrom-1", str(c)),
            ("missing", str(tmp_path / "absent")), ("bootlogo", str(a))]


def test_open_names_and_indexes(files):
    """Newest first: nwrom-1 is 0, bootlogo 1, nwrom 2; a missing file or a name already
    published is not published."""
    p = Probe(pseudofiles=files)
    for i, name in enumerate(["nwrom", "nwrom-1", "bootlogo", "missing", "pseudo:,nwrom"]):
        p.store(SCRATCH + 64 * i, name)
        p.call(96, 1, SCRATCH + 64 * i)
    p.call(96, 1, 16 << 20)                         # name outside RAM
    p.call(96, 2, 0)                                # close: 0
    p.call(96, 9)                                   # bad op: -1
    a = p.run()
    assert [signed(x[0]) for x in a] == [2, 0, 1, -1, -1, -1, 0, -1]


def test_size_read_and_name(files):
    buf = SCRATCH + 0x1000
    p = Probe(pseudofiles=files)
    p.call(96, 3, 2)                                # size of nwrom
    p.call(96, 3, 3)                                # no such index: -1
    p.call(96, 4, 2, 10, buf, 6)                    # read 6 bytes at 10
    p.dump(buf, 6)
    p.call(96, 4, 2, 1020, buf, 100)                # short read at the end
    p.call(96, 4, 2, 5000, buf, 100)                # past the end: 0
    p.call(96, 4, 2, 0xFFFFFFFF, buf, 3)            # negative offset: MOL read from 0
    p.dump(buf, 3)
    p.call(96, 4, 1, 0, (16 << 20) - 2, 4)          # the bytes would leave RAM: -1
    p.call(96, 4, 1, 0, (16 << 20) - 4, 0xFFFFFFFF)  # "negative" count: what the file has
    p.call(96, 5, 0, buf, 0x100)                    # index-to-name: the host path
    p.dump(buf, len(files[2][1]) + 1)
    p.call(96, 5, 0, buf, 4)                        # strncpy0: 3 bytes and a NUL
    p.dump(buf, 5)
    a = p.run()
    assert a[0][0] == 1024 and signed(a[1][0]) == -1
    assert a[2][0] == 6 and a[3] == bytes(range(10, 16))
    assert a[4][0] == 4 and a[5][0] == 0
    assert a[6][0] == 3 and a[7] == bytes([0, 1, 2])
    assert signed(a[8][0]) == -1 and a[9][0] == 4
    assert a[10][0] == 0 and a[11] == files[2][1].encode() + b"\0"
    assert a[12][0] == 0 and a[13] == files[2][1].encode()[:3] + b"\0" + files[2][1].encode()[4:5]


def test_a_file_that_went_away_or_is_not_regular(files, tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    p = Probe(pseudofiles=files + [("pipe", str(fifo))])
    p.call(96, 3, 0)                                # the FIFO (newest): not a regular file
    p.call(96, 4, 0, 0, SCRATCH, 10)
    p.call(96, 3, 2)                                # bootlogo
    a = p.run(keep=True, extra="")
    assert [signed(x[0]) for x in a] == [-1, -1, 4]
    m = p.machine
    try:
        os.unlink(files[1][1])                      # deleted after publication (MOL reopens)
        m.frontend.feed(b"c 96 3 2 0 0 0 0 0\n")
        m.run(seconds=0.5)
        assert bytes(m.frontend.output).decode().rstrip().endswith("= ffffffff 77810f9b 60 3 2 0")
    finally:
        m.close()
