"""Warnings a guest causes are bounded (issue 18 item 8): a guest calling thousands of unknown OSI
selectors gets a few lines on stderr, the rest in the capped guest log, and molpy remembers a
bounded number of them."""

from __future__ import annotations

import logging

from exactgen import OSI_MAGIC, SC, d_form, dump_and_exit, li32, pack
from molpy import guestwarn
from molpy.console import BufferConsole
from molpy.machine import Machine, MachineConfig, Stop
from molpy.boot import bundled_guest
from molpy.osi import UNKNOWN_REMEMBERED

BODY = 0x20000


def test_thousands_of_unknown_selectors_make_a_few_lines(caplog):
    count = 5000
    words = li32(8, 1000) + li32(9, 1000 + count)
    loop = len(words)
    words += li32(3, OSI_MAGIC[0]) + li32(4, OSI_MAGIC[1]) + [0x7D054378, SC]    # mr r5, r8; sc
    words += [d_form(14, 8, 8, 1), (31 << 26) | (8 << 16) | (9 << 11),                            # addi; cmpw r8, r9
              (16 << 26) | (12 << 21) | ((4 * (loop - (len(words) + 2))) & 0xFFFC)]              # blt loop
    words += dump_and_exit()
    m = Machine(MachineConfig(ram_mib=1, bootfile=str(bundled_guest("exact"))), BufferConsole())
    try:
        m.boot()
        code = pack(words)
        m.memory.view[BODY:BODY + len(code)] = code
        m.memory.view[0x3008:0x300C] = (0x3000).to_bytes(4, "big")            # MSR: FP, ME
        m.memory.view[0x3004:0x3008] = (0x7FFFFFFF).to_bytes(4, "big")
        m.cpu.code_changed(0, 1 << 20)
        before = guestwarn.count("unknown OSI selector")
        with caplog.at_level(logging.WARNING, logger="molpy"):
            assert m.run(seconds=60) is Stop.EXIT
        assert guestwarn.count("unknown OSI selector") - before == count
        shown = [r for r in caplog.records if r.name == "molpy.osi"]
        assert len(shown) <= guestwarn.SHOWN + 1, len(shown)
        assert len(m.osi._unknown_seen) <= UNKNOWN_REMEMBERED
    finally:
        m.close()
