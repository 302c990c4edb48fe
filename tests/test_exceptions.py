"""The PowerPC exception model on real guest code (guest/tests/exc.c, its own vectors at 0).

Each test boots the exception guest in one mode; the guest checks what its handlers saw
(SRR0, SRR1, DAR, DSISR, the mode they ran in) and exits 0 only when every check held.
The host side checks what molpy delivered (``ExceptionUnit.log``) and the fault reports
for what a machine cannot survive.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
import time

import pytest

from guestout import output

from molpy.boot import bundled_guest
from molpy.console import BufferConsole
from molpy.emulation.session import SessionError
from molpy.machine import Machine, MachineConfig, Stop
from molpy.timebase import TB_FREQ

EXC = str(bundled_guest("exc"))


def make(args: str, ram_mib: int = 16, session_file: str | None = None) -> Machine:
    m = Machine(MachineConfig(ram_mib=ram_mib, bootfile=EXC, boot_args=args, session_file=session_file),
                BufferConsole())
    m.exceptions.log = []
    m.boot()
    return m


@pytest.fixture
def machines(closing):
    return lambda *args, **kwargs: closing(make, *args, **kwargs)


def word_at(m: Machine, addr: int) -> int:
    """The big-endian word at guest-physical ``addr``."""
    return int.from_bytes(m.memory.view[addr:addr + 4], "big")


def run_ok(m: Machine, seconds: float = 10) -> str:
    stop = m.run(seconds=seconds)
    out = output(m)
    assert stop is Stop.EXIT, (stop, out, m.fault and m.fault.report())
    assert m.exit_code == 0, out
    assert out.endswith("ok\n")
    return out


def test_program_exceptions_are_delivered_and_skipped(machines):
    m = machines("program")
    out = run_ok(m)
    assert "program: 5 exceptions" in out
    assert "user mode: privileged 00040000 trap 00020000 sc c00" in out
    log = m.exceptions.log
    assert [d.vector for d in log] == [0x700] * 7 + [0xC00]
    reasons = [d.srr1 & 0x001F0000 for d in log[:7]]
    assert reasons == [0x80000, 0x80000, 0x20000, 0x20000, 0x20000, 0x40000, 0x20000]
    assert all(log[i].srr1 & 0x4000 for i in (5, 6, 7))          # taken in user mode
    # SRR0 is the instruction that raised: the guest read it back and decoded it
    words = [word_at(m, d.srr0) for d in log[:5]]
    assert words[0] == 0 and words[1] == 0x0000ABCD and words[2] == 0x7FE00008


def test_fp_unavailable_retries_and_enabled_fp_exception(machines):
    m = machines("fpu")
    out = run_ok(m)
    assert "fp unavailable: 1, then c=4375" in out
    assert "fp enabled exception: 1, srr1 00100000 at an fdiv" in out
    assert [d.vector for d in m.exceptions.log] == [0x800, 0x700]


def test_system_call_that_is_not_osi(machines):
    m = machines("syscall")
    out = run_ok(m)
    assert "syscall: 21 -> 43" in out and "user syscall: 100 -> 201" in out
    first = m.exceptions.log[0]
    assert first.vector == 0xC00 and word_at(m, first.srr0 - 4) == 0x44000002   # after the sc


def test_alignment_exception_on_a_misaligned_lwarx(machines):
    m = machines("align")
    out = run_ok(m)
    (d,) = m.exceptions.log
    assert d.vector == 0x600
    word = word_at(m, d.srr0)
    assert word >> 26 == 31 and (word >> 1) & 0x3FF == 20                   # lwarx
    assert re.search(r"alignment: dar=buf\+2 dsisr=", out)
    assert d.dsisr == ((word >> 21) & 31) << 5 | (word >> 16) & 31          # rD, rA; opcode bits 0


def test_hashed_page_table_filled_on_demand_by_dsi_and_isi(machines):
    m = machines("mmu")
    out = run_ok(m)
    assert "demand paging: 12 DSIs, sum c042" in out
    assert "store to a read-only page: dsisr 0a000000" in out
    assert "400 at 50000000: srr1 reason 40000000" in out        # no PTE
    assert "400 at 60000000: srr1 reason 10000000" in out        # no-execute segment
    dsis = [d for d in m.exceptions.log if d.vector == 0x300]
    assert [d.dsisr for d in dsis] == [0x40000000] * 6 + [0x42000000] * 6 + [0x0A000000]
    assert all(d.srr1 & 0x30 == 0x30 for d in m.exceptions.log)   # taken with IR and DR on
    isis = [d for d in m.exceptions.log if d.vector == 0x400]
    assert [(d.srr0, d.srr1 & 0x58000000) for d in isis] == [(0x50000000, 0x40000000),
                                                             (0x60000000, 0x10000000)]


def test_decrementer_ticks_with_ee_on(machines):
    m = machines("dec 20")
    t0 = time.monotonic()
    out = run_ok(m)
    ms = int(re.search(r"decrementer: 20 ticks in (\d+) ms", out).group(1))
    assert ms >= 19                          # 1 ms ticks: not early
    assert time.monotonic() - t0 >= 0.019
    assert all(d.vector == 0x900 and d.srr1 & 0x8000 for d in m.exceptions.log)


def test_time_base_advances(machines):
    m = machines("mftb")
    out = run_ok(m)
    sleep, busy = map(int, re.search(r"mftb: \+(\d+) ticks over a 10 ms sleep, \+(\d+) in a "
                                     r"1 ms busy wait \(\d+ reads\)", out).groups())
    assert sleep >= 0.01 * TB_FREQ                      # the host slept 10 ms: TB saw it
    # a busy wait on mftb ends, having seen 1 ms pass (how many reads that took depends on
    # the host's scheduling: one, once, when a loaded host descheduled molpy for 1 ms)
    assert busy >= 25000
    assert m.timeregs.native and m.timeregs.accesses > 1     # ... through the engine's time hook


def test_trace_single_steps(machines):
    m = machines("trace")
    out = run_ok(m)
    assert "trace: 4 steps" in out
    assert all(d.vector == 0xD00 for d in m.exceptions.log)


def test_external_interrupt(machines):
    m = machines("external")
    acks = []

    def ack() -> int:
        acks.append(True)
        m.exceptions.release_line("test")
        return 0

    m.osi.register(200, ack, 0, "test")
    assert m.run(seconds=0.05) is Stop.TIMEOUT and "waiting" in output(m)
    m.exceptions.assert_line("test")
    out = run_ok(m)
    assert "external: 1" in out and acks == [True]
    assert [d.vector for d in m.exceptions.log] == [0x500]


@pytest.mark.parametrize("mode, kind, detail", [
    ("double", "double fault: illegal instruction",
     "raised inside the program handler at 0x00000700 before it saved SRR0/SRR1"),
    ("novector", "alignment fault", "no handler: the alignment vector 0x00000600 holds no code"),
    ("noisi", "instruction fetch fault", "no handler: the ISI vector 0x00000400 holds no code"),
    ("ipvector", "illegal instruction", "no handler: the program vector 0xfff00700 is outside RAM (MSR[IP] = 1)"),
])
def test_what_a_machine_cannot_survive_is_a_fault_report(machines, mode, kind, detail):
    m = machines(mode)
    assert m.run(seconds=10) is Stop.FAULT
    report = m.fault.report()
    assert "still running" not in output(m)
    assert kind in report and detail in report


def test_fault_report_reads_the_pc_through_the_guests_translation(machines):
    """Issue 9: after MMU games the report named the word at the *physical* twin of the PC."""
    m = machines("badmap")
    assert m.run(seconds=10) is Stop.FAULT
    report = m.fault.report()
    assert m.fault.pc == 0x00500000
    assert word_at(m, 0x00500000) == 0x60000000        # the twin: a nop
    assert "0000abcd" in report and "60000000" not in report
    assert "virtual address: 0x00500000 -> physical 0x00400000 (page table" in report


def test_fault_report_says_when_the_pc_cannot_be_read(machines):
    m = machines("noisi")
    assert m.run(seconds=10) is Stop.FAULT
    report = m.fault.report()
    assert "(instruction not readable)" in report
    assert "not readable: 0x50000000 has no translation (no PTE in the page table)" in report


def test_any_virtual_address_may_hold_code(machines):
    """The run loop's end address is unaligned: no fetch at a BAT-mapped 0xFFFF0FFC matches it."""
    out = run_ok(machines("highmap"))
    assert "high virtual code returned 7" in out


