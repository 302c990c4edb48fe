"""Guest against host: generated OSI calls at the edges, checked against a model.

A 2 MiB machine with three disks (read-write, -cow, -ro) runs one `sc` at a time with
registers drawn by hypothesis: every selector molpy serves plus unknown ones, arguments
at the edges (0, -1, 2^31, RAM size, RAM size - 1, unaligned, in the scratch page).
After every call the whole of RAM and every disk are compared with the model, the
files molpy must never write are compared byte for byte, and a valid call must still
work.
"""

from __future__ import annotations

import os
import random
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import LONG, count, tally
from molpy.config import BlkdevSpec
from molpy.console import BufferConsole
from molpy.cpu import SCRATCH_BASE
from molpy.drivers import osi_blk as B
from molpy.machine import Machine, MachineConfig
from molpy.osi import OSI_MAGIC1, OSI_MAGIC2

RAM = 2 << 20
DISK = 256 << 10
CODE = 0x1000                              # sc; b .
CODE_WORDS = bytes.fromhex("44000002 48000000")
RING = 0x20000
SERVED = [0, 1, 7, 9, 32, 47, 50, 51, 52, 53, 54, 58, 78, 79, 80, 81, 82, 83, 84, 85, 86, 91, 92, 93,
          96, 97, 98, 99]
TB_HZ = 25_000_000                             # molpy's time base (docs/exceptions.md)
NVRAM = 0x2000
EDGES = [0, 1, 3, 511, 512, 4096, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 0xFFFFFE00, RAM, RAM - 1,
         RAM - 512, RAM - 4096, RAM + 512, DISK // 512, DISK // 512 - 1, DISK, SCRATCH_BASE,
         SCRATCH_BASE + 0x800, CODE, RING]
MASK = 0xFFFFFFFF

