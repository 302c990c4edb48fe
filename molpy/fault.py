"""Guest faults: what stopped the guest, and a report a person can act on."""

from __future__ import annotations

from dataclasses import dataclass

from .cpu import CpuState

# QEMU's POWERPC_EXCP_* numbers, as Unicorn passes them to the interrupt hook.
EXCEPTION_NAMES = {
    0: "critical input", 1: "machine check", 2: "data storage (DSI)", 3: "instruction storage (ISI)",
    4: "external interrupt", 5: "alignment", 6: "program", 7: "floating point unavailable",
    8: "system call", 9: "auxiliary processor unavailable", 10: "decrementer",
    13: "data TLB miss", 14: "instruction TLB miss", 15: "debug", 20: "performance monitor",
    68: "trace", 96: "program (invalid instruction)",
}



@dataclass
class GuestFault:
    """A stop the guest did not ask for."""

    kind: str                 # short name, e.g. "illegal instruction"
    pc: int                   # address of the faulting instruction
    detail: str = ""
    intno: int | None = None
    insn: int | None = None   # the instruction word at pc, when readable
    state: CpuState | None = None
    insn_note: str = ""       # how pc was translated, or why its word cannot be read

    def report(self) -> str:
        """Multi-line text: exception, PC, instruction disassembled, registers."""
        lines = [f"molpy: guest fault: {self.kind}"
                 + (f" (exception {self.intno}: {EXCEPTION_NAMES.get(self.intno, 'unknown')})"
                    if self.intno is not None else "")]
        if self.detail:
            lines.append(f"  {self.detail}")
        lines.append(f"  pc  0x{self.pc:08x}: {disassemble(self.insn, self.pc)}")
        if self.insn_note:
            lines.append(f"      ({self.insn_note})")
        s = self.state
        if s is not None:
            for row in range(8):
                lines.append("  " + "  ".join(f"r{4 * row + i:<2} {s.gpr[4 * row + i]:08x}" for i in range(4)))
            lines.append(f"  cr  {s.cr:08x}  lr  {s.lr:08x}  ctr {s.ctr:08x}  xer {s.xer:08x}")
            lines.append(f"  msr {s.msr:08x}  srr0 {s.spr['SRR0']:08x}  srr1 {s.spr['SRR1']:08x}"
                         f"  dar {s.spr['DAR']:08x}  dsisr {s.spr['DSISR']:08x}")
        return "\n".join(lines)


def disassemble(word: int | None, pc: int) -> str:
    """One instruction as hex and assembly; capstone is imported only here (fault path)."""
    if word is None:
        return "(instruction not readable)"
    text = "(not a valid instruction)"
    try:
        import capstone
        md = capstone.Cs(capstone.CS_ARCH_PPC, capstone.CS_MODE_32 | capstone.CS_MODE_BIG_ENDIAN)
        for insn in md.disasm(word.to_bytes(4, "big"), pc):
            text = f"{insn.mnemonic} {insn.op_str}".strip()
            break
    except ImportError:  # pragma: no cover - capstone is a dependency
        text = "(capstone not installed)"
    return f"{word:08x}  {text}"


def instruction_at(state: CpuState, ram, pc: int) -> tuple[int | None, str]:
    """The word at virtual ``pc`` through the translation the guest had, and how it was found.

    With the MMU on, reading physical RAM at a virtual PC would name another address's
    instruction; this walks the guest's own BATs and page table instead (molpy.mmu).
    """
    from .mmu import FETCH, MmuState, read_word

    word, t = read_word(MmuState.from_cpu_state(state), ram, pc, FETCH)
    if word is None:
        return None, f"not readable: {t.describe()}{'' if t.phys is None else ', outside RAM'}"
    return word, "" if t.via == "real mode" else f"virtual address: {t.describe()}"