def test_host_write_over_code_with_the_mmu_on(machines):
    """A device writing guest-physical RAM drops the translations of that physical range."""
    m = machines("codechange")

    def rewrite(addr: int) -> int:
        m.memory.write_u32(addr, 0x38600002)          # li r3, 2
        m.cpu.code_changed(addr, addr + 8)
        return 0

    m.osi.register(201, rewrite, 1, "test")
    out = run_ok(m)
    assert "code before 1, after the host's write 2" in out


def test_a_lower_bat_write_takes_effect(machines):
    """Unicorn keeps a BAT translation in its TLB across an mtspr to the lower BAT register;
    molpy's engine flushes the TLB when such a write changes it."""
    m = machines("batswap")
    out = run_ok(m)
    assert "dbat1 lower rewritten: aaaa then bbbb" in out


def mol_mticks_to_usecs(mticks: int) -> int:
    """MOL's timer.c on a 32-bit host: int -> unsigned long long (sign-extended) * 10^6 / freq."""
    wide = mticks - (1 << 32) if mticks >= 1 << 31 else mticks
    return ((wide % (1 << 64)) * 1_000_000 % (1 << 64)) // TB_FREQ % (1 << 32)


def mol_usecs_to_mticks(usecs: int) -> int:
    return TB_FREQ * usecs // 1_000_000 % (1 << 32)


