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


def debug(guest: str | Machine, args: str, script):
    """Run ``guest`` (a bundled guest's name, or a machine ready to run) under the stub;
    ``script(client)`` talks to it on a thread. Returns (stop, machine, what the script
    returned, the stub)."""
    if isinstance(guest, Machine):
        m = guest
    else:
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


# -- guest time and interrupts while gdb holds the guest --

DEC_VECTOR, MAIN = 0x900, 0x10000
DEC_HANDLER = [                # at 0x900: count the interrupt in r20, DEC far away again
    0x3A940001,                # addi  r20, r20, 1
    0x3C007FFF,                # lis   r0, 0x7fff
    0x7C1603A6,                # mtdec r0
    0x4C000064,                # rfi
]
DEC_DUE = [                    # at 0x10000, MSR[EE] off
    0x3A800000,                # li    r20, 0
    0x38000000,                # li    r0, 0
    0x7C1603A6,                # mtdec r0          DEC passes zero one tick later
    0x7C7602A6,                # 1: mfdec r3
    0x2C030000,                # cmpwi r3, 0
    0x4080FFF8,                # bge   1b          until it has: a decrementer is now due
    0x60000000,                # nop               BREAK
    0x7ECC42E6,                # mftb  r22         NEXT: the guest's time after a resume
    0x3C601137, 0x606324FA,    # r3 = OSI magic 1
    0x3C807781, 0x60840F9B,    # r4 = OSI magic 2
    0x38A00036,                # li    r5, 54      OSI EXIT
    0x7E86A378,                # mr    r6, r20     the status: decrementer interrupts taken
    0x3CE04558, 0x60E74954,    # r7 = 'EXIT'
    0x44000002,                # sc
    0x48000000,                # b .
]
BREAK, NEXT = MAIN + 4 * 6, MAIN + 4 * 7
MSR_EE, MSR_ME = 0x8000, 0x1000


def dec_due_machine() -> Machine:
    """A guest stopped at BREAK (by a breakpoint) has a decrementer due and MSR[EE] off."""
    from molpy.machine import FRESH_TIMEBASE

    m = Machine(MachineConfig(ram_mib=16))
    ram = m.memory.view
    for base, words in ((DEC_VECTOR, DEC_HANDLER), (MAIN, DEC_DUE)):
        ram[base:base + 4 * len(words)] = b"".join(w.to_bytes(4, "big") for w in words)
    s = CpuState()
    s.pc, s.msr = MAIN, MSR_ME
    m.set_state(s, FRESH_TIMEBASE)
    return m


def reg(c: Client, name: str) -> int:
    from molpy.gdbstub.registers import BY_NAME

    return int(c.ask(b"p%x" % BY_NAME[name]), 16)


def test_guest_time_stands_still_and_a_step_holds_a_due_decrementer():
    """The decrementer is due at the breakpoint; gdb turns MSR[EE] on and steps: the step
    lands on the next instruction (not in the 0x900 handler). gdb holds the guest for
    50 ms of host time, then steps over an mftb: the guest's TB has moved on from where
    it stopped by no more than the host time that step took (not by the 50 ms). The
    interrupt is taken, once, when gdb continues."""
    import time

    from molpy.gdbstub.registers import BY_NAME

    def script(c: Client):
        assert c.ask(b"Z0,%x,4" % BREAK) == b"OK"
        c.send_raw(frame(b"c"))
        assert c.reply().startswith(b"T05"), "the breakpoint"
        at, dec = reg(c, "pc"), reg(c, "dec")
        assert c.ask(b"z0,%x,4" % BREAK) == b"OK"
        msr = reg(c, "msr")
        assert c.ask(b"P%x=%08x" % (BY_NAME["msr"], msr | MSR_EE)) == b"OK"
        c.send_raw(frame(b"s"))
        assert c.reply().startswith(b"T05"), "the step"
        stepped = reg(c, "pc"), reg(c, "r20"), reg(c, "msr") & MSR_EE
        tbl = reg(c, "tbl")
        held = time.monotonic_ns()
        while time.monotonic_ns() - held < 50_000_000:     # gdb holds the guest 50 ms
            assert c.ask(b"?").startswith(b"T05")
        sent = time.monotonic_ns()
        c.send_raw(frame(b"s"))                           # mftb r22
        assert c.reply().startswith(b"T05"), "the second step"
        took = time.monotonic_ns() - sent
        after = reg(c, "pc"), reg(c, "r20"), reg(c, "r22")
        c.send_raw(frame(b"c"))
        return at, dec, stepped, (tbl, took), after, c.reply()

    stop, m, (at, dec, stepped, (tbl, took), after, last), _ = debug(dec_due_machine(), "", script)
    assert at == BREAK and dec & 0x80000000, "DEC has passed zero: the interrupt is due"
    assert stepped == (NEXT, 0, MSR_EE), "the step took the due interrupt"
    assert after[:2] == (NEXT + 4, 0), "the step over mftb took the due interrupt"
    moved = (after[2] - tbl) & 0xFFFFFFFF                # ticks of 40 ns
    assert moved <= took * 25 // 1000 + 1, f"guest time moved {moved} ticks while gdb held the guest"
    assert stop is Stop.EXIT and last == b"W01" and m.exit_code == 1   # taken once, on continue


@pytest.mark.parametrize("source", ["decrementer", "external"])
def test_a_debugger_step_holds_asynchronous_interrupts(source):
    """Machine.run(step=True) runs the instruction at the PC even with an interrupt due and
    MSR[EE] on; the next run takes it."""
    m = dec_due_machine()
    try:
        s = m.get_state()
        s.pc, s.msr = BREAK, MSR_ME | MSR_EE
        m.set_state(s, {"tb": 0, "dec": 0xFFFFFFFF if source == "decrementer" else 0x7FFFFFFF,
                        "dec_pending": source == "decrementer"})
        if source == "external":
            m.exceptions.assert_line("test")
        assert m.run(step=True) is Stop.DEBUG
        assert m.cpu.pc == NEXT and m.exceptions.delivered == 0
        assert m.run(step=True) is Stop.DEBUG
        assert m.cpu.pc == NEXT + 4 and m.exceptions.delivered == 0
        if source == "external":
            m.exceptions.release_line("test")
            m.timebase.dec_pending = True
        assert m.run() is Stop.EXIT and m.exit_code == 1
        assert m.exceptions.delivered == 1
    finally:
        m.close()


def test_a_step_runs_its_instruction_where_a_time_base_instruction_is_first_seen():
    """Stepping into code never translated before, whose block holds an mtdec: molpy's scan
    stops the engine before the block to hook the mtdec, and the step still runs one
    instruction (here the handler's first, then the hooked mtdec itself)."""
    m = dec_due_machine()
    try:
        s = m.get_state()
        s.pc, s.gpr[20] = DEC_VECTOR, 5
        m.set_state(s)
        assert m.run(step=True) is Stop.DEBUG
        assert (m.cpu.pc, m.cpu.reg(20)) == (DEC_VECTOR + 4, 6)
        assert m.run(step=True) is Stop.DEBUG and m.cpu.pc == DEC_VECTOR + 8
        assert m.run(step=True) is Stop.DEBUG and m.cpu.pc == DEC_VECTOR + 12
        assert m.timebase.dec() & 0x80000000 == 0 and m.timebase.dec() > 0x7FF00000   # the mtdec ran
    finally:
        m.close()
