"""Time one run of the bench guest (guest/tests/bench.c) in molpy: boot, run to its exit;
and the environment whole-process benchmarks run molpy in."""

from __future__ import annotations

import os
import time

from molpy import boot
from molpy.machine import Machine, MachineConfig, Stop


def timed_run(config: MachineConfig, args: str) -> float:
    """Seconds from the guest's first instruction to its exit(0); boot is not timed."""
    m = Machine(config)
    try:
        m.boot(str(boot.bundled_guest("bench")), args)
        t = time.perf_counter()
        stop = m.run()
        dt = time.perf_counter() - t
        assert stop is Stop.EXIT and m.exit_code == 0, (stop, m.exit_code)
        return dt
    finally:
        m.close()


def process_env(**extra: str) -> dict:
    """The environment for timing whole ``molpy`` processes: as a user's, Python caches
    molpy's bytecode (this workplace sets PYTHONDONTWRITEBYTECODE, which would time the
    compiling of molpy instead). Callers run each command once untimed first."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env.update(extra)
    return env
