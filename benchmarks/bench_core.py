"""Guest compute speed and OSI round trip: molpy against bare Unicorn, same guest, same run.

The guest is the bundled bench.elf: ``spin N`` runs N million iterations of a
3-instruction loop; ``osi N`` makes N thousand OSI CALL_AVAILABLE calls. Bare
Unicorn runs the same ELF from the same entry state with no slicing and (for the
round trip) a do-nothing Python interrupt hook through the ordinary binding.
"""

from __future__ import annotations

import statistics
import time

from unicorn import UC_ARCH_PPC, UC_HOOK_INTR, UC_MODE_BIG_ENDIAN, UC_MODE_PPC32, UC_PROT_ALL, Uc, UcError
from unicorn import ppc_const as P

from molpy import boot
from molpy.cpu import cpu_model
from molpy.machine import MachineConfig

from .guest_run import timed_run

RAM_MIB = 64
SPIN_MILLIONS = 100
INSNS_PER_ITERATION = 3
OSI_THOUSANDS = 200
REPEATS = 3


def _molpy(args: str) -> float:
    return timed_run(MachineConfig(ram_mib=RAM_MIB), args)


def _bare(args: str, hooked: bool) -> float:
    uc = Uc(UC_ARCH_PPC, UC_MODE_PPC32 | UC_MODE_BIG_ENDIAN)
    uc.ctl_set_cpu_model(cpu_model(None))
    size = RAM_MIB << 20
    uc.mem_map(0, size, UC_PROT_ALL)
    entry, segments = boot.read_elf(boot.bundled_guest("bench"), size)
    for seg in segments:
        uc.mem_write(seg.paddr, seg.data)
    args_addr = size - boot.ARGS_PAGE
    uc.mem_write(args_addr, args.encode() + b"\0")
    state = boot.boot_state(entry, size, args_addr)
    for i, v in enumerate(state.gpr):
        uc.reg_write(P.UC_PPC_REG_0 + i, v)
    uc.reg_write(P.UC_PPC_REG_MSR, state.msr)
    done = []

    def hook(uc, intno, _):
        if uc.reg_read(P.UC_PPC_REG_5) == 54:     # OSI EXIT ends the run
            done.append(True)
            uc.emu_stop()

    if hooked:
        uc.hook_add(UC_HOOK_INTR, hook)
    t = time.perf_counter()
    try:
        uc.emu_start(entry, 0xFFFFFFFC)
    except UcError:
        pass   # unhooked: the final OSI EXIT `sc` ends emulation with UC_ERR_EXCEPTION
    return time.perf_counter() - t


def run() -> list[dict]:
    spin = f"spin {SPIN_MILLIONS}"
    molpy_t = statistics.median(_molpy(spin) for _ in range(REPEATS))
    bare_t = statistics.median(_bare(spin, hooked=False) for _ in range(REPEATS))
    insns = SPIN_MILLIONS * 1e6 * INSNS_PER_ITERATION
    osi = f"osi {OSI_THOUSANDS}"
    calls = OSI_THOUSANDS * 1000
    molpy_osi = statistics.median(_molpy(osi) for _ in range(REPEATS)) / calls * 1e6
    bare_osi = statistics.median(_bare(osi, hooked=True) for _ in range(REPEATS)) / calls * 1e6
    return [
        {"name": "guest compute speed (spin loop)", "molpy": insns / molpy_t / 1e6,
         "reference": insns / bare_t / 1e6, "unit": "MIPS", "ratio": bare_t / molpy_t,
         "target": ">= 0.90", "note": "reference: bare Unicorn, no hooks, one emu_start"},
        {"name": "OSI call round trip", "molpy": molpy_osi, "reference": bare_osi, "unit": "us/call",
         "ratio": bare_osi / molpy_osi, "target": "<= 2 us",
         "note": "reference: do-nothing Python INTR hook (binding)"},
    ]
