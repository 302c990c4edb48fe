"""Helpers for the firmware-service tests: the osi_probe guest driven by a script.

The probe guest reads commands from its TTY (see guest/tests/osi_probe.c) and answers
each on its own line; ``Probe`` boots it on a fresh machine and returns the answers
parsed into register values or bytes.
"""

from __future__ import annotations

from molpy.boot import bundled_guest
from molpy.console import BufferConsole
from molpy.machine import Machine, MachineConfig, Stop

MASK = 0xFFFFFFFF
SCRATCH = 0x100000          # guest RAM the tests use for names, paths and buffers (16 MiB RAM)


def signed(v: int) -> int:
    return v - (1 << 32) if v & 0x80000000 else v


class Probe:
    """A script for the probe guest: queue commands, ``run()``, read the answers in order."""

    def __init__(self, **config) -> None:
        config.setdefault("ram_mib", 16)
        self.config = MachineConfig(bootfile=str(bundled_guest("osi_probe")), **config)
        self.lines: list[str] = []
        self.machine: Machine | None = None

    def call(self, sel: int, *args: int) -> None:
        self.lines.append("c %d %s" % (sel, " ".join(str(a & MASK) for a in (list(args) + [0] * 6)[:6])))

    def store(self, addr: int, text: str | bytes) -> None:
        if isinstance(text, str):
            self.lines.append(f"s {addr} {text}")
        else:
            self.lines.append(f"x {addr} {text.hex()}")

    def dump(self, addr: int, length: int) -> None:
        self.lines.append(f"d {addr} {length}")

    def run(self, keep: bool = False, extra: str = "q") -> list:
        """Boot, feed the script, run to the end; the answers, one per command.

        ``extra`` is the last line (``q`` exits); with ``extra=""`` the guest is left
        waiting for more once every command is answered (``keep`` keeps the machine).
        """
        keys = "".join(line + "\n" for line in self.lines + ([extra] if extra else []))
        m = Machine(self.config, BufferConsole(keys.encode()))
        self.machine = m
        try:
            m.boot()
            if extra:
                stop = m.run(seconds=60)
                assert stop is Stop.EXIT, (stop, m.fault and m.fault.report())
            else:
                for _ in range(1200):
                    stop = m.run(seconds=0.05)
                    assert stop is Stop.TIMEOUT, (stop, m.fault and m.fault.report())
                    if self._answered(m):
                        break
                else:
                    raise AssertionError("the probe did not answer every command")
            out = bytes(m.frontend.output).decode("latin-1").splitlines()
        finally:
            if not keep:
                m.close()
        assert out[0] == "probe ready", out[:3]
        answers = []
        for line in out[1:]:
            if line.startswith("> ") or not line:
                continue
            if line.startswith("= "):
                words = line[2:].split()
                if len(words) == 6:
                    answers.append(tuple(int(w, 16) for w in words))
                else:
                    answers.append(bytes.fromhex(words[0]))
            elif line == "=":
                answers.append(b"")
            else:
                answers.append(line)
        return [a for a in answers if a != "ok"]

    def _answered(self, m: Machine) -> bool:
        out = bytes(m.frontend.output).decode("latin-1")
        echoes = out.count("\n> ")
        return echoes == len(self.lines) and out.endswith("\n") and \
            not out.rstrip("\n").splitlines()[-1].startswith("> ")
