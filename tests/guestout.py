"""What tests read back from a guest."""

from __future__ import annotations

from molpy.console import BufferConsole
from molpy.machine import Machine, MachineConfig, Stop


def output(m) -> str:
    """What a machine's BufferConsole received from the guest."""
    return bytes(m.frontend.output).decode()


def run_to_exit(config: MachineConfig, keys: bytes = b"", seconds: float = 30) -> tuple[int, str]:
    """Boot ``config``'s guest with ``keys`` waiting, run it until it exits: (exit code, output)."""
    m = Machine(config, BufferConsole(keys))
    try:
        m.boot()
        stop = m.run(seconds=seconds)
        assert stop is Stop.EXIT, (stop, m.fault and m.fault.report())
        return m.exit_code, output(m)
    finally:
        m.close()
