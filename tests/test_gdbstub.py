"""The GDB stub in-process: a minimal protocol client on a thread, the stub's run loop in the
test's thread, real guests on the real core. Hostile packets, exception handlers, F12 while
stopped, memory through the guest's translation."""

from __future__ import annotations

import socket
import threading

import pytest

from molpy import boot
from molpy.cpu import CpuState
from molpy.gdbstub import GdbServer, GdbStub, memory
from molpy.gdbstub.packets import PacketReader, frame
from molpy.machine import Machine, MachineConfig, Stop


class Client:
    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=60)
        self.reader = PacketReader()
        self.pending: list[bytes] = []

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def reply(self) -> bytes:
        while not self.pending:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("closed")
            self.pending += [p for kind, p in self.reader.feed(data) if kind == "packet"]
        return self.pending.pop(0)

    def ask(self, payload: bytes) -> bytes:
        self.send_raw(frame(payload))
        return self.reply()


def debug(guest: str, args: str, script):
    """Run ``guest`` under the stub; ``script(client)`` talks to it on a thread. Returns
    (stop, machine, what the script returned)."""
    m = Machine(MachineConfig(ram_mib=16))
    m.boot(str(boot.bundled_guest(guest)), args)
    server = GdbServer(0)
    stub = GdbStub(m, server, wait=True)
    out: dict = {}

    def run_script() -> None:
        c = Client(server.port)
        try:
            out["value"] = script(c)
        except BaseException as e:          # reported in the test's thread
            out["error"] = e
        finally:
            c.sock.close()

    th = threading.Thread(target=run_script)
    th.start()
    try:
        stop = stub.run()
        while stop is Stop.DEBUG:
            stop = stub.run()
        th.join(60)
        if "error" in out:
            raise out["error"]
        return stop, m, out.get("value"), stub
    finally:
        stub.close()
        m.close()


def test_hostile_packets_get_errors_and_the_guest_still_runs():
    def script(c: Client):
        c.send_raw(b"$m0,4#00")                        # bad checksum: dropped ('-' before no-ack)
        assert c.ask(b"QStartNoAckMode") == b"OK"
        replies = [c.ask(p) for p in (
            b"mffffff00,100",                            # outside RAM
            b"m10000,zz",                               # bad hex
            b"m123456789,4",                            # address over 32 bits
            b"M10000,4:00",                             # length and data disagree
            b"X10000,2:\x7d",                           # escape at the end
            b"p999", b"Pfff=00000000", b"P3=1234",      # no such register; wrong size
            b"G00",                                     # ends inside a register
            b"Z2,10000,0", b"Z2,fffffff0,100",          # empty, wrapping watch
            b"Z9,10000,4", b"qXfer:features:read:other.xml:0,10", b"qRcmd,zz",
            b"vCont;x", b"", b"\xff\xfe")]
        assert replies[:13] == [b"E14", b"E16", b"E16", b"E16", b"E16", b"E45", b"E45", b"E16", b"E16",
                                b"E16", b"E16", b"", b"E00"], replies
        assert c.ask(b"m10000,4") != b"E14"              # still serving
        c.send_raw(frame(b"c"))
        return c.reply()

    stop, m, last, _ = debug("gdb", "calls", script)
    assert stop is Stop.EXIT and m.exit_code == 7 and last == b"W07"


def test_breakpoint_in_an_exception_handler_hits():
    def script(c: Client):
        assert c.ask(b"Z0,700,4") == b"OK"             # the program-check vector (exc.elf's own)
        hits = []
        for _ in range(2):
            c.send_raw(frame(b"c"))
            assert c.reply().startswith(b"T05")
            hits.append(int(c.ask(b"p40"), 16))        # pc
            srr0 = int(c.ask(b"p%x" % (87)), 16)       # srr0: the instruction that raised
            assert 0x10000 <= srr0 < 0x20000
        assert c.ask(b"z0,700,4") == b"OK"
        c.send_raw(frame(b"c"))
        return hits, c.reply()

    stop, m, (hits, last), _ = debug("exc", "program", script)
    assert hits == [0x700, 0x700]
    assert stop is Stop.EXIT and last == b"W00" and m.exit_code == 0


def test_f12_while_stopped_returns_save_and_the_stub_serves_on():
    go_on = threading.Event()

    def script(c: Client):
        assert c.ask(b"?").startswith(b"S05")
        go_on.wait(60)
        pc = c.ask(b"p40")                             # still stopped, still served
        c.send_raw(frame(b"c"))
        return pc, c.reply()

    m = Machine(MachineConfig(ram_mib=16))
    m.boot(str(boot.bundled_guest("gdb")), "calls")
    entry = m.cpu.pc
    stub = GdbStub(m, GdbServer(0), wait=True)
    out: dict = {}
    th = threading.Thread(target=lambda: out.setdefault("v", script(Client(stub.server.port))))
    th.start()
    try:
        stub.wait_for_debugger()
        m.frontend.request = "save"                    # as F12 at the terminal
        assert stub.run() is Stop.SAVE
        go_on.set()
        assert stub.run() is Stop.EXIT
        th.join(60)
        assert out["v"] == (b"%08x" % entry, b"W07")
    finally:
        stub.close()
        m.close()


def test_memory_goes_through_the_data_translation():
    ram = bytearray(1 << 20)
    ram[0x2000:0x2004] = b"\xde\xad\xbe\xef"
    s = CpuState()
    s.msr = 0x10                                        # DR on
    s.spr["DBAT0U"] = 0xC0000000 | 0x2                  # 128 KiB at 0xC0000000, supervisor
    s.spr["DBAT0L"] = 0x00000000 | 0x2                  # -> physical 0, read/write
    assert memory.read(s, ram, 0xC0002000, 4) == b"\xde\xad\xbe\xef"
    with pytest.raises(memory.MemoryFault):
        memory.read(s, ram, 0x2000, 4)                  # no translation for the physical address
    changed = []
    memory.write(s, ram, 0xC0002000, b"\x01\x02", lambda a, b: changed.append((a, b)))
    assert ram[0x2000:0x2002] == b"\x01\x02" and changed == [(0x2000, 0x2002)]
    with pytest.raises(memory.MemoryFault):             # straddles into an unmapped page: nothing written
        memory.write(s, ram, 0xC001FFFE, b"\xff" * 4, lambda a, b: None)
    assert ram[0x1FFFE:0x20000] == b"\x00\x00"
    s.msr = 0                                            # DR off: physical
    assert memory.read(s, ram, 0x2000, 2) == b"\x01\x02"


@pytest.mark.parametrize("crash, signal", [("illegal", 4), ("unmapped", 11)])
def test_a_guest_fault_is_a_signal_stop_at_the_faulting_pc(crash, signal):
    def script(c: Client):
        c.send_raw(frame(b"c"))
        stop_reply = c.reply()
        pc = int(c.ask(b"p40"), 16)
        word = c.ask(b"m%x,4" % pc)
        c.send_raw(frame(b"c"))                          # the machine cannot go on
        return stop_reply, pc, word, c.reply()

    stop, m, (reply, pc, word, last), _ = debug("fault", crash, script)
    assert stop is Stop.FAULT
    assert reply.startswith(b"T%02x" % signal), reply
    assert pc == m.fault.pc
    if crash == "illegal":
        assert word == b"00000000"                       # the .long 0 it ran
    assert last == b"X%02x" % signal                    # ended by that signal
