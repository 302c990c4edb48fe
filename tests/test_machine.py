"""The machine on real guest code: every OSI selector, FP, each fault kind, the register state."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from guestout import output

from molpy.boot import bundled_guest
from molpy.console import BufferConsole
from molpy.cpu import SPR_NAMES
from molpy.machine import Machine, MachineConfig, Stop
from molpy.timebase import TB_FREQ

GUEST_SRC = Path(__file__).resolve().parent.parent / "guest"


def make(name: str, args: str = "", keys: bytes = b"", ram_mib: int = 16) -> Machine:
    m = Machine(MachineConfig(ram_mib=ram_mib, bootfile=str(bundled_guest(name)), boot_args=args),
                BufferConsole(keys))
    m.boot()
    return m


@pytest.fixture
def machines(closing):
    return lambda *args, **kwargs: closing(make, *args, **kwargs)


def test_every_osi_selector(machines, caplog):
    m = machines("osi_calls", "7")
    before = time.time()
    # the guest waits for keys with USLEEP: it must still be running after a while
    assert m.run(seconds=0.5) is Stop.TIMEOUT
    out = output(m)
    assert "args=[7] r3=16777216" in out
    served = "0=1 7=1 47=1 54=1 58=1 78=1 97=1 98=1"
    assert f"available: {served}" in out and "95=0 200=0 1000=0" in out
    assert "ram=16777216" in out and "helper99=-1" in out
    gmt = int(re.search(r"gmt=(\d+)", out).group(1))
    assert abs(gmt - before) < 5
    # MOL's answers: r3 untouched (still the magic) from 100 up, 0 below; TTY_PUTC returns 1
    assert "unknown=113724fa twice=113724fa low=0" in out
    assert ".putc=1" in out
    assert "getc-empty=-1" in out and "slept" in out
    m.frontend.feed(b"ab\n")
    assert m.run(seconds=5) is Stop.EXIT
    assert m.exit_code == 7
    assert "keys: 61 62" in output(m)
    # the unknown selector was logged once, not twice
    assert sum("unknown OSI selector 200" in r.getMessage() for r in caplog.records) == 1


def test_log_putc_goes_to_the_guest_log(machines, caplog):
    m = machines("osi_calls", "0")
    with caplog.at_level("INFO", logger="molpy.guest"):
        m.run(seconds=0.3)
        m.frontend.feed(b"\n")
        assert m.run(seconds=5) is Stop.EXIT
    assert any(r.name == "molpy.guest" and r.getMessage() == "hello log 42" for r in caplog.records)


def test_usleep_really_sleeps_and_wakes_on_a_key(machines):
    m = machines("osi_calls", "0")
    t0 = time.monotonic()
    assert m.run(seconds=0.4) is Stop.TIMEOUT      # 20 ms sleep, then waiting for keys
    assert time.monotonic() - t0 >= 0.4
    m.frontend.feed(b"x\n")
    t0 = time.monotonic()
    assert m.run(seconds=5) is Stop.EXIT
    assert time.monotonic() - t0 < 0.3              # its 100 ms naps end early on a key


def test_usleep_ends_the_slice_and_the_timer_rests_while_the_host_sleeps(machines):
    """A USLEEP ends the slice (an interrupt due by then is taken at once) and disarms the
    slice timer: before, the timer's deadline passed during the sleep and it re-sent its
    stop every 200 us until the sleep was over (~500 stops in 0.4 s of naps)."""
    m = machines("osi_calls", "0")
    assert m.run(seconds=0.1) is Stop.TIMEOUT      # past the start, into the 100 ms naps
    fired = m._timer.fired
    assert m.run(seconds=0.4) is Stop.TIMEOUT
    assert m._timer.fired - fired < 20


def test_fpu(machines):
    m = machines("fpu")
    assert m.run(seconds=5) is Stop.EXIT and m.exit_code == 0
    out = output(m)
    for line in ("add=-750 mul=-3375 div=2000", "sqrt2=1414213", "basel=1643934", "float=450",
                 "fmadd=-3750"):
        assert line in out


@pytest.mark.parametrize("kind, expect, insn, vector", [
    ("illegal", "illegal instruction", "00000000", "program vector 0x00000700"),
    ("fpoff", "FP used while disabled", "fadd", "FP unavailable vector 0x00000800"),
    ("unmapped", "read outside RAM", "lwz", None),
    ("store", "write outside RAM", "stw", None),
    ("fetch", "instruction fetch outside RAM", None, None),
    ("badsc", "system call (no OSI magic in r3/r4)", "sc", "system call vector 0x00000c00"),
    ("trap", "trap", "trap", "program vector 0x00000700"),
])
def test_faults_stop_the_guest_with_a_report(machines, kind, expect, insn, vector):
    """A guest with no vectors: every exception is a fault report naming the empty vector."""
    m = machines("fault", kind)
    assert m.run(seconds=5) is Stop.FAULT
    assert "still running" not in output(m)
    f = m.fault
    report = f.report()
    assert expect in report
    if vector:
        assert f"no handler: the {vector} holds no code" in report
    assert f"pc=0x{f.pc:08x}" in report.lower() or f"0x{f.pc:08x}" in report.lower()
    if insn:
        assert insn in report
    assert "r31" in report.lower() or "gpr" in report.lower()
    if kind == "fetch":
        assert f.pc == 0xE0000000
    elif kind not in ("unmapped", "store"):
        assert 0x10000 <= f.pc < 0x20000        # the faulting instruction inside the guest


def _values() -> dict[str, int]:
    text = (GUEST_SRC / "tests" / "regs_values.h").read_text()
    return {k: int(v, 16) for k, v in re.findall(r"#define (\w+)\s+(0x[0-9A-Fa-f]+)", text)}


def _without_time(state):
    """A state with TB and DEC zeroed: they count on their own."""
    import dataclasses
    return dataclasses.replace(state, spr={**state.spr, "TBL": 0, "TBU": 0, "DEC": 0})


def test_guest_set_registers_are_captured_exactly(machines):
    v = _values()
    m = machines("regs", "set")
    assert m.run(seconds=0.5) is Stop.TIMEOUT
    s = m.get_state()
    assert s.gpr == [(v["GPR_BASE"] + n * v["GPR_STEP"]) & 0xFFFFFFFF for n in range(32)]
    assert s.fpr == [(v["FPR_HI_BASE"] + n) << 32 | (v["FPR_LO_BASE"] + n) for n in range(32)]
    assert s.sr == [v["SR_BASE"] + n * v["SR_STEP"] for n in range(16)]
    assert (s.cr, s.lr, s.ctr, s.xer, s.fpscr) == (v["V_CR"], v["V_LR"], v["V_CTR"], v["V_XER"],
                                                   v["V_FPSCR"])
    for name in SPR_NAMES:
        if name not in ("TBL", "TBU", "DEC"):
            assert s.spr[name] == v[f"V_{name}"], name
    # DEC counts down from what the guest wrote, at the time base's rate (about 0.5 s so far)
    counted = v["V_DEC"] - s.spr["DEC"]
    assert 0.3 * TB_FREQ < counted < 3 * TB_FREQ
    # into a fresh machine: the guest goes on spinning at the same place with the same state
    other = machines("regs", "usage")
    other.set_state(s)
    assert _without_time(other.get_state()) == _without_time(s)
    other.memory.view[:] = m.memory.view
    assert other.run(seconds=0.2) is Stop.TIMEOUT
    after = other.get_state()
    assert _without_time(after) == _without_time(s)
    assert s.spr["DEC"] - after.spr["DEC"] > 0.1 * TB_FREQ        # ... and DEC went on counting


def test_exit_code_is_signed(machines):
    m = machines("osi_calls", "-3")
    m.run(seconds=0.3)
    m.frontend.feed(b"\n")
    assert m.run(seconds=5) is Stop.EXIT and m.exit_code == -3


def test_slices_keep_the_host_responsive(machines):
    m = make("bench", "spin 100000")   # minutes of compute without an OSI call
    try:
        t0 = time.monotonic()
        assert m.run(seconds=0.3) is Stop.TIMEOUT
        assert time.monotonic() - t0 < 1.0
        m.frontend.request = "quit"
        assert m.run() is Stop.QUIT
    finally:
        m.close()
