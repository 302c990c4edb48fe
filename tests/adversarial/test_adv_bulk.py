"""Guest-driven loops are bounded by the real buffer and done in bulk (issue 18 item 7).

A guest's count is only a number: BOOT_HELPER 33 (UTF-16 to ASCII) once walked RAM one
16-bit unit at a time in Python, and one call with a huge count held off SIGTERM for
87 s with 1 GiB of RAM. Now the walk stops at the end of RAM, goes at memory speed and
looks for a stop between steps; a pseudo-file read of a huge count steps the same way.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading

import pytest

from molpy.boot import bundled_guest
from molpy.console import BufferConsole
from molpy.drivers import boot_helper, pseudofs
from molpy.machine import Machine, MachineConfig
from probe import SCRATCH, Probe, signed

HUGE = 0x7FFFFFFF
RAM_MIB = 16
RAM = RAM_MIB << 20


def mol_uni2asc(ram: bytes, src: int, units: int, maxlen: int) -> tuple[int, bytes]:
    """MOL's uni2asc unit by unit over ``ram``: (answer, bytes written); -1 past RAM."""
    if maxlen <= 0:
        return 0, b""
    out = bytearray()
    i = 0
    while i < units and len(out) < maxlen - 1:
        if src + 2 * i + 2 > len(ram):
            return -1, b""
        c = ram[src + 2 * i] << 8 | ram[src + 2 * i + 1]
        i += 1
        if 0 < c < 256:
            out.append(c)
    return len(out), bytes(out) + b"\0"


def test_a_huge_count_ends_at_the_end_of_ram():
    """Zero RAM up to the end: MOL would read past it, the answer is -1; a count that ends
    in RAM or an answer that fills up first never reads past it and is answered."""
    p = Probe(ram_mib=RAM_MIB)
    dst = SCRATCH
    tail = RAM - 4
    p.store(tail, bytes.fromhex("0041 0042"))           # "A", "B" in the last two units
    p.store(dst, b"\xee" * 4)
    p.call(78, 33, dst, SCRATCH + 0x100, HUGE, HUGE)    # zeros, then past RAM: -1
    p.call(78, 33, dst, tail, HUGE, HUGE)               # "AB", then past RAM: -1
    p.dump(dst, 4)                                      # nothing written on -1
    p.call(78, 33, dst, tail, HUGE, 2)                  # the answer fills up at "A": 1
    p.dump(dst, 3)
    p.call(78, 33, dst, RAM - 0x800, 0x400, HUGE)       # exactly to the end (the boot-args page): "AB"
    p.dump(dst, 3)
    p.call(78, 33, dst, RAM - 1, HUGE, HUGE)            # half a unit left: -1
    p.call(78, 33, RAM - 2, tail, HUGE, 3)              # "AB\0" would leave RAM: -1
    a = p.run()
    assert signed(a[0][0]) == -1 and signed(a[1][0]) == -1 and a[2] == b"\xee" * 4
    assert a[3][0] == 1 and a[4] == b"A\0\xee"
    assert a[5][0] == 2 and a[6] == b"AB\0"
    assert signed(a[7][0]) == -1 and signed(a[8][0]) == -1


@pytest.mark.parametrize("step", [1, 2, 3, 5, 64])
def test_the_bulk_walk_answers_as_mol_across_its_steps(monkeypatch, step):
    """The class: with tiny steps, every answer and every byte written is MOL's, for counts
    and limits that end before, at and after a step's edge."""
    monkeypatch.setattr(boot_helper, "UNITS_STEP", step)
    units = bytes.fromhex("0041 0000 0142 00ff 0043 ff00 0001 0000 0044 0045 00e9 0100")
    src, dst = RAM - 0x800, SCRATCH          # in the boot-args page: a huge count soon ends RAM
    cases = [(n, m) for n in (0, 1, 2, 3, 5, 6, 7, 12, 13, HUGE) for m in (0, 1, 2, 3, 4, 9, HUGE)]
    p = Probe(ram_mib=RAM_MIB)
    p.store(src, units)
    p.dump(src, RAM - src)                   # the RAM the walk reads, as the guest has it
    for n, m in cases:
        p.store(dst, b"\xee" * 16)
        p.call(78, 33, dst, src, n, m)
        p.dump(dst, 16)
    a = p.run()
    ram = bytes(src) + a[0]                  # the model indexes by guest address
    assert a[0].startswith(units)
    for k, (n, m) in enumerate(cases):
        want, written = mol_uni2asc(ram, src, n, m)
        assert signed(a[2 * k + 1][0]) == want, (n, m)
        assert a[2 * k + 2] == (written + b"\xee" * 16)[:16], (n, m)


