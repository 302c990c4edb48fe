"""The CPU's full register state: every register, SPR and SR survives get/set, in any engine."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from molpy.cpu import SPR_NAMES, Cpu, CpuState, cpu_model

import pytest

u32 = st.integers(0, 0xFFFFFFFF)
u64 = st.integers(0, 0xFFFFFFFFFFFFFFFF)
# Time base: Unicorn's always reads 0 and ignores writes.
SETTABLE_SPRS = [n for n in SPR_NAMES if n not in ("TBL", "TBU")]


@st.composite
def cpu_states(draw) -> CpuState:
    return CpuState(
        gpr=draw(st.lists(u32, min_size=32, max_size=32)),
        fpr=draw(st.lists(u64, min_size=32, max_size=32)),
        cr=draw(u32), lr=draw(u32), ctr=draw(u32),
        xer=draw(u32) & 0xE000007F,           # the bits a 750 keeps
        msr=draw(st.sampled_from([0x3000, 0x3030, 0x2000, 0xB032])),
        pc=draw(u32) & ~3,
        fpscr=draw(u32) & 0x000000FF,
        spr={**{n: draw(u32) for n in SETTABLE_SPRS}, "TBL": 0, "TBU": 0},
        sr=draw(st.lists(u32.map(lambda v: v & 0xF0FFFFFF), min_size=16, max_size=16)),
    )


_cpu = Cpu()


@settings(max_examples=60, deadline=None)
@given(cpu_states())
def test_state_round_trip(state):
    _cpu.set_state(state)
    got = _cpu.get_state()
    again = Cpu()
    again.set_state(got)
    assert again.get_state() == got
    assert got.gpr == state.gpr and got.fpr == state.fpr
    assert (got.cr, got.lr, got.ctr, got.pc, got.xer) == (state.cr, state.lr, state.ctr, state.pc, state.xer)
    assert got.sr == state.sr


def test_every_spr_is_reached():
    """Distinct values in every SPR come back distinct: the stub reads and writes them all."""
    state = CpuState(msr=0x3000, pc=0x10000)
    for i, name in enumerate(SETTABLE_SPRS):
        state.spr[name] = 0x01000000 * (i % 7 + 1) + 0x1000 * i + 0x10
    state.sr = [0x20000000 + 0x111 * i for i in range(16)]
    cpu = Cpu()
    cpu.set_state(state)
    got = cpu.get_state()
    for name in ("SRR0", "SRR1", "SPRG0", "SPRG1", "SPRG2", "SPRG3", "DAR", "SDR1", "DEC", "EAR",
                 *[f"{k}BAT{i}{h}" for k in "ID" for i in range(4) for h in "UL"]):
        assert got.spr[name] != 0, name
    assert got.sr == state.sr
    assert got.spr["SRR0"] == state.spr["SRR0"]
    assert got.spr["SPRG3"] == state.spr["SPRG3"]


def test_get_state_does_not_disturb_the_guest():
    cpu = Cpu()
    s = CpuState(msr=0x3030, pc=0x4000, gpr=list(range(100, 132)))
    cpu.set_state(s)
    first = cpu.get_state()
    assert cpu.get_state() == first
    assert first.msr == 0x3030 and first.pc == 0x4000 and first.gpr[3] == 103


def test_cpu_models():
    assert cpu_model(None) == cpu_model("750") == cpu_model("G3")
    assert cpu_model("g4") != cpu_model("750")
    Cpu("7400")
    with pytest.raises(ValueError, match="unknown cpu"):
        cpu_model("pentium")


def test_state_dict_round_trip():
    s = CpuState(gpr=list(range(32)), msr=0x3000)
    assert CpuState.from_dict(s.as_dict()) == s
    bad = s.as_dict()
    bad["gpr"] = [0] * 31
    with pytest.raises(ValueError):
        CpuState.from_dict(bad)
