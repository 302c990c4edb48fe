"""Every guest read and write of the time base and the decrementer reaches molpy's clock
(molpy/timeregs.py through the engine's time hook), whatever instruction form and however
many distinct addresses: generated programs of more than 512 sites (the old per-address
hooks stopped at 512; past that a read saw the value of the last stop) mixing ``mftb``,
``mftbu``, ``mfspr`` 268/269/284/285 (284/285 were never hooked) and ``mfdec``, each
followed by a delay loop. The model: after ``mttbu U``/``mttbl 0`` and ``mtdec D``, every
TBL read is larger than the one before, TBU reads U, every DEC read is smaller than the
one before, and no more time passes for the guest than passed on the host. In user mode
the privileged ones raise the 750's program exception and change nothing.
"""

from __future__ import annotations

import random
import struct
import time

import pytest

from exactgen import (DATA, DUMP, MSR_FP, MSR_ME, Program, bc, boot_exact, d_form, dump_and_exit, li32, mfspr,
                      mtspr, pack, spr_form)
from molpy.machine import Stop
from molpy.timebase import TB_FREQ

SITES = 600
UPPER = 0x1234
DEC_START = 0x7FFF0000
READS = {"mftb": lambda r: spr_form(371, r, 268), "mftbu": lambda r: spr_form(371, r, 269),
         "mfspr 268": lambda r: mfspr(r, 268), "mfspr 269": lambda r: mfspr(r, 269),
         "mfspr 284": lambda r: mfspr(r, 284), "mfspr 285": lambda r: mfspr(r, 285),
         "mfdec": lambda r: mfspr(r, 22)}
KIND = {"mftb": "tbl", "mfspr 268": "tbl", "mfspr 284": "tbl",
        "mftbu": "tbu", "mfspr 269": "tbu", "mfspr 285": "tbu", "mfdec": "dec"}


def _machine(code: bytes, msr: int):
    return boot_exact(Program(code, b"", 1, 0), msr, 0)


def _program(rng: random.Random) -> tuple[bytes, list[str]]:
    """SITES reads at distinct addresses, each stored at DATA + 4*i, a delay loop between."""
    kinds = [rng.choice(sorted(READS)) for _ in range(SITES)]
    words = li32(3, UPPER) + [mtspr(285, 3)] + li32(3, 0) + [mtspr(284, 3)]     # TB = UPPER << 32
    words += li32(3, DEC_START) + [mtspr(22, 3)] + li32(4, DATA)
    for i, kind in enumerate(kinds):
        words += [READS[kind](5), d_form(36, 5, 4, 4 * i)]                    # stw r5, 4i(r4)
        words += li32(6, rng.randrange(50, 400)) + [mtspr(9, 6), bc(16, 0, 0)]   # mtctr; bdnz .
    return pack(words + dump_and_exit()), kinds


@pytest.mark.parametrize("seed", range(3))
def test_every_time_register_access_reads_the_clock(seed):
    code, kinds = _program(random.Random(seed))
    m = _machine(code, MSR_FP | MSR_ME)
    view = m.memory.view
    try:
        t0 = time.monotonic()
        assert m.run(seconds=60) is Stop.EXIT and m.exit_code == 0, m.fault and m.fault.report()
        host_ticks = (time.monotonic() - t0) * TB_FREQ
        values = struct.unpack(f">{SITES}I", bytes(view[DATA:DATA + 4 * SITES]))
    finally:
        m.close()
    seen = {"tbl": [], "tbu": [], "dec": []}
    for kind, value in zip(kinds, values):
        seen[KIND[kind]].append(value)
    tbl, dec = seen["tbl"], seen["dec"]
    assert all(a < b for a, b in zip(tbl, tbl[1:])), "a TBL read did not see time pass"
    assert set(seen["tbu"]) == {UPPER}
    assert all(a > b for a, b in zip(dec, dec[1:])), "a DEC read did not see time pass"
    assert dec[0] < DEC_START
    assert tbl[-1] - tbl[0] <= host_ticks and DEC_START - dec[-1] <= host_ticks
    assert len(tbl) > 100 and len(dec) > 30 and len(seen["tbu"]) > 100


MSR_PR = 0x4000
PRIVILEGED = 0x00040000                  # SRR1 of a program exception: privileged instruction
# at 0x700: count in r20, step over the instruction, return (user mode again)
PROGRAM_HANDLER = [d_form(14, 20, 20, 1), mfspr(21, 26), d_form(14, 21, 21, 4), mtspr(26, 21), 0x4C000064]


def test_user_mode_time_register_writes_and_mfdec_are_privileged():
    """mftb and mfspr 268/269 are a user's; mfdec and every write raise a program exception
    (the translator's own check, before the time hook) and change neither r6 nor the clock."""
    sentinel = 0x5EE5EE
    words = li32(6, sentinel) + li32(7, 0x40000000) + [d_form(14, 20, 0, 0)]
    words += [spr_form(371, 5, 268), mfspr(8, 269), mfspr(6, 22)]            # mftb, mfspr TBU, mfdec
    words += [mtspr(22, 7), mtspr(284, 7), mtspr(285, 7)] + dump_and_exit()  # mtdec, mttbl, mttbu
    m = _machine(pack(words), MSR_FP | MSR_ME | MSR_PR)
    try:
        m.memory.view[0x700:0x700 + 4 * len(PROGRAM_HANDLER)] = pack(PROGRAM_HANDLER)
        m.cpu.code_changed(0x700, 0x800)
        m.exceptions.log = []
        assert m.run(seconds=60) is Stop.EXIT and m.exit_code == 0, m.fault and m.fault.report()
        regs = struct.unpack(">32I", bytes(m.memory.view[DUMP:DUMP + 128]))
        now = m.timebase.clock()
        tb, dec = m.timebase.tb(now), m.timebase.dec(now)
    finally:
        m.close()
    program = [d for d in m.exceptions.log if d.vector == 0x700]
    assert len(program) == 4 and all(d.srr1 & PRIVILEGED for d in program), program
    assert regs[20] == 4 and regs[6] == sentinel
    assert 0 < regs[5] <= tb & 0xFFFFFFFF and regs[8] == 0      # TB counts from the boot, far below 2^32
    # the writes took no effect: TB would be >= 2^30 (mttbl) or 2^62 (mttbu), DEC would count
    # down from 2^30 instead of from the harness's 0 (now just below 2^32)
    assert tb < 0x40000000 and dec > 0xF0000000
