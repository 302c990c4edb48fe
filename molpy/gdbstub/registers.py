"""The register map gdb sees: numbers, the target description, values from a CpuState.

Numbers 0-70 are gdb's own for 32-bit PowerPC (r0-r31, f0-f31, pc, msr, cr, lr, ctr, xer,
fpscr), so ``set architecture powerpc:750`` without the description agrees with it; the
supervisor registers follow from 71 as a feature of their own.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..cpu import SPR_NAMES, CpuState


@dataclass(frozen=True)
class Reg:
    name: str        # gdb's name (lower case)
    bits: int        # 32 or 64
    kind: str        # "gpr", "fpr", "sr", "spr" or the CpuState field ("pc", "msr", ...)
    index: int = 0   # for gpr/fpr/sr; for spr, the CpuState.spr key is in ``key``
    key: str = ""
    type: str = "uint32"
    feature: str = "core"


def _build() -> tuple[Reg, ...]:
    regs = [Reg(f"r{i}", 32, "gpr", i) for i in range(32)]
    regs += [Reg(f"f{i}", 64, "fpr", i, type="ieee_double", feature="fpu") for i in range(32)]
    regs += [Reg("pc", 32, "pc", type="code_ptr"), Reg("msr", 32, "msr"), Reg("cr", 32, "cr"),
             Reg("lr", 32, "lr", type="code_ptr"), Reg("ctr", 32, "ctr"), Reg("xer", 32, "xer"),
             Reg("fpscr", 32, "fpscr", feature="fpu")]
    regs += [Reg(f"sr{i}", 32, "sr", i, feature="supervisor") for i in range(16)]
    regs += [Reg(name.lower(), 32, "spr", key=name, feature="supervisor") for name in SPR_NAMES]
    return tuple(regs)


REGISTERS: tuple[Reg, ...] = _build()
BY_NAME = {r.name: n for n, r in enumerate(REGISTERS)}

FEATURES = {"core": "org.gnu.gdb.power.core", "fpu": "org.gnu.gdb.power.fpu",
            "supervisor": "org.molpy.power.supervisor"}


def target_xml() -> bytes:
    """The target description gdb reads through qXfer:features:read:target.xml."""
    parts = ['<?xml version="1.0"?>', '<!DOCTYPE target SYSTEM "gdb-target.dtd">',
             "<target version=\"1.0\">", "  <architecture>powerpc:750</architecture>"]
    for feature, fname in FEATURES.items():
        parts.append(f'  <feature name="{fname}">')
        for n, r in enumerate(REGISTERS):
            if r.feature == feature:
                group = ' group="float"' if r.name == "fpscr" else ""
                parts.append(f'    <reg name="{r.name}" bitsize="{r.bits}" type="{r.type}" regnum="{n}"{group}/>')
        parts.append("  </feature>")
    parts.append("</target>")
    return ("\n".join(parts) + "\n").encode()


def value(state: CpuState, n: int) -> int:
    r = REGISTERS[n]
    if r.kind == "gpr":
        return state.gpr[r.index]
    if r.kind == "fpr":
        return state.fpr[r.index]
    if r.kind == "sr":
        return state.sr[r.index]
    if r.kind == "spr":
        return state.spr[r.key]
    return getattr(state, r.kind)


def set_value(state: CpuState, n: int, v: int) -> None:
    r = REGISTERS[n]
    v &= (1 << r.bits) - 1
    if r.kind == "gpr":
        state.gpr[r.index] = v
    elif r.kind == "fpr":
        state.fpr[r.index] = v
    elif r.kind == "sr":
        state.sr[r.index] = v
    elif r.kind == "spr":
        state.spr[r.key] = v
    else:
        setattr(state, r.kind, v)


def encode(state: CpuState, n: int) -> bytes:
    """One register as gdb wants it: big-endian bytes in hex."""
    r = REGISTERS[n]
    return value(state, n).to_bytes(r.bits // 8, "big").hex().encode()


def encode_all(state: CpuState) -> bytes:
    return b"".join(encode(state, n) for n in range(len(REGISTERS)))


def decode_into(state: CpuState, n: int, text: bytes) -> None:
    """``P``: one register from hex; ValueError on a wrong length or bad digits."""
    r = REGISTERS[n]
    raw = bytes.fromhex(text.decode("ascii"))
    if len(raw) != r.bits // 8:
        raise ValueError(f"register {r.name} takes {r.bits // 8} bytes")
    set_value(state, n, int.from_bytes(raw, "big"))


def decode_all(state: CpuState, text: bytes) -> None:
    """``G``: registers in order; gdb may send fewer than all (the rest keep their values)."""
    raw = bytes.fromhex(text.decode("ascii"))
    pos = 0
    for n, r in enumerate(REGISTERS):
        size = r.bits // 8
        if pos + size > len(raw):
            if pos != len(raw):
                raise ValueError("G packet ends inside a register")
            return
        set_value(state, n, int.from_bytes(raw[pos:pos + size], "big"))
        pos += size
    if pos != len(raw):
        raise ValueError("G packet is longer than the register file")