def test_a_stop_is_seen_between_steps_of_a_conversion(monkeypatch):
    """The walk asks for a stop after every step: a stop requested during a huge call ends
    it at the next step (-1, nothing written), not at the end of RAM."""
    monkeypatch.setattr(boot_helper, "UNITS_STEP", 4096)
    p = Probe(ram_mib=RAM_MIB)
    p.store(SCRATCH, b"\xee" * 4)
    p.run(keep=True, extra="")                 # the probe waits for more
    m = p.machine
    try:
        helper = next(d for d in m.devices if isinstance(d, boot_helper.BootHelper))
        asked = []

        def stop_on_third_ask() -> bool:
            asked.append(1)
            return len(asked) >= 3

        monkeypatch.setattr(helper.ctx, "stop_requested", stop_on_third_ask)
        assert helper.unicode_to_ascii(SCRATCH, SCRATCH + 0x100, HUGE, HUGE) == -1
        assert len(asked) == 3                  # three of the ~1,900 steps to the end of RAM
        assert bytes(m.memory.view[SCRATCH:SCRATCH + 4]) == b"\xee" * 4
    finally:
        m.close()


def _lines(stream, into: queue.Queue) -> None:
    for line in stream:
        into.put(line)
    into.put(None)


def test_sigterm_ends_a_huge_conversion_at_once(tmp_path):
    """A real molpy with 1 GiB of RAM and a guest making 50 huge op-33 calls back to back:
    once the first is answered (before: 87 s or more a call, past the guard), SIGTERM ends
    molpy with 143 and its one line. The timeouts only guard against a hang."""
    rc = tmp_path / "molrc"
    rc.write_text(f"ram_size: 1024\nbootfile: {bundled_guest('osi_probe')}\n")
    call = f"c 78 33 {SCRATCH} {SCRATCH + 0x100} {HUGE} {HUGE} 0 0\n"
    proc = subprocess.Popen([sys.executable, "-m", "molpy", "run", "-f", str(rc), "--fresh"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            cwd=tmp_path)
    try:
        proc.stdin.write(call.encode() * 50)
        proc.stdin.flush()
        lines: queue.Queue = queue.Queue()
        threading.Thread(target=_lines, args=(proc.stdout, lines), daemon=True).start()
        while True:          # one call answered: the guest is in the next ones, back to back
            try:
                line = lines.get(timeout=60)
            except queue.Empty:
                pytest.fail("the first huge call was not answered within a minute")
            assert line is not None, proc.stderr.read()
            if line.startswith(b"= ffffffff"):
                break
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 128 + signal.SIGTERM
        err = proc.stderr.read().decode()
        assert "Traceback" not in err and "stopped by SIGTERM" in err, err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_pseudo_file_read_goes_in_steps_and_stops_on_request(tmp_path, monkeypatch):
    """A read of a huge count is bounded by the file and RAM, moved in steps, and cut short
    (a short count, every byte moved a real one) once a stop is requested."""
    data = os.urandom(5000)
    path = tmp_path / "blob"
    path.write_bytes(data)
    monkeypatch.setattr(pseudofs, "READ_STEP", 1000)
    m = Machine(MachineConfig(ram_mib=RAM_MIB, pseudofiles=[("blob", str(path))]), BufferConsole(b""))
    try:
        fs = next(d for d in m.devices if isinstance(d, pseudofs.PseudoFS))
        assert fs.read(0, 0, SCRATCH, HUGE) == len(data)
        assert bytes(m.memory.view[SCRATCH:SCRATCH + len(data)]) == data
        assert fs.read(0, 0, RAM - 100, HUGE) == -1          # past RAM: nothing moved
        asked = []

        def stop_on_second_ask() -> bool:
            asked.append(1)
            return len(asked) >= 2

        monkeypatch.setattr(fs.ctx, "stop_requested", stop_on_second_ask)
        m.memory.view[SCRATCH:SCRATCH + len(data)] = bytes(len(data))
        assert fs.read(0, 0, SCRATCH, HUGE) == 2000            # two steps, then the stop
        assert bytes(m.memory.view[SCRATCH:SCRATCH + 2000]) == data[:2000]
        assert not any(m.memory.view[SCRATCH + 2000:SCRATCH + len(data)])
    finally:
        m.close()
