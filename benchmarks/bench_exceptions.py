"""Exception delivery and the time base, each beside a reference.

Delivery: the exception guest (guest/tests/exc.c) takes N page faults with the MMU on
(DSI, handler maps a page, the guest unmaps it again), N system calls that are not OSI
calls, N illegal instructions; exceptions per second against molpy's OSI call rate (the
bench guest, same run). Time base: molpy's engine calls molpy only where the guest reads
or writes TB/DEC (molpy/timeregs.py); what a hook would cost otherwise, a UC_HOOK_CODE on
every instruction or a UC_HOOK_BLOCK on every block, on the compute loop of bench_core;
and the cost of one mftb read through the engine's time hook.
"""

from __future__ import annotations

import statistics
import time

from unicorn import UC_HOOK_BLOCK, UC_HOOK_CODE

from molpy import boot
from molpy.console import BufferConsole
from molpy.machine import Machine, MachineConfig, Stop

from .bench_core import _bare
from .guest_run import timed_run

REPEATS = 3
FAULTS = 20_000
OSI_THOUSANDS = 100
HOOKED_MILLIONS = 1          # the loop with a hook on every instruction runs ~500x slower


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
    """One mftb through the engine's time hook: the exception guest's 1 ms busy wait reads
    the time base in a loop."""
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
    rows.append({"name": "time base read (mftb through the engine's time hook)", "molpy": mftb, "reference": osi_us,
                 "unit": "us", "ratio": osi_us / mftb, "target": "-",
                 "note": "reference: an OSI call round trip, same run"})
    return rows
