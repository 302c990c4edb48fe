"""Seeded generator of PowerPC programs for the exact-stop tests (guest/tests/exact.S runs them).

A program sets every register from the seed, then runs a loop of random operations
``iterations`` times: loads and stores with base = destination, update forms, lmw/stmw,
lswi/stswi, lwarx/stwcx. retry loops, dcbz, FP loads, stores and arithmetic, CR, XER,
CTR and LR traffic, short forward branches and console output through OSI. Every
address is made valid by clamping its base register right before the access, so any
register value works and no program faults. At the end all registers are stored at
DUMP and the program exits through OSI EXIT. ``boot_exact`` makes the machine that runs one.
"""

from __future__ import annotations

import random
import struct
from dataclasses import dataclass

BODY = 0x20000
DEC_COUNT, DEC_PERIOD, BODY_MSR, ITERATIONS = 0x3000, 0x3004, 0x3008, 0x3010
DUMP = 0x7000                 # r0-r31, then CR XER LR CTR, FPRs at +0x100, FPSCR at +0x200
DATA, DATA_END = 0x3F000, 0x49000   # random bytes; accesses land in 0x40000-0x48000 +- 256
MSR_FP, MSR_ME, MSR_EE = 0x2000, 0x1000, 0x8000
RAM_MIB = 1                   # the machine boot_exact makes
OSI_MAGIC = (0x113724FA, 0x77810F9B)

# D-form opcodes: (opcode, size, update)
LOADS = {"lwz": (32, 4, 0), "lwzu": (33, 4, 1), "lbz": (34, 1, 0), "lbzu": (35, 1, 1),
         "lhz": (40, 2, 0), "lhzu": (41, 2, 1), "lha": (42, 2, 0), "lhau": (43, 2, 1)}
STORES = {"stw": (36, 4, 0), "stwu": (37, 4, 1), "stb": (38, 1, 0), "stbu": (39, 1, 1),
          "sth": (44, 2, 0), "sthu": (45, 2, 1)}
FLOADS = {"lfs": (48, 4, 0), "lfsu": (49, 4, 1), "lfd": (50, 8, 0), "lfdu": (51, 8, 1)}
FSTORES = {"stfs": (52, 4, 0), "stfsu": (53, 4, 1), "stfd": (54, 8, 0), "stfdu": (55, 8, 1)}
INDEXED = {"lwzx": (23, 4), "stwx": (151, 4), "lbzx": (87, 1), "stbx": (215, 1), "lhzx": (279, 2),
           "sthx": (407, 2)}


def d_form(op: int, rt: int, ra: int, d: int) -> int:
    return (op << 26) | (rt << 21) | (ra << 16) | (d & 0xFFFF)


def x_form(xo: int, rt: int, ra: int, rb: int, rc: int = 0, op: int = 31) -> int:
    return (op << 26) | (rt << 21) | (ra << 16) | (rb << 11) | (xo << 1) | rc


def xo_form(xo: int, rt: int, ra: int, rb: int, oe: int = 0, rc: int = 0) -> int:
    return (31 << 26) | (rt << 21) | (ra << 16) | (rb << 11) | (oe << 10) | (xo << 1) | rc


def spr_form(xo: int, reg: int, spr: int) -> int:
    return (31 << 26) | (reg << 21) | ((spr & 31) << 16) | ((spr >> 5) << 11) | (xo << 1)


def mtspr(spr: int, rs: int) -> int:
    return spr_form(467, rs, spr)


def mfspr(rt: int, spr: int) -> int:
    return spr_form(339, rt, spr)


def rlwinm(ra: int, rs: int, sh: int, mb: int, me: int) -> int:
    return (21 << 26) | (rs << 21) | (ra << 16) | (sh << 11) | (mb << 6) | (me << 1)


def bc(bo: int, bi: int, offset: int) -> int:
    return (16 << 26) | (bo << 21) | (bi << 16) | (offset & 0xFFFC)