def test_mol_timer_selectors(machines):
    out = run_ok(machines("timers"))
    pairs = re.findall(r"^(9[23]) ([0-9a-f]+) -> ([0-9a-f]+)$", out, re.M)
    assert len(pairs) == 14
    for sel, arg, res in pairs:
        model = mol_mticks_to_usecs if sel == "92" else mol_usecs_to_mticks
        assert int(res, 16) == model(int(arg, 16)), (sel, arg)


DETERMINISTIC = ["program", "fpu", "syscall", "align", "mmu", "trace", "bench-dsi 300"]


@pytest.mark.parametrize("mode", DETERMINISTIC)
def test_delivery_does_not_depend_on_slice_timing(mode):
    """Same guest, slices of 10 ms, 300 us and 20 us: the same exceptions, the same output."""
    seen = set()
    for slice_us in (10_000, 300, 20):
        m = make(mode)
        try:
            m.slice_us = slice_us
            assert m.run(seconds=20) is Stop.EXIT and m.exit_code == 0
            seen.add((tuple(m.exceptions.log), output(m), m.exceptions.delivered))
        finally:
            m.close()
    assert len(seen) == 1


def test_the_interrupt_hook_never_runs_the_engine(monkeypatch):
    """A nested emu_start (the SPR stub run from the hook) resets the slice's stop request."""
    import molpy.machine as machine_module

    inside = []
    real_start = machine_module._emu_start

    def emu_start(*args):
        inside.append(True)
        try:
            return real_start(*args)
        finally:
            inside.pop()

    monkeypatch.setattr(machine_module, "_emu_start", emu_start)
    m = make("badmap")       # demand paging, then a fault report (which reads every register)
    real_stub = m.cpu._run_stub
    nested = []

    def run_stub(*args, **kwargs):
        nested.append(bool(inside))
        return real_stub(*args, **kwargs)

    m.cpu._run_stub = run_stub
    try:
        assert m.run(seconds=10) is Stop.FAULT
    finally:
        m.close()
    assert nested and not any(nested)


