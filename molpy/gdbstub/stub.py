"""The stub: gdb's packets answered between slices, and a run loop with Machine.run's contract.

``GdbStub.run()`` returns what ``Machine.run()`` returns (EXIT, FAULT, SAVE, QUIT,
INTERRUPT, TIMEOUT); debugger stops (Stop.DEBUG) are handled inside it: while the guest
is stopped the stub serves gdb and still looks at the console every 50 ms (F12 saves,
Ctrl-] quits, SIGTERM ends molpy), and gdb's continue or step runs the guest again.
"""

from __future__ import annotations

import logging
import queue
import threading

from ..machine import Machine, Stop
from .memory import MemoryFault, read as read_memory, write as write_memory
from .monitor import run as run_monitor
from .registers import REGISTERS, decode_all, decode_into, encode, encode_all, target_xml
from .packets import MAX_PACKET, escape, expand_rle, hex_u32, parse_hex, unescape
from .points import ACCESS, READ, WRITE, Hit, Points
from .server import Connection, GdbServer

log = logging.getLogger("molpy")

SIGINT, SIGILL, SIGTRAP, SIGBUS, SIGFPE, SIGSEGV = 2, 4, 5, 7, 8, 11
POLL_SECONDS = 0.05              # the console is looked at this often while the guest is stopped
MAX_MEMORY = (MAX_PACKET - 16) // 2   # bytes one m reply may carry

SUPPORTED = (b"PacketSize=%x;qXfer:features:read+;QStartNoAckMode+;swbreak+;hwbreak+;vContSupported+"
             % MAX_PACKET)


def fault_signal(kind: str) -> int:
    """The Unix signal gdb shows for a guest fault (it knows no PowerPC exception names)."""
    k = kind.lower()
    if "illegal" in k or "privileged" in k:
        return SIGILL
    if "alignment" in k or "unaligned" in k:
        return SIGBUS
    if "fp" in k.split() or "fp " in k:
        return SIGFPE
    if "trap" in k:
        return SIGTRAP
    return SIGSEGV


class _Resume(Exception):
    def __init__(self, how: str) -> None:
        self.how = how      # "continue", "step", "detach", "kill"