def li32(r: int, value: int) -> list[int]:
    """lis + ori: any 32-bit value, no CR or XER change."""
    return [d_form(15, r, 0, value >> 16), d_form(24, r, r, value & 0xFFFF)]


XER, LR, CTR = 1, 8, 9
SC = 0x44000002


@dataclass
class Program:
    code: bytes
    data: bytes
    iterations: int
    outputs: int          # console bytes the program prints

    def words(self) -> int:
        return len(self.code) // 4


class _Gen:
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.out: list[int] = []
        self.prints = 0

    def reg(self, low: int = 0) -> int:
        return self.rng.randrange(low, 32)

    def base(self, avoid: tuple[int, ...] = ()) -> int:
        """A register (never r0) made to point into the data area: the access's base."""
        choices = [r for r in range(1, 32) if r not in avoid]
        rb = self.rng.choice(choices)
        rx = self.reg()
        self.out += [rlwinm(rb, rx, self.rng.randrange(32), 17, 28),   # rotate, & 0x7FF8
                     d_form(15, rb, rb, 4)]                               # addis rb, rb, 4: + 0x40000
        return rb

    def disp(self, size: int) -> int:
        return self.rng.randrange(-256, 256) // size * size

    def op(self) -> None:
        rng, out = self.rng, self.out
        kind = rng.choices(["load", "store", "fload", "fstore", "indexed", "lmw", "stmw", "lswi", "stswi",
                            "atomic", "dcbz", "arith", "fparith", "spr", "cr", "branch", "putc"],
                           weights=[14, 10, 5, 5, 5, 2, 2, 2, 2, 3, 2, 12, 4, 6, 4, 3, 0.3])[0]
        if kind in ("load", "store", "fload", "fstore"):
            table = {"load": LOADS, "store": STORES, "fload": FLOADS, "fstore": FSTORES}[kind]
            name = rng.choice(list(table))
            opc, size, update = table[name]
            rt = self.reg()
            if update:
                ra = self.base(avoid=(rt,) if kind == "load" else ())
            else:
                ra = self.base()
                if kind == "load" and rng.random() < 0.5:      # base = destination
                    rt = ra
            out.append(d_form(opc, rt, ra, self.disp(size)))
        elif kind == "indexed":
            name = rng.choice(list(INDEXED))
            xo, size = INDEXED[name]
            ra = self.base()
            rb = self.base(avoid=(ra,))
            out.append(d_form(14, rb, rb, self.disp(size)))     # addi: an offset into the area
            out.append(rlwinm(rb, rb, 0, 17, 31 if size == 1 else 30 if size == 2 else 29))
            rt = rng.choice([ra, rb, self.reg()]) if name.startswith("l") else self.reg()
            out.append(x_form(xo, rt, ra, rb))
        elif kind == "lmw":
            rt = rng.randrange(20, 32)
            ra = self.base(avoid=tuple(range(rt, 32)))
            out.append(d_form(46, rt, ra, self.disp(4)))
        elif kind == "stmw":
            rs = rng.randrange(20, 32)
            ra = self.base()
            out.append(d_form(47, rs, ra, self.disp(4)))
        elif kind in ("lswi", "stswi"):
            nb = rng.randrange(1, 33)
            rt = self.reg()
            loaded = {(rt + i) % 32 for i in range((nb + 3) // 4)}
            ra = self.base(avoid=tuple(loaded) if kind == "lswi" else ())
            out.append(x_form(597 if kind == "lswi" else 725, rt, ra, nb % 32))
        elif kind == "atomic":
            ra = self.base()
            rt = rng.choice([r for r in range(32) if r != ra])
            out += [x_form(20, rt, 0, ra),                        # lwarx rt, 0, ra
                    d_form(14, rt, rt, rng.randrange(1, 100)) if rt else d_form(14, rt, rt, 0),
                    x_form(150, rt, 0, ra, rc=1),                 # stwcx. rt, 0, ra
                    bc(4, 2, -12)]                                # bne- back to lwarx
        elif kind == "dcbz":
            ra = self.base()
            out.append(x_form(1014, 0, 0, ra))
        elif kind == "arith":
            rt, ra, rb = self.reg(), self.reg(), self.reg()
            out.append(rng.choice([
                xo_form(266, rt, ra, rb, oe=rng.randrange(2), rc=rng.randrange(2)),   # add[o][.]
                xo_form(138, rt, ra, rb, oe=rng.randrange(2), rc=rng.randrange(2)),   # adde[o][.]
                xo_form(136, rt, ra, rb, rc=rng.randrange(2)),                        # subfe[.]
                xo_form(8, rt, ra, rb, oe=rng.randrange(2)),                          # subfc[o]
                d_form(12, rt, ra, rng.randrange(-32768, 32768)),                     # addic
                d_form(13, rt, ra, rng.randrange(-32768, 32768)),                     # addic.
                d_form(14, rt, ra, rng.randrange(-32768, 32768)),                     # addi
                d_form(7, rt, ra, rng.randrange(-32768, 32768)),                      # mulli
                x_form(316, ra, rt, rb, rc=rng.randrange(2)),                         # xor[.]
                x_form(26, ra, rt, 0, rc=rng.randrange(2)),                           # cntlzw[.]
                d_form(11, 0, ra, rng.randrange(-32768, 32768)) | (rng.randrange(8) << 23),  # cmpwi crN
                rlwinm(rt, ra, rng.randrange(32), rng.randrange(32), rng.randrange(32)),
            ]))
        elif kind == "fparith":
            ft, fa, fb, fc = (rng.randrange(32) for _ in range(4))
            out.append(rng.choice([
                x_form(72, ft, 0, fb, op=63),                                         # fmr
                x_form(40, ft, 0, fb, op=63),                                         # fneg
                (63 << 26) | (ft << 21) | (fa << 16) | (fb << 11) | (21 << 1),        # fadd
                (63 << 26) | (ft << 21) | (fa << 16) | (fc << 6) | (25 << 1),         # fmul
                x_form(583, ft, 0, 0, op=63),                                         # mffs
            ]))
        elif kind == "spr":
            r = self.reg()
            spr = rng.choice([XER, LR, CTR])
            out.append(rng.choice([mtspr(spr, r), mfspr(r, spr)]))
        elif kind == "cr":
            r = self.reg()
            out.append(rng.choice([
                (31 << 26) | (r << 21) | (rng.randrange(256) << 12) | (144 << 1),     # mtcrf
                x_form(19, r, 0, 0),                                                  # mfcr
                x_form(193, rng.randrange(32), rng.randrange(32), rng.randrange(32), op=19),   # crxor
                x_form(449, rng.randrange(32), rng.randrange(32), rng.randrange(32), op=19),   # cror
                (31 << 26) | (rng.randrange(8) << 23) | (512 << 1),                   # mcrxr
            ]))
        elif kind == "branch":                                    # skip the next word, maybe
            bo = rng.choice([4, 12, 20])
            out += [bc(bo, rng.randrange(32), 8), d_form(14, self.reg(1), 0, rng.randrange(32768))]
        elif kind == "putc":
            r = self.reg()
            out.append(x_form(444, r, 6, r))                      # mr r6, r (or r6, r, r)
            out += li32(3, OSI_MAGIC[0]) + li32(4, OSI_MAGIC[1]) + [d_form(14, 5, 0, 97), SC]
            self.prints += 1


def dump_and_exit() -> list[int]:
    """Store every register at DUMP, then OSI EXIT with status 0."""
    out = [d_form(47, 0, 0, DUMP)]                               # stmw r0, DUMP(0)
    for i, spr in enumerate((None, XER, LR, CTR)):
        out.append(x_form(19, 3, 0, 0) if spr is None else mfspr(3, spr))
        out.append(d_form(36, 3, 0, DUMP + 0x80 + 4 * i))
    for f in range(32):
        out.append(d_form(54, f, 0, DUMP + 0x100 + 8 * f))
    out += [x_form(583, 0, 0, 0, op=63), d_form(54, 0, 0, DUMP + 0x200)]   # mffs f0; stfd
    out += li32(3, OSI_MAGIC[0]) + li32(4, OSI_MAGIC[1]) + [d_form(14, 5, 0, 54), d_form(14, 6, 0, 0)]
    out += li32(7, 0x45584954) + [SC]                            # OSI EXIT, status 0
    return out


def pack(words: list[int]) -> bytes:
    return struct.pack(f">{len(words)}I", *(w & 0xFFFFFFFF for w in words))


def atomic_counter(count: int, split: int) -> Program:
    """A lwarx/stwcx. increment loop run ``count`` times, counting its successes in r6, with a
    page boundary (a translation block ends there) before its instruction ``split``."""
    loop = 0x1000 - 4 * split                                    # BODY + loop = the boundary - 4*split
    head = li32(4, 0x40000) + [d_form(14, 6, 0, 0)] + li32(7, count)
    words = head + [0x60000000] * (loop // 4 - len(head))        # nops up to the loop
    words += [x_form(20, 5, 0, 4), d_form(14, 5, 5, 1), x_form(150, 5, 0, 4, rc=1),
              bc(4, 2, -12),                                     # bne- loop
              d_form(14, 6, 6, 1), x_form(0, 0, 6, 7),           # addi r6; cmpw r6, r7
              bc(12, 0, 4 * (loop // 4 - (len(words) + 6)))]     # blt loop
    words += dump_and_exit()
    return Program(pack(words), bytes(8), 1, 0)


def generate(seed: int, ops: int = 300, iterations: int = 200) -> Program:
    """The program for ``seed``: ``ops`` random operations run ``iterations`` times."""
    rng = random.Random(seed)
    g = _Gen(rng)
    data = bytes(rng.getrandbits(8) for _ in range(DATA_END - DATA))
    out = g.out
    out += li32(3, DATA)
    for f in range(32):                                          # FPRs from the data area
        out.append(d_form(50, f, 3, 8 * f))
    for spr in (XER, LR, CTR):
        out += li32(3, rng.getrandbits(32)) + [mtspr(spr, 3)]
    out += li32(3, rng.getrandbits(32)) + [(31 << 26) | (3 << 21) | (0xFF << 12) | (144 << 1)]   # mtcrf 0xff
    for r in range(32):
        out += li32(r, rng.getrandbits(32))
    loop = len(out)
    g.prints = 0
    for _ in range(ops):
        g.op()
    prints_per_iteration = g.prints
    here = len(out)
    out += [d_form(32, 3, 0, ITERATIONS), d_form(13, 3, 3, -1), d_form(36, 3, 0, ITERATIONS),
            bc(4, 2, 4 * (loop - (here + 3)))]                   # lwz/addic./stw/bne loop
    out += dump_and_exit()
    return Program(pack(out), data, iterations, prints_per_iteration * iterations)


def boot_exact(program: Program, msr: int, dec_period: int):
    """A booted RAM_MIB machine running the harness with ``program`` at BODY, entered with ``msr``;
    the harness reloads DEC with ``dec_period``."""
    from molpy.boot import bundled_guest
    from molpy.console import BufferConsole
    from molpy.machine import Machine, MachineConfig

    m = Machine(MachineConfig(ram_mib=RAM_MIB, bootfile=str(bundled_guest("exact"))), BufferConsole())
    m.boot()
    view = m.memory.view
    view[BODY:BODY + len(program.code)] = program.code
    view[DATA:DATA + len(program.data)] = program.data
    for addr, value in ((ITERATIONS, program.iterations), (DEC_PERIOD, dec_period), (BODY_MSR, msr)):
        view[addr:addr + 4] = value.to_bytes(4, "big")
    m.cpu.code_changed(0, RAM_MIB << 20)
    return m