def test_session_with_mmu_and_decrementer_resumes_in_another_process(tmp_path):
    reference = make("session 30")
    try:
        expect = run_ok(reference, seconds=30)
    finally:
        reference.close()
    path = tmp_path / "exc.session"
    m = make("session 30", session_file=str(path))
    try:
        for _ in range(1000):        # stop where the MMU is on and the decrementer counts down
            assert m.run(seconds=0.003) is Stop.TIMEOUT
            state = m.get_state()
            if "phase 2:" in output(m) and state.msr & 0x8030 == 0x8030 and 0 < state.spr["DEC"] <= 50000:
                break
        else:
            pytest.fail("the guest never stopped with the MMU on and a decrementer armed")
        before = output(m)
        assert "session done" not in before
        m.save_session()
    finally:
        m.close()
    script = textwrap.dedent(f"""
        import sys
        from molpy.console import BufferConsole
        from molpy.machine import Machine, Stop
        m = Machine.from_session({str(path)!r}, frontend=BufferConsole())
        stop = m.run(seconds=30)
        sys.stdout.write(bytes(m.frontend.output).decode())
        sys.exit(0 if stop is Stop.EXIT and m.exit_code == 0 else 1)
    """)
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert before + r.stdout == expect


def test_saved_decrementer_fires_its_remaining_time_after_resume(tmp_path):
    path = tmp_path / "dec.session"
    m = make("dec-once 300", session_file=str(path))
    try:
        while "armed" not in output(m):
            assert m.run(seconds=0.002) is Stop.TIMEOUT
        m.save_session()
    finally:
        m.close()
    from molpy.emulation.session import open_session
    s = open_session(str(path))
    try:
        saved = json.loads(s.small[(b"CPU ", 0)])["timebase"]
    finally:
        s.close()
    left = saved["dec"] / TB_FREQ
    assert 0.1 < left <= 0.3 and not saved["dec_pending"]
    script = textwrap.dedent(f"""
        import time
        from molpy.console import BufferConsole
        from molpy.machine import Machine, Stop
        m = Machine.from_session({str(path)!r}, frontend=BufferConsole())
        t = time.monotonic()
        stop = m.run(seconds=30)
        print(time.monotonic() - t, stop is Stop.EXIT and m.exit_code == 0,
              bytes(m.frontend.output).decode().split())
    """)
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    took, ok, words = r.stdout.split(" ", 2)
    assert ok == "True" and "tick" in words
    assert left * 0.95 <= float(took) <= left + 1.0        # neither at once nor never


def test_crafted_time_base_state_is_refused(tmp_path):
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from molpy.timebase import parse_state

    json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
                               lambda kids: st.lists(kids) | st.dictionaries(st.text(), kids), max_leaves=8)
    fields = st.fixed_dictionaries({"tb": json_values, "dec": json_values, "dec_pending": json_values})

    @settings(max_examples=300, deadline=None)
    @given(st.one_of(json_values, fields))
    def check(value):
        try:
            parsed = parse_state(value)
        except ValueError:
            return
        assert 0 <= parsed["tb"] < 1 << 64 and 0 <= parsed["dec"] < 1 << 32
        assert type(parsed["dec_pending"]) is bool

    check()
    for bad in ({"tb": 1 << 64, "dec": 0, "dec_pending": False}, {"tb": 0, "dec": -1, "dec_pending": False},
                {"tb": 0, "dec": 0, "dec_pending": 1}, {"tb": True, "dec": 0, "dec_pending": False},
                {"tb": 0, "dec": 0}, [0, 0, False]):
        with pytest.raises(ValueError):
            parse_state(bad)


def test_session_with_a_crafted_time_base_is_refused(tmp_path):
    """A resealed session whose time base is out of range: one line, no traceback."""
    from molpy.emulation import session_write

    path = tmp_path / "t.session"
    m = make("mftb", session_file=str(path))
    try:
        m.run(seconds=0.01)
        cpu = m.get_state().as_dict()
        cpu["timebase"] = {"tb": -5, "dec": 0, "dec_pending": False}
        devices = [(d.kind, d.instance, d.save_state()) for d in m.devices]
        session_write.write_session(str(path), m.memory.view, cpu, devices, m.config.config_checksum)
    finally:
        m.close()
    with pytest.raises(SessionError, match="damaged.*time base value out of range"):
        Machine.from_session(str(path), MachineConfig(session_file=str(path), session_readonly=True))