u32 = st.one_of(st.sampled_from(EDGES), st.integers(0, MASK),
                st.integers(0, RAM // 512).map(lambda s: s * 512))
small = st.one_of(st.integers(0, 3), st.integers(0, 3), st.sampled_from([4, 0xFFFFFFFF, 0x80000000]))


class Harness:
    """The machine, its disks and the model of what RAM and each disk must hold."""

    def __init__(self, tmp: str) -> None:
        rng = random.Random(7)
        self.paths = {}
        for name in ("rw", "cow", "ro", "canary"):
            p = os.path.join(tmp, f"{name}.img")
            with open(p, "wb") as f:
                f.write(rng.randbytes(DISK))
            self.paths[name] = p
        self.original = {k: open(p, "rb").read() for k, p in self.paths.items()}
        disks = [BlkdevSpec(self.paths["rw"], readonly=False),
                 BlkdevSpec(self.paths["cow"], readonly=False, cow=True),
                 BlkdevSpec(self.paths["ro"])]
        os.makedirs(os.path.join(tmp, "cow"), exist_ok=True)
        self.m = Machine(MachineConfig(ram_mib=RAM >> 20, blkdevs=disks, cow_dir=os.path.join(tmp, "cow")),
                         BufferConsole())
        self.blk = next(d for d in self.m.devices if d.kind == "ABLK")
        self.m.memory.view[:] = rng.randbytes(RAM)
        self.m.memory.view[CODE:CODE + 8] = CODE_WORDS
        self.ram = bytearray(self.m.memory.view)
        self.disks = [bytearray(self.original["rw"]), bytearray(self.original["cow"]),
                      bytearray(self.original["ro"])]
        self.calls = 0
        self.nvram = bytearray(NVRAM)
        self.flags = [4, 4, 5]             # DISK_INFO flags; BLESS_DISK moves the boot hint (8)

    def close(self) -> None:
        self.m.close()

    # -- one call --

    def call(self, sel: int, *args: int) -> tuple[int, ...]:
        """Run one `sc` with the OSI magic; r3..r10 afterwards."""
        cpu = self.m.cpu
        if self.m.memory.view[CODE:CODE + 8] != CODE_WORDS:   # a ring read landed on it
            self.restore_code()
        regs = [OSI_MAGIC1, OSI_MAGIC2, sel, *args][:8]
        regs += [0] * (8 - len(regs))
        for i, v in enumerate(regs):
            cpu.set_reg(3 + i, v & MASK)
        cpu.pc = CODE
        self.m.cpu.uc.emu_start(CODE, CODE + 4)
        self.calls += 1
        assert self.m._error is None, f"the host raised: {self.m._error!r}"
        assert self.m.fault is None, self.m.fault.report()
        self.m.exit_code = None
        return tuple(cpu.reg(3 + i) for i in range(9))

    # -- checks --

    def check_ram(self) -> None:
        view = self.m.memory.view
        if view != self.ram:
            first = next(i for i in range(RAM) if view[i] != self.ram[i])
            pytest.fail(f"RAM differs from the model at {first:#x}")

    def disk_now(self, unit: int) -> bytes:
        buf = bytearray(DISK)
        self.blk.units[unit].backend.readinto(0, memoryview(buf))
        return bytes(buf)

    def check_disks(self) -> None:
        for unit in range(3):
            assert self.disk_now(unit) == self.disks[unit], f"unit {unit} differs from the model"
        self.check_promises()

    def check_promises(self) -> None:
        """The -cow base, the -ro disk and a file molpy was never given are untouched."""
        for name in ("cow", "ro", "canary"):
            with open(self.paths[name], "rb") as f:
                assert f.read() == self.original[name], f"{name} disk was written"

    def restore_code(self) -> None:
        self.m.memory.view[CODE:CODE + 8] = CODE_WORDS
        self.ram[CODE:CODE + 8] = CODE_WORDS

    def valid_call_works(self) -> None:
        """A plain read of unit 0 into RAM still returns the model's bytes."""
        r = self.call(B.OSI_ABLK_SYNC_READ, 0, 0, 3, 0x40000, 4096)
        assert r[0] == 0
        assert bytes(self.m.memory.view[0x40000:0x41000]) == bytes(self.disks[0][1536:1536 + 4096])
        self.ram[0x40000:0x41000] = self.disks[0][1536:1536 + 4096]


def sync_errors(h: Harness, write: bool, ch: int, unit: int, blk: int, addr: int, size: int) -> set[int]:
    errs = set()
    if ch:
        errs.add(B.E_INVAL)
    if unit >= 3:
        errs.add(B.E_NOUNIT)
        return errs
    if write and unit == 2:
        errs.add(B.E_ROFS)
    if size > RAM:                     # any byte count, as MOL (not only whole sectors)
        errs.add(B.E_LENGTH)
    if addr + size > RAM:
        errs.add(B.E_FAULT)
    if blk & 0x80000000 or blk * 512 + size > DISK:   # the sector number is signed, as MOL's
        errs.add(B.E_RANGE)
    return errs


def signed(v: int) -> int:
    return v - (1 << 32) if v & 0x80000000 else v


def model_asc2uni(h: Harness, dest: int, src: int, maxlen: int) -> int:
    """MOL's unicode.c asc2uni over the model RAM (-1 where it would leave RAM)."""
    if dest >= RAM or src >= RAM:
        return -1
    maxlen = signed(maxlen)
    if maxlen <= 0:
        return 0
    text = bytearray()
    while len(text) < maxlen - 1:
        if src + len(text) >= RAM:
            return -1
        c = h.ram[src + len(text)]
        if not c:
            break
        text.append(c)
    out = b"".join(bytes([0, c]) for c in text) + b"\0\0"
    if dest + len(out) > RAM:
        return -1
    h.ram[dest:dest + len(out)] = out
    return len(text)


def model_uni2asc(h: Harness, dest: int, src: int, units: int, maxlen: int) -> int:
    if dest >= RAM or src >= RAM:
        return -1
    units, maxlen = signed(units), signed(maxlen)
    if maxlen <= 0:
        return 0
    out = bytearray()
    i = 0
    while units > 0 and len(out) < maxlen - 1:
        units -= 1
        if src + 2 * i + 2 > RAM:
            return -1
        hi, lo = h.ram[src + 2 * i], h.ram[src + 2 * i + 1]
        i += 1
        if hi == 0 and lo:
            out.append(lo)
    out.append(0)
    if dest + len(out) > RAM:
        return -1
    h.ram[dest:dest + len(out)] = out
    return len(out) - 1


def check_call(h: Harness, sel: int, args: list[int]) -> None:
    """One generated call and its model."""
    ring_running = h.blk.ring.running
    if sel == 58:                      # USLEEP sleeps for real (at most 10 s): keep it short
        args = [args[0] % 2000] + args[1:]
    t0 = time.time()
    r = h.call(sel, *args)
    r3 = signed(r[0])
    a = args
    if sel in (B.OSI_ABLK_SYNC_READ, B.OSI_ABLK_SYNC_WRITE):
        write = sel == B.OSI_ABLK_SYNC_WRITE
        errs = sync_errors(h, write, *a[:5])
        if errs:
            assert r3 in errs, (r3, errs, a)
        else:
            assert r3 == 0, (r3, a)
            unit, blk, addr, size = a[1:5]
            if write:
                h.disks[unit][blk * 512:blk * 512 + size] = h.ram[addr:addr + size]
            else:
                h.ram[addr:addr + size] = h.disks[unit][blk * 512:blk * 512 + size]
    elif sel == B.OSI_ABLK_DISK_INFO:
        if a[0]:
            assert r3 == B.E_INVAL
        elif a[1] >= 3:
            assert r3 == B.E_NOUNIT
        else:
            assert r[:3] == (0, DISK // 512, h.flags[a[1]]), r
    elif sel == B.OSI_ABLK_BLESS_DISK:
        if a[0] or a[1] >= 3:
            assert r3 == B.E_INVAL
        else:
            assert r3 == 0
            h.flags = [f & ~8 | (8 if i == a[1] else 0) for i, f in enumerate(h.flags)]
    elif sel == B.OSI_ABLK_RING_SETUP:
        ch, addr, n = a[:3]
        if ch or ring_running or n > 65536 or n & (n - 1):   # n = 0 passes, as in MOL
            assert r3 == B.E_INVAL, (r3, a)
        elif addr + n * 16 > RAM or addr >= RAM:
            assert r3 == B.E_FAULT, (r3, a)
        else:
            assert r3 == 0
    elif sel == B.OSI_ABLK_CNTRL:
        ch, cmd, param = a[:3]
        if ch or cmd not in (1, 2, 3, 4, 5):
            assert r3 == B.E_INVAL, (r3, a)
            assert ch or not h.blk.ring.running           # MOL: an unknown command also resets
        elif cmd == 5:
            assert r3 == (B.E_NOUNIT if param >= 3 else 0)
        elif cmd == 3 and not ring_running:
            assert r3 in (0, B.E_INVAL)
            if r3 == 0:                # START writes NOP into slot 0 of the ring
                base = h.blk.ring.base
                h.ram[base:base + 4] = B.REQ_NOP.to_bytes(4, "big")
        else:
            assert r3 == 0
    elif sel == B.OSI_ABLK_KICK:
        if a[0]:
            assert r3 == B.E_INVAL
        else:                          # as MOL: 0 always (errors stop the engine)
            assert r3 == 0, r3
        if ring_running:               # the ring's contents are fuzzed in test_ring_contents
            h.ram[:] = h.m.memory.view
            for unit in range(2):
                h.disks[unit][:] = h.disk_now(unit)
    elif sel == B.OSI_ABLK_IRQ_ACK:
        if a[0]:
            assert r3 == B.E_INVAL
        else:
            assert r[0] in (0, 1)
            if ring_running:           # an ack may restart the engine on queued work
                h.ram[:] = h.m.memory.view
                for unit in range(2):
                    h.disks[unit][:] = h.disk_now(unit)
    elif sel == 0:
        assert r[0] == (1 if a[0] in SERVED else 0), (r, a)
    elif sel == 7:
        assert abs(r[0] - t0) <= 2
    elif sel == 78:
        op = a[0]
        if op == 35:
            assert r[0] == RAM
        elif op == 34:
            assert r[0] == 0                   # no resources: 0, never -1
        elif op == 32:
            assert r3 == model_asc2uni(h, a[1], a[2], a[3]), (r3, a)
        elif op == 33:
            assert r3 == model_uni2asc(h, a[1], a[2], a[3], a[4]), (r3, a)
        else:
            assert r[0] == MASK
    elif sel == 9:                             # local time since 1904
        assert abs(((r[0] - 0x7C25B080 + time.timezone) & MASK) - t0) <= 3602
    elif sel == 32:
        assert r[:6] == (1, 0, 0, 0, 0, 0), r  # no framebuffer
    elif sel == 51:
        assert r[0] == MASK                    # no key waiting
    elif sel == 52:
        assert r[0] == 0
        if a[0] < NVRAM:
            h.nvram[a[0]] = a[1] & 0xFF
    elif sel == 53:
        assert r[0] == (h.nvram[a[0]] if a[0] < NVRAM else 0), (r, a)
    elif sel == 91:
        assert r[0] == NVRAM
    elif sel == 92:                            # MOL's timer.c on a 32-bit host: ticks -> us
        wide = (a[0] - (1 << 32) if a[0] >= 1 << 31 else a[0]) % (1 << 64)
        assert r[0] == wide * 1_000_000 % (1 << 64) // TB_HZ % (1 << 32), (r, a)
    elif sel == 93:                            # us -> ticks
        assert r[0] == TB_HZ * a[0] // 1_000_000 % (1 << 32), (r, a)
    elif sel == 96:
        assert r[0] == (0 if a[0] == 2 else MASK)   # no pseudo files published
    elif sel == 97:
        assert r[0] == 1                       # MOL returns write()'s count
    elif sel == 98:
        assert r[0] == MASK                # no key waiting
    elif sel in (1, 47, 50, 54, 58, 99):
        assert r[0] == 0
    elif sel < 100:
        assert r[0] == 0, (sel, r)         # MOL's unset vector answers 0
    else:
        assert r[0] == OSI_MAGIC1, (sel, r)   # past MOL's table: r3 untouched
    h.restore_code()
    h.check_ram()
    h.check_disks()
    h.valid_call_works()


@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    h = Harness(str(tmp_path_factory.mktemp("osi-fuzz")))
    yield h
    calls = h.calls
    h.close()
    tally("OSI calls with generated registers (guest vs host)", calls)
    if LONG:
        assert calls >= 10_000, f"only {calls} calls in the long mode"


near_edge = st.one_of(st.sampled_from(EDGES), st.integers(0, RAM + 8192),
                      st.integers(0, 64).map(lambda k: RAM - k * 512), st.integers(0, MASK))
sectors = st.one_of(st.integers(0, DISK // 512 + 2), st.integers(0, DISK // 512 + 2), st.sampled_from(EDGES))
lengths = st.one_of(st.integers(0, 128).map(lambda k: k * 512), st.sampled_from(EDGES), st.integers(0, 70000))
channel = st.sampled_from([0] * 8 + [1, 0x80000000, MASK])
unit = st.sampled_from([0, 1, 2] * 3 + [3, 4, MASK])
sync_call = st.tuples(st.sampled_from([B.OSI_ABLK_SYNC_READ, B.OSI_ABLK_SYNC_WRITE]),
                      st.tuples(channel, unit, sectors, near_edge, lengths).map(list))
blk_call = st.tuples(st.sampled_from([79, 80, 81, 82, 83]),
                     st.tuples(channel, st.one_of(small, near_edge), st.one_of(small, u32), u32, u32).map(list))
any_call = st.tuples(st.one_of(st.sampled_from(SERVED), st.integers(0, MASK)),
                     st.lists(u32, min_size=5, max_size=5))
# BOOT_HELPER's string conversions write RAM: ops 32/33 with buffers near the edges
helper_call = st.tuples(st.just(78), st.tuples(st.sampled_from([32, 33, 34, 35, 36]), near_edge, near_edge,
                                               lengths, lengths).map(list))
calls = st.lists(st.one_of(sync_call, sync_call, sync_call, blk_call, any_call, helper_call),
                 min_size=1, max_size=8)


@settings(max_examples=count(150, 1400), deadline=None, suppress_health_check=list(HealthCheck))
@given(calls=calls)
def test_generated_calls(harness, calls):
    for sel, args in calls:
        check_call(harness, sel, args)


def mostly(sound, edge):
    """``sound`` nineteen times in twenty, else ``edge`` (hypothesis alone favours the edges)."""
    return st.tuples(st.integers(0, 19), sound, edge).map(lambda t: t[2] if t[0] == 7 else t[1])


request = st.tuples(st.sampled_from([B.REQ_READ, B.REQ_READ, B.REQ_WRITE, B.REQ_READ | B.REQ_RAISE_IRQ,
                                     B.REQ_NOP, B.REQ_EJECT]),
                    mostly(st.integers(0, 2), st.sampled_from([3, MASK])),
                    mostly(st.integers(0, DISK // 512 - 80), u32))
data_entry = st.tuples(mostly(st.integers(0, RAM // 512 - 16).map(lambda s: s * 512), near_edge),
                       mostly(st.one_of(st.integers(1, 16).map(lambda s: s * 512), st.integers(1, 9000)), u32))
# A ring program: requests with their data entries, laid out from slot 1 as a guest would,
# then damaged: slots overwritten with junk, and sometimes every slot armed (a loop).
program = st.lists(st.tuples(request, st.lists(data_entry, min_size=1, max_size=4)), min_size=1, max_size=5)
damage = st.lists(st.tuples(st.integers(0, 63), st.integers(0, MASK), st.sampled_from([0, 1, MASK]), u32, u32),
                  max_size=3)


@settings(max_examples=count(60, 500), deadline=None, suppress_health_check=list(HealthCheck))
@given(prog=program, damage=damage, loop=st.booleans(), extra_log=st.integers(0, 2))
def test_ring_contents(harness, prog, damage, loop, extra_log):
    """Requests, junk, loops, huge counts, buffers past RAM: KICK ends with 0 or an error
    code, and RAM changes only in the ring and in buffers that its data entries name."""
    h = harness
    slots = [(B.REQ_NOP, 0, 0)]
    for (flags, unit, sector), entries in prog:
        slots.append((flags, unit, sector))
        slots += [(B.REQ_SG_BUF, buf, count_) for buf, count_ in entries]
    n = min(64, 1 << (len(slots) - 1).bit_length() + extra_log)
    slots = slots[:n]
    h.call(B.OSI_ABLK_CNTRL, 0, B.CNTRL_RESET, 0)
    assert h.call(B.OSI_ABLK_RING_SETUP, 0, RING, n)[0] == 0
    assert h.call(B.OSI_ABLK_CNTRL, 0, B.CNTRL_START, 0)[0] == 0
    words = [(flags, 1 if (loop or i < len(slots) - 1) else 0, a, b) for i, (flags, a, b) in enumerate(slots)]
    words += [(0, 1 if loop else 0, 0, 0)] * (n - len(words))
    for slot, *junk_words in damage:
        words[slot % n] = tuple(junk_words)
    allowed = np.zeros(RAM, dtype=bool)
    allowed[RING:RING + 16 * n] = True
    allowed[CODE:CODE + 8] = True                  # the harness puts its code back
    for i, w in enumerate(words):
        if w[0] & B.REQ_SG_BUF:
            allowed[w[2]:w[2] + w[3]] = True       # a data entry: a read may land there
        h.m.memory.view[RING + 16 * i:RING + 16 * i + 16] = b"".join(x.to_bytes(4, "big") for x in w)
    before = np.frombuffer(bytes(h.m.memory.view), dtype=np.uint8)
    r3 = signed(h.call(B.OSI_ABLK_KICK, 0)[0])
    assert r3 == 0, r3
    assert h.call(B.OSI_ABLK_IRQ_ACK, 0)[0] in (0, 1)
    h.call(B.OSI_ABLK_CNTRL, 0, B.CNTRL_RESET, 0)
    after = np.frombuffer(bytes(h.m.memory.view), dtype=np.uint8)
    stray = np.flatnonzero((before != after) & ~allowed)
    assert not stray.size, f"the ring wrote RAM it does not name, at {stray[0]:#x}"
    h.restore_code()
    h.ram[:] = h.m.memory.view
    for u in range(2):
        h.disks[u][:] = h.disk_now(u)
    h.check_promises()
    h.valid_call_works()
    tally("rings of generated requests, junk and loops, kicked (no stray RAM writes)", 1)
