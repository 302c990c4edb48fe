"""Exception delivery and the time base, each beside a reference.

Delivery: the exception guest (guest/tests/exc.c) takes N page faults with the MMU on
(DSI, handler maps a page, the guest unmaps it again), N system calls that are not OSI
calls, N illegal instructions; exceptions per second against molpy's OSI call rate (the
bench guest, same run). Time base: the cost of the mechanism molpy uses for mftb (hooks
limited to the instructions' addresses, found when a block is translated) against what it
would cost otherwise: a UC_HOOK_CODE on every instruction or a UC_HOOK_BLOCK on every
block, on the compute loop of bench_core; the cost of one hooked mftb read; and the
translation-time cost of the site finder per new block.
"""

from __future__ import annotations

import statistics
import time

from unicorn import UC_HOOK_BLOCK, UC_HOOK_CODE

from molpy import boot
from molpy.console import BufferConsole
from molpy.cpu import Cpu, CpuState
from molpy.cpuenv import CpuEnv
from molpy.machine import Machine, MachineConfig, Stop
from molpy.timebase import TimeBase
from molpy.sites import Sites

from .bench_core import _bare
from .guest_run import timed_run

REPEATS = 3
FAULTS = 20_000
OSI_THOUSANDS = 100
HOOKED_MILLIONS = 1          # the loop with a hook on every instruction runs ~500x slower
BLOCKS = 4000


def _exc(args: str) -> tuple[float, int]:
    """Seconds for the exception guest to run ``args`` to exit 0, and exceptions delivered."""
    m = Machine(MachineConfig(ram_mib=16, bootfile=str(boot.bundled_guest("exc")), boot_args=args),
                BufferConsole())
    try:
        m.boot()
        t = time.perf_counter()
        stop = m.run()
        dt = time.perf_counter() - t
        assert stop is Stop.EXIT and m.exit_code == 0, (stop, m.exit_code, bytes(m.frontend.output))
        return dt, m.exceptions.delivered
    finally:
        m.close()


def _rate(args: str) -> float:
    best = []
    for _ in range(REPEATS):
        dt, n = _exc(args)
        best.append(n / dt)
    return statistics.median(best)


def _spin_with_hook(kind: int) -> float:
    """bench_core's spin loop in molpy with one more hook over all code (a rejected design)."""
    m = Machine(MachineConfig(ram_mib=64))
    try:
        m.boot(str(boot.bundled_guest("bench")), f"spin {HOOKED_MILLIONS}")
        if kind == UC_HOOK_CODE:
            m.cpu.uc.hook_add(UC_HOOK_CODE, lambda *a: None, begin=0, end=0xFFFFFFFF)
        else:
            m.cpu.uc.hook_add(UC_HOOK_BLOCK, lambda *a: None, begin=0, end=0xFFFFFFFF)
        t = time.perf_counter()
        assert m.run() is Stop.EXIT
        return time.perf_counter() - t
    finally:
        m.close()


def _mftb_read_us() -> float:
    """One hooked mftb: the exception guest's 1 ms busy wait reads the time base in a loop."""
    m = Machine(MachineConfig(ram_mib=16, bootfile=str(boot.bundled_guest("exc")), boot_args="mftb"),
                BufferConsole())
    try:
        m.boot()
        assert m.run() is Stop.EXIT and m.exit_code == 0
        out = bytes(m.frontend.output).decode()
        busy, reads = out.split("+")[2].split(" in a 1 ms busy wait (")
        ticks, n = int(busy.split()[0]), int(reads.split()[0])
        return ticks / 25.0 / n / 3          # 25 ticks a microsecond; mftbu, mftb, mftbu a read
    finally:
        m.close()


def _blocks(with_finder: bool) -> float:
    """Seconds to translate and run BLOCKS new blocks (addi; b .+4), with or without the finder."""
    cpu = Cpu()
    size = 1 << 20
    cpu.uc.mem_map(0, size)
    code = b"".join((0x38630001).to_bytes(4, "big") + (0x48000004).to_bytes(4, "big") for _ in range(BLOCKS))
    cpu.uc.mem_write(0x1000, code)
    end = 0x1000 + len(code)
    sites = None
    if with_finder:
        env = CpuEnv(cpu)
        ram = memoryview(bytearray(size))
        ram[0x1000:end] = code
        errors: list = []
        sites = Sites(cpu, env, ram, TimeBase(), lambda: None, errors.append)
    times = []
    for _ in range(5):
        cpu.set_state(CpuState(msr=0x3000, pc=0x1000))
        cpu.uc.ctl_flush_tb()
        t = time.perf_counter()
        cpu.uc.emu_start(0x1000, end)
        times.append(time.perf_counter() - t)
    if sites:
        sites.close()
        env.close()
        assert not errors, errors
    return min(times)


def run() -> list[dict]:
    osi_us = statistics.median(timed_run(MachineConfig(ram_mib=64), f"osi {OSI_THOUSANDS}")
                               for _ in range(REPEATS)) / (OSI_THOUSANDS * 1000) * 1e6
    osi_rate = 1e6 / osi_us
    rows = []
    for args, name in ((f"bench-dsi {FAULTS}", "exceptions delivered: page faults, MMU on (DSI)"),
                       (f"bench-sc {FAULTS}", "exceptions delivered: system calls that are not OSI"),
                       (f"bench-prog {FAULTS}", "exceptions delivered: illegal instructions skipped")):
        rate = _rate(args)
        rows.append({"name": name, "molpy": rate, "reference": osi_rate, "unit": "per s",
                     "ratio": rate / osi_rate, "target": "-",
                     "note": f"reference: OSI calls per second (round trip {osi_us:.2f} us), same run; "
                             f"molpy: {1e6 / rate:.1f} us per exception, handler included"})
    bare = statistics.median(_bare(f"spin {HOOKED_MILLIONS}", hooked=False) for _ in range(REPEATS))
    insns = HOOKED_MILLIONS * 1e6 * 3
    for kind, name in ((UC_HOOK_CODE, "UC_HOOK_CODE on every instruction"),
                       (UC_HOOK_BLOCK, "UC_HOOK_BLOCK on every block")):
        t = statistics.median(_spin_with_hook(kind) for _ in range(REPEATS))
        rows.append({"name": f"time base by {name} (rejected): spin loop", "molpy": insns / t / 1e6,
                     "reference": insns / bare / 1e6, "unit": "MIPS", "ratio": bare / t, "target": "-",
                     "note": "reference: bare Unicorn; molpy's own mechanism is bench_core's compute row"})
    mftb = statistics.median(_mftb_read_us() for _ in range(REPEATS))
    rows.append({"name": "time base read (mftb at a hooked site)", "molpy": mftb, "reference": osi_us,
                 "unit": "us", "ratio": osi_us / mftb, "target": "-",
                 "note": "reference: an OSI call round trip, same run"})
    with_finder = statistics.median(_blocks(True) for _ in range(REPEATS))
    without = statistics.median(_blocks(False) for _ in range(REPEATS))
    rows.append({"name": "block translation with the time-base site finder", "molpy": with_finder / BLOCKS * 1e6,
                 "reference": without / BLOCKS * 1e6, "unit": "us/block", "ratio": without / with_finder,
                 "target": "-", "note": f"reference: the same {BLOCKS} new blocks (translated and run once) "
                                        "without it; paid once per block while it stays cached"})
    return rows
