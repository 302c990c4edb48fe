"""The GDB stub against Debian's gdb-multiarch: real molpy processes, real gdb, the gdb guest.

Every wait is on a condition: the stub's listening line on molpy's stderr, the guest's
output lines, gdb's own exit. No sleeps.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from molpy.gdbstub import packets, registers
from molpy.cpu import CpuState

REPO = Path(__file__).resolve().parent.parent
GUEST = REPO / "molpy" / "guest" / "tests" / "gdb.elf"
GDB = shutil.which("gdb-multiarch")
needs_gdb = pytest.mark.skipif(GDB is None, reason="gdb-multiarch is not installed (.ci/run installs it)")
TIMEOUT = 120


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


class Molpy:
    """``molpy run --gdb 0`` with the gdb guest; ``port`` once the stub said where it listens."""

    def __init__(self, boot_args: str, *extra: str, session: str | None = None, wait: bool = True) -> None:
        args = [sys.executable, "-m", "molpy", "run", "-s", f"bootfile={GUEST}", "-s", f"boot_args={boot_args}",
                "--gdb", "0", *extra]
        if session:
            args += ["-s", f"session_file={session}"]
        if not wait:
            args.append("--gdb-no-wait")
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, env=_env())
        self.stderr_lines: list[str] = []
        while True:
            line = self.proc.stderr.readline().decode()
            if not line:
                raise AssertionError(f"molpy ended before listening: {self.stderr_lines}")
            self.stderr_lines.append(line)
            m = re.search(r"gdb stub listening on 127\.0\.0\.1:(\d+)", line)
            if m:
                self.port = int(m.group(1))
                self.listening_line = line
                return

    def wait_output(self, text: str) -> None:
        """Read the guest's output until a line holding ``text``."""
        while True:
            line = self.proc.stdout.readline().decode()
            assert line, f"the guest ended before printing {text!r}"
            if text in line:
                return

    def finish(self) -> tuple[int, str, str]:
        out, err = self.proc.communicate(timeout=TIMEOUT)
        return self.proc.returncode, out.decode(), "".join(self.stderr_lines) + err.decode()


def gdb_args(port: int, *commands: str) -> list[str]:
    args = [GDB, "-batch", "-nx", "-ex", f"target remote :{port}"]
    for c in commands:
        args += ["-ex", c]
    return args + [str(GUEST)]


def gdb(port: int, *commands: str) -> str:
    p = subprocess.run(gdb_args(port, *commands), capture_output=True, timeout=TIMEOUT)
    return p.stdout.decode() + p.stderr.decode()


# -- the protocol's pieces, without gdb --

def test_framing_checksums_and_escapes():
    r = packets.PacketReader()
    good = packets.frame(b"m100,4")
    bad = good[:-1] + (b"0" if good[-1:] != b"0" else b"1")
    events = r.feed(b"+" + good + bad + b"\x03")
    assert events == [("ack", True), ("packet", b"m100,4"), ("bad", None), ("interrupt", None)]
    raw = bytes(range(256))
    assert packets.unescape(packets.escape(raw)) == raw
    assert b"#" not in packets.escape(raw) and b"$" not in packets.escape(raw)


def test_oversized_packet_is_dropped_not_kept():
    r = packets.PacketReader()
    events = r.feed(b"$" + b"a" * (packets.MAX_PACKET + 10) + b"#00" + packets.frame(b"?"))
    assert ("packet", b"?") in events and ("bad", None) in events
    assert len(r._buf) == 0


def test_register_map_round_trips_every_register():
    s = CpuState()
    for n in range(len(registers.REGISTERS)):
        registers.set_value(s, n, 0x1000 + n)
    text = registers.encode_all(s)
    t = CpuState()
    registers.decode_all(t, text)
    assert t == s
    xml = registers.target_xml().decode()
    for name in ("org.gnu.gdb.power.core", "org.gnu.gdb.power.fpu", "org.molpy.power.supervisor",
                 '"srr0"', '"sdr1"', '"ibat3l"', '"sr15"', '"hid1"', '"fpscr"'):
        assert name in xml
    with pytest.raises(ValueError):
        registers.decode_into(t, 3, b"1234")          # r3 is 4 bytes


# -- gdb-multiarch against molpy run --gdb --

@needs_gdb
def test_break_registers_memory_step_and_set_r3_the_guest_uses():
    m = Molpy("calls")
    assert "waiting for the debugger" in m.listening_line
    out = gdb(m.port, "break gdb_identity", "continue", "info registers r3 pc msr", "p $msr",
              "x/4wx $pc", "x/2i $pc", "p $srr1", "p $sdr1", "p $ibat0u", "p $sr0",
              "stepi", "p/x $pc", "set $r3 = 42", "continue")
    code, guest, err = m.finish()
    assert "Breakpoint 1, 0x" in out and "in gdb_identity" in out
    assert re.search(r"^r3\s+0x7\s+7$", out, re.M), out          # gdb_identity(7)
    assert re.search(r"^msr\s+0x3000", out, re.M), out
    assert "$1 = 12288" in out
    assert re.search(r"<gdb_identity>:\s+0x4e800020", out), out   # x/4wx: its blr
    assert "=> 0x" in out and "blr" in out                          # x/2i $pc
    assert "gdb: add 5" in guest and "gdb: watched 5678" in guest   # the guest ran on
    assert code == 42, (code, out, err)                            # set $r3 after stepi: main returns it
    assert "exited with code 052" in out                           # W2a


