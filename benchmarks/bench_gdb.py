"""The GDB stub's cost: guest compute (gdb.elf "compute N") with the stub against without it.

Three runs of the same guest in one process, side by side: no stub (the reference); the
stub listening with no debugger (``--gdb PORT --gdb-no-wait``); a debugger attached that
set 10 breakpoints on code the loop never runs and continued (the time from its continue
to the W packet). The debugger here is a minimal client speaking the remote protocol, so
the measurement holds no gdb start-up.
"""

from __future__ import annotations

import socket
import statistics
import threading
import time

from elftools.elf.elffile import ELFFile

from molpy import boot
from molpy.gdbstub import GdbServer, GdbStub
from molpy.gdbstub.packets import PacketReader, frame
from molpy.machine import Machine, MachineConfig, Stop

from .bench_core import RAM_MIB, REPEATS

MILLIONS = 600
ARGS = f"compute {MILLIONS}"
BREAK_AT = ("gdb_add", "gdb_store", "gdb_identity", "gdb_spin", "gdb_unused")


def _symbols(path: str) -> dict[str, int]:
    with open(path, "rb") as f:
        tab = ELFFile(f).get_section_by_name(".symtab")
        return {s.name: s["st_value"] for s in tab.iter_symbols()}


def _ten_breakpoints(path: str) -> list[int]:
    syms = _symbols(path)
    return [syms[name] + 4 * k for name in BREAK_AT for k in (0, 1)]


def _machine() -> Machine:
    m = Machine(MachineConfig(ram_mib=RAM_MIB))
    m.boot(str(boot.bundled_guest("gdb")), ARGS)
    return m


def _timed(run, m, *closing) -> float:
    """Seconds of ``run()`` (machine ``m`` from its first instruction to exit(0)); then close."""
    try:
        t = time.perf_counter()
        stop = run()
        dt = time.perf_counter() - t
        assert stop is Stop.EXIT and m.exit_code == 0, (stop, m.exit_code)
        return dt
    finally:
        for thing in (*closing, m):
            thing.close()


def _plain() -> float:
    m = _machine()
    return _timed(m.run, m)


def _listening() -> float:
    m = _machine()
    stub = GdbStub(m, GdbServer(0), wait=False)
    return _timed(stub.run, m, stub)


class _Client:
    """Just enough of gdb: send a packet, read the reply."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.reader = PacketReader()
        self.pending: list[bytes] = []

    def ask(self, payload: bytes) -> bytes:
        self.sock.sendall(frame(payload))
        while not self.pending:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("the stub closed the connection")
            self.pending += [p for kind, p in self.reader.feed(data) if kind == "packet"]
        return self.pending.pop(0)


def _ten_breaks() -> float:
    m = _machine()
    server = GdbServer(0)
    stub = GdbStub(m, server, wait=True)
    result: dict = {}

    def debugger() -> None:
        c = _Client(server.port)
        assert c.ask(b"?").startswith(b"S05")
        for addr in _ten_breakpoints(str(boot.bundled_guest("gdb"))):
            assert c.ask(b"Z0,%x,4" % addr) == b"OK"
        t = time.perf_counter()
        result["reply"] = c.ask(b"c")
        result["seconds"] = time.perf_counter() - t
        c.sock.close()

    th = threading.Thread(target=debugger)
    th.start()
    try:
        stop = stub.run()
        th.join()
        assert stop is Stop.EXIT and result["reply"] == b"W00", (stop, result)
        return result["seconds"]
    finally:
        stub.close()
        m.close()


def run() -> list[dict]:
    plain, listening, breaks = [], [], []
    for _ in range(REPEATS):               # interleaved: drift hits all three alike
        plain.append(_plain())
        listening.append(_listening())
        breaks.append(_ten_breaks())
    p, ls, b = (statistics.median(x) for x in (plain, listening, breaks))
    iters = MILLIONS * 1e6
    return [
        {"name": "guest compute, gdb stub listening, no debugger", "molpy": iters / ls / 1e6,
         "reference": iters / p / 1e6, "unit": "M loop iterations/s", "ratio": p / ls, "target": ">= 0.95",
         "note": "reference: the same guest without the stub, same process"},
        {"name": "guest compute, debugger attached, 10 breakpoints elsewhere", "molpy": iters / b / 1e6,
         "reference": iters / p / 1e6, "unit": "M loop iterations/s", "ratio": p / b, "target": ">= 0.5",
         "note": "from the debugger's continue to its W packet; breakpoints in code the loop never runs"},
    ]