class GdbStub:
    """One machine, one server; ``wait`` holds the first instruction until gdb attaches."""

    def __init__(self, machine: Machine, server: GdbServer, *, wait: bool = True) -> None:
        self.machine = machine
        self.server = server
        self.points = Points(machine.cpu.uc, self._on_hit)
        self.conn: Connection | None = None
        self.stopped = wait            # stopped for the debugger (it is served, the guest waits)
        self.wait = wait
        self.killed = False
        self._hit: Hit | None = None
        self._interrupted = False
        self._new_conn = False
        self._state = None             # CpuState while stopped (read lazily, written through)
        self._frozen: dict | None = None    # guest time at the stop (Machine.pause_time)
        self._wrote = False
        self._last_stop = b"S05"
        self._fault_pc: int | None = None
        self._fault_signal = SIGSEGV
        self._reported_exit = False
        self._waited = False
        self._lock = threading.Lock()
        server.start(self._connected, self._interrupt)

    # -- threads and hooks --

    def _connected(self, conn: Connection) -> None:          # the accepting thread
        with self._lock:
            self._new_conn = True
        self.machine.request_debug_stop()

    def _interrupt(self) -> None:                             # a reader thread: Ctrl-C
        self._interrupted = True
        self.machine.request_debug_stop()

    def _on_hit(self, hit: Hit) -> None:                      # a Unicorn hook
        if self._hit is None:
            self._hit = hit
        self.machine.debug_stop = True
        self.machine.cpu.stop()

    # -- the run loop --

    def wait_for_debugger(self) -> None:
        """Block until gdb connects (start-up: a signal ends the wait)."""
        while not self.server.connected.wait(0.5):
            pass
        self._waited = True
        self._take_connection()

    def _take_connection(self) -> bool:
        with self._lock:
            new, self._new_conn = self._new_conn, False
        conn = self.server.connection
        if new and conn is not None:
            if self.conn is not None and self.conn is not conn:
                self._drop_connection()
            self.conn = conn
            self._interrupted = False
            self._last_stop = b"S05"
            if self.stopped:            # already stopped: the request it made is not needed
                self.machine.clear_debug_stop()
            return True
        return False

    def run(self, seconds: float | None = None) -> Stop:
        m = self.machine
        if self.wait and self.conn is None and not self._waited:
            self.wait_for_debugger()
        while True:
            stepping = False
            if self.stopped:
                self._take_connection()
                if self.conn is None:
                    self.stopped = False
                else:
                    self._frozen = m.pause_time()
                    try:
                        stop = self._serve()
                    except _Resume as r:
                        self._thaw()
                        if r.how == "kill":
                            self.killed = True
                            self._drop_connection()
                            return Stop.QUIT
                        if r.how == "detach":
                            self._drop_connection()
                        self.stopped = False
                        stepping = r.how == "step"
                    else:
                        self._thaw()
                        return stop        # the console asked (F12, Ctrl-], a signal)
            self._state = None
            self.points.apply()
            pc = m.cpu.pc
            self._hit = None
            if pc in self.points.breaks:       # leave the breakpoint under the PC first
                self.points.skip = pc
                stop = m.run(step=True)
                self.points.skip = None
                if stop is Stop.DEBUG and not stepping and self._hit is None and not self._interrupted:
                    stop = m.run(seconds)
            else:
                stop = m.run(seconds, step=stepping)
            if stop is Stop.DEBUG:
                self._debug_stop(stepping)
                continue
            if stop is Stop.EXIT:
                self.report_exit(m.exit_code or 0)
                return stop
            if stop is Stop.FAULT:
                if self.conn is not None and not self.conn.closed:
                    f = m.fault
                    self._fault_pc = f.pc
                    self._fault_signal = fault_signal(f.kind)
                    self._last_stop = b"T%02xthread:01;" % self._fault_signal
                    self.conn.send(self._last_stop)
                    self._serve_after_fault()
                return stop
            return stop

    def _debug_stop(self, stepping: bool) -> None:
        """Why the guest stopped for the debugger, told to gdb if it was waiting for it."""
        attached = self._take_connection()
        hit, self._hit = self._hit, None
        interrupted, self._interrupted = self._interrupted, False
        self.stopped = True
        if self.conn is None:          # a Ctrl-C from a debugger that has left since
            self.stopped = False
            return
        if attached:
            return                     # gdb asks with '?'
        if hit is not None and hit.kind == "break":
            reply = b"T05thread:01;swbreak:;"
        elif hit is not None:
            reply = b"T05thread:01;%s:%s;" % (hit.kind.encode(), hex_u32(hit.addr))
        elif stepping:
            reply = b"T05thread:01;"
        elif interrupted:
            reply = b"T02thread:01;"
        else:
            reply = b"T05thread:01;"
        self._last_stop = reply
        self.conn.send(reply)

    def report_exit(self, status: int) -> None:
        """Tell an attached gdb the guest is gone (W), once."""
        if self.conn is not None and not self._reported_exit:
            self._reported_exit = True
            self.conn.send(b"W%02x" % (status & 0xFF))
            self._drop_connection()

    def close(self, status: int = 0) -> None:
        self.report_exit(status)
        self.points.breaks.clear()
        self.points.watches.clear()
        self.server.close()

    def _drop_connection(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            conn.close()
        self.points.clear()
        self._state = None

    # -- serving gdb while stopped --

    def _next_event(self):
        """The next packet from gdb; None when the console asks for something first."""
        m = self.machine
        while True:
            try:
                return self.conn.events.get(timeout=POLL_SECONDS)
            except queue.Empty:
                m.frontend.flush()
                m.frontend.poll()
                request = m.frontend.take_request()
                if request is not None:
                    return ("console", request)

    def _serve(self) -> Stop:
        while True:
            kind, payload = self._next_event()
            if kind == "console":
                return Stop(payload)
            if kind == "closed":
                self._drop_connection()
                raise _Resume("continue")     # the debugger went away: the guest goes on
            if kind == "interrupt":
                continue                       # already stopped
            reply = self._handle(payload)
            if reply is not None:
                self.conn.send(reply)
                if reply == b"OK" and payload == b"QStartNoAckMode":
                    self.conn.noack = True

    def _serve_after_fault(self) -> None:
        """The machine cannot go on: gdb may look at it; continue ends it."""
        while self.conn is not None:
            kind, payload = self._next_event()
            if kind in ("console", "closed"):
                break
            if kind == "interrupt":
                continue
            try:
                reply = self._handle(payload)
            except _Resume as r:
                if r.how in ("continue", "step"):
                    self.conn.send(b"X%02x" % self._fault_signal)
                break
            if reply is not None:
                self.conn.send(reply)
        self._drop_connection()

    # -- state while stopped --

    def _thaw(self) -> None:
        """Guest time goes on from the stop (with TBL/TBU/DEC as gdb left them, if it wrote)."""
        frozen, self._frozen = self._frozen, None
        if frozen is None:
            return
        if self._wrote and self._state is not None:
            s = self._state.spr
            frozen = {"tb": s["TBU"] << 32 | s["TBL"], "dec": s["DEC"], "dec_pending": frozen["dec_pending"]}
        self._wrote = False
        self.machine.resume_time(frozen)

    def state(self):
        if self._state is None:
            self._state = self.machine.get_state()
            if self._frozen is not None:          # time stands still while stopped
                tb = self._frozen["tb"]
                self._state.spr["TBL"], self._state.spr["TBU"] = tb & 0xFFFFFFFF, tb >> 32
                self._state.spr["DEC"] = self._frozen["dec"]
            if self._fault_pc is not None:
                self._state.pc = self._fault_pc
        return self._state

    def _write_state(self) -> None:
        self.machine.set_state(self._state)
        self._wrote = True

    # -- packets --

    def _handle(self, pkt: bytes) -> bytes | None:
        try:
            return self._dispatch(pkt)
        except _Resume:
            raise
        except (ValueError, IndexError, UnicodeDecodeError) as e:
            log.debug("gdb: bad packet %r: %s", pkt[:40], e)
            return b"E16"

    def _dispatch(self, pkt: bytes) -> bytes | None:
        if not pkt:
            return b""
        c = pkt[:1]
        body = pkt[1:]
        if c == b"?":
            return self._last_stop
        if c == b"g":
            return encode_all(self.state())
        if c == b"G":
            decode_all(self.state(), body)
            self._write_state()
            return b"OK"
        if c == b"p":
            n = parse_hex(body, "register number", 16)
            if n >= len(REGISTERS):
                return b"E45"
            return encode(self.state(), n)
        if c == b"P":
            num, _, val = body.partition(b"=")
            n = parse_hex(num, "register number", 16)
            if n >= len(REGISTERS):
                return b"E45"
            decode_into(self.state(), n, val)
            self._write_state()
            return b"OK"
        if c == b"m":
            addr, length = self._addr_len(body)
            try:
                return read_memory(self.state(), self.machine.memory.view, addr, min(length, MAX_MEMORY)).hex().encode()
            except MemoryFault:
                return b"E14"
        if c in (b"M", b"X"):
            head, sep, data = body.partition(b":")
            if not sep:
                raise ValueError("memory write without data")
            addr, length = self._addr_len(head)
            raw = bytes.fromhex(data.decode("ascii")) if c == b"M" else unescape(expand_rle(data))
            if len(raw) != length:
                raise ValueError("memory write: length and data disagree")
            try:
                write_memory(self.state(), self.machine.memory.view, addr, raw, self.machine.cpu.code_changed)
            except MemoryFault:
                return b"E14"
            return b"OK"
        if c in (b"Z", b"z"):
            return self._point(c == b"Z", body)
        if c in (b"c", b"C"):
            self._resume_at(body if c == b"c" else body.partition(b";")[2])
            raise _Resume("continue")
        if c in (b"s", b"S"):
            self._resume_at(body if c == b"s" else body.partition(b";")[2])
            raise _Resume("step")
        if c == b"D":
            self.conn.send(b"OK")
            raise _Resume("detach")
        if c == b"k":
            raise _Resume("kill")
        if c == b"H" or c == b"T":
            return b"OK"
        if c == b"q" or c == b"Q":
            return self._query(pkt)
        if c == b"v":
            return self._v(pkt)
        return b""

    def _addr_len(self, body: bytes) -> tuple[int, int]:
        a, sep, n = body.partition(b",")
        if not sep:
            raise ValueError("expected ADDR,LENGTH")
        return parse_hex(a, "address"), parse_hex(n, "length")

    def _resume_at(self, addr: bytes) -> None:
        if addr:
            self.state().pc = parse_hex(addr, "address")
            self._write_state()

    def _point(self, insert: bool, body: bytes) -> bytes:
        kind_s, _, rest = body.partition(b",")
        a, _, n = rest.partition(b",")
        kind = parse_hex(kind_s, "point type", 8)
        addr = parse_hex(a, "address")
        length = parse_hex(n.partition(b";")[0], "length")
        pts = self.points
        if kind in (0, 1):
            (pts.add_break if insert else pts.remove_break)(addr)
        elif kind in (WRITE, READ, ACCESS):
            if insert:
                pts.add_watch(kind, addr, length)
            else:
                pts.remove_watch(kind, addr, length)
        else:
            return b""
        return b"OK"

    def _query(self, pkt: bytes) -> bytes:
        if pkt.startswith(b"qSupported"):
            return SUPPORTED
        if pkt == b"QStartNoAckMode":
            return b"OK"
        if pkt.startswith(b"qXfer:features:read:"):
            annex, _, span = pkt[len(b"qXfer:features:read:"):].partition(b":")
            if annex != b"target.xml":
                return b"E00"
            off, length = self._addr_len(span)
            xml = target_xml()
            chunk = xml[off:off + min(length, MAX_MEMORY)]
            return (b"l" if off + len(chunk) >= len(xml) else b"m") + escape(chunk)
        if pkt == b"qC":
            return b"QC01"
        if pkt == b"qfThreadInfo":
            return b"m01"
        if pkt == b"qsThreadInfo":
            return b"l"
        if pkt.startswith(b"qAttached"):
            return b"1"
        if pkt.startswith(b"qSymbol"):
            return b"OK"
        if pkt.startswith(b"qRcmd,"):
            return self._monitor(pkt[len(b"qRcmd,"):])
        return b""

    def _monitor(self, hexcmd: bytes) -> bytes:
        line = bytes.fromhex(hexcmd.decode("ascii")).decode("utf-8", "replace")
        try:
            out = run_monitor(self.machine, line)
        except ValueError as e:
            out = f"{e}\n"
        data = out.encode()
        for i in range(0, len(data), MAX_MEMORY // 2):
            self.conn.send(b"O" + data[i:i + MAX_MEMORY // 2].hex().encode())
        return b"OK"

    def _v(self, pkt: bytes) -> bytes:
        if pkt == b"vCont?":
            return b"vCont;c;C;s;S"
        if pkt.startswith(b"vCont;"):
            actions = pkt[len(b"vCont;"):].split(b";")
            first = actions[0][:1] if actions and actions[0] else b""
            if first in (b"s", b"S"):
                raise _Resume("step")
            if first in (b"c", b"C"):
                raise _Resume("continue")
            raise ValueError("vCont action")
        if pkt.startswith(b"vKill"):
            self.conn.send(b"OK")
            raise _Resume("kill")
        return b""