@needs_gdb
def test_watchpoint_fires_on_the_store():
    m = Molpy("calls")
    out = gdb(m.port, "watch *(unsigned int *)&gdb_watched", "continue", "continue", "delete", "continue")
    code, guest, _ = m.finish()
    assert "Old value = 0\nNew value = 4660" in out, out
    assert "Old value = 4660\nNew value = 22136" in out, out
    assert code == 7 and "exited with code 07" in out


@needs_gdb
def test_ctrl_c_stops_a_spinning_guest_and_kill_ends_molpy():
    m = Molpy("spin")
    g = subprocess.Popen(gdb_args(m.port, "continue", "p $pc", "p *(unsigned int *)&gdb_spins", "kill"),
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    m.wait_output("gdb: spinning")      # gdb has continued the guest and waits for it
    g.send_signal(signal.SIGINT)        # as Ctrl-C at gdb's prompt: gdb sends 0x03
    out = g.communicate(timeout=TIMEOUT)[0].decode()
    code, _, err = m.finish()
    assert "Program received signal SIGINT" in out and "in gdb_spin" in out, out
    spins = int(re.search(r"\$2 = (\d+)", out).group(1))
    assert spins > 0
    assert "killed" in out and "killed by the debugger" in err and code == 0


@needs_gdb
def test_second_connection_is_refused_while_attached():
    m = Molpy("calls")
    probe = (f"{sys.executable} -c \"import socket\ntry:\n socket.create_connection(('127.0.0.1', {m.port}))"
             f"\n print('SECOND ACCEPTED')\nexcept ConnectionRefusedError:\n print('SECOND REFUSED')\"")
    out = gdb(m.port, "break gdb_add", "continue", f"shell {probe}", "continue")
    code, _, _ = m.finish()
    assert "SECOND REFUSED" in out, out
    assert code == 7


@needs_gdb
def test_monitor_save_then_resume_that_session(tmp_path):
    sess = str(tmp_path / "at_identity.session")
    m = Molpy("calls")
    out = gdb(m.port, "break gdb_identity", "continue", "monitor info disks", f"monitor save {sess}",
              "monitor help", "monitor bogus", "kill")
    m.finish()
    assert f"session saved to {sess}" in out, out
    assert "unit 0:" in out and "monitor save FILE" in out and "unknown command" in out
    # resumed with the stub: it waits before the first instruction, at the saved PC
    r = Molpy("calls", session=sess)
    out = gdb(r.port, "p $pc", "p $r3", "set $r3 = 9", "continue")
    code, guest, err = r.finish()
    assert re.search(r"\$1 = .*<gdb_identity>", out), out
    assert "$2 = 7" in out
    assert "resumed session" in guest and "gdb: add" not in guest   # it did not boot again
    assert code == 9 and "exited with code 011" in out


@needs_gdb
def test_no_wait_runs_at_once_and_exit_is_w_for_a_later_debugger():
    m = Molpy("spin", wait=False)
    assert "waiting" not in m.listening_line
    m.wait_output("gdb: spinning")                     # it runs with no debugger attached
    out = gdb(m.port, "p $pc", "set var *(unsigned int *)&gdb_spins = 0", "detach")
    assert re.search(r"\$1 = .*<gdb_spin", out), out
    # detached: the guest goes on, and the port listens again for the next debugger
    out = gdb(m.port, "p $pc", "kill")
    code, _, _ = m.finish()
    assert "in gdb_spin" in out or "<gdb_spin" in out, out
    assert code == 0


def test_bad_port_is_a_one_line_error(cli):
    r = cli("run", "--gdb", "70000")
    assert r.returncode != 0 and b"Traceback" not in r.stderr
    assert r.stderr.decode().strip().count("\n") == 0 and "TCP port" in r.stderr.decode()
    r = cli("run", "-s", "gdb=abc")
    assert r.returncode != 0 and b"Traceback" not in r.stderr
    assert b"gdb: 'abc' is not a TCP port" in r.stderr and r.stderr.strip().count(b"\n") == 0


def test_busy_port_is_a_one_line_error(cli):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    try:
        r = cli("run", "--gdb", str(s.getsockname()[1]))
    finally:
        s.close()
    assert r.returncode != 0 and b"Traceback" not in r.stderr
    assert b"cannot listen for gdb on 127.0.0.1:" in r.stderr
