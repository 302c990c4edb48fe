"""PowerPC exceptions delivered as the 750 does, at the instruction that raised them.

Unicorn reports an exception to the interrupt hook and, unless the hook stops the engine,
skips the instruction and runs on; it never sets SRR0/SRR1. So the hook only records the
exception and stops (``raised``); before the next slice starts, :meth:`deliver_raised`
does what the 750 does: SRR0 = the instruction to return to, SRR1 = MSR bits 0, 5-9 and
16-31 plus the reason bits, DAR/DSISR where the architecture sets them, the new MSR
(only ME, IP and ILE kept; LE = ILE) and PC = the vector (0xFFF00000 + offset when
MSR[IP] is set). Nothing is ever run nested inside the hook and nothing waits for a slice
to end, so the guest sees the same exceptions at the same instructions whatever the
slice timing. The decrementer and external interrupts are asynchronous: they are taken
between slices, when MSR[EE] is set (:meth:`deliver_async`).

A fault report (exit 3) stays for what a real machine cannot survive: a vector with no
code, a vector outside RAM, a machine check, a double fault (an exception raised inside
the 256-byte vector slot of the handler just entered while MSR[RI] is still 0, i.e.
before the handler can have saved SRR0/SRR1), and any exception Unicorn reports that the
750 has no vector for.
"""

from __future__ import annotations

from dataclasses import dataclass

from unicorn import ppc_const as P

from .cpu import Cpu, RegisterFile
from .cpuenv import DAR, DSISR, SRR0, SRR1, CpuEnv
from .fault import EXCEPTION_NAMES, GuestFault
from .mmu import FETCH, MmuState, read_word, translate
from .timebase import TimeBase

MASK = 0xFFFFFFFF

# QEMU's POWERPC_EXCP_* numbers as Unicorn's interrupt hook receives them (750 model)
INTNO_MCHECK, INTNO_DSI, INTNO_ISI, INTNO_ALIGN, INTNO_PROGRAM = 1, 2, 3, 5, 6
INTNO_FPU, INTNO_SYSCALL, INTNO_TRACE, INTNO_INVALID = 7, 8, 68, 96

MSR_ILE, MSR_EE, MSR_PR, MSR_ME = 0x10000, 0x8000, 0x4000, 0x1000
MSR_FE0, MSR_FE1, MSR_IP, MSR_RI, MSR_LE = 0x800, 0x100, 0x40, 0x2, 0x1
SRR1_FROM_MSR = 0x87C0FFFF           # SRR1 bits 1-4 and 10-15 are reason bits, cleared

# SRR1 reason bits of a program exception
PROGRAM_FP, PROGRAM_ILLEGAL, PROGRAM_PRIVILEGED, PROGRAM_TRAP = 0x00100000, 0x00080000, 0x00040000, 0x00020000

VECTOR_NAMES = {0x200: "machine check", 0x300: "DSI", 0x400: "ISI", 0x500: "external interrupt",
                0x600: "alignment", 0x700: "program", 0x800: "FP unavailable", 0x900: "decrementer",
                0xC00: "system call", 0xD00: "trace"}
SLOT = 0x100                          # each vector has 256 bytes before the next
POLL_EE_NS = 1_000_000                # a pending interrupt is taken within 1 ms of the guest setting MSR[EE]
POLL_EE_FOR_NS = 50_000_000           # ... during its first 50 ms; later within one slice (10 ms)


@dataclass(frozen=True)
class Delivery:
    """One exception as the guest received it (kept when ``ExceptionUnit.log`` is a list)."""

    vector: int
    srr0: int
    srr1: int
    dar: int | None = None
    dsisr: int | None = None


def _is_fp_arith(word: int) -> bool:
    """An instruction that can raise an enabled FP exception (the FPU's arithmetic and FPSCR ops)."""
    primary = word >> 26
    return primary in (59, 63)


def alignment_dsisr(word: int) -> int:
    """DSISR for an alignment exception: the instruction's opcode bits, rD/rS and rA (750 manual)."""
    if word >> 26 == 31:                       # X form: bits 29-30, 25, 21-24
        bits = ((word >> 1) & 3) << 15 | ((word >> 6) & 1) << 14 | ((word >> 7) & 0xF) << 10
    else:                                      # D form: bit 5, bits 1-4
        bits = ((word >> 26) & 1) << 14 | ((word >> 27) & 0xF) << 10
    return bits | ((word >> 21) & 0x1F) << 5 | (word >> 16) & 0x1F


class ExceptionUnit:
    """Delivers the guest's exceptions; owns the external interrupt lines."""

    def __init__(self, cpu: Cpu, env: CpuEnv, ram: memoryview, timebase: TimeBase) -> None:
        self.cpu, self.env, self.ram, self.timebase = cpu, env, ram, timebase
        self.raised: int | None = None      # set by the interrupt hook, taken by deliver_raised
        self.lines: set[str] = set()         # asserted external interrupt sources
        self.delivered = 0
        self.log: list[Delivery] | None = None
        self._entered: int | None = None     # vector address of the last delivery
        self._pending_since: int | None = None
        self._state = RegisterFile(cpu.uch, [P.UC_PPC_REG_PC, P.UC_PPC_REG_MSR])
        self._enter_regs = RegisterFile(cpu.uch, [P.UC_PPC_REG_MSR, P.UC_PPC_REG_PC])

    def reset(self) -> None:
        """Forget the exception in progress (Machine.reset)."""
        self.raised = None
        self._entered = None

    # -- from the interrupt hook --

    def on_interrupt(self, intno: int) -> None:
        """An exception that is not an OSI call: remember it and stop before anything else runs."""
        self.raised = intno
        self.cpu.stop()

    # -- external interrupt lines (devices) --

    def assert_line(self, source: str) -> None:
        """Hold the external interrupt line up for ``source`` until ``release_line``."""
        self.lines.add(source)

    def release_line(self, source: str) -> None:
        self.lines.discard(source)

    # -- between slices --

    def _pc_msr(self) -> tuple[int, int]:
        pc, msr = self._state.read()
        return pc & MASK, msr & MASK

    def _mmu(self, msr: int) -> MmuState:
        return self.env.load().mmu_state(msr)

    def _insn(self, pc: int, msr: int) -> int | None:
        """The instruction at virtual ``pc`` through the guest's translation (None: unreadable)."""
        return read_word(self._mmu(msr), self.ram, pc, FETCH)[0]

    def deliver_raised(self) -> GuestFault | None:
        """Deliver the exception the hook recorded; a GuestFault when the machine cannot survive it."""
        intno, self.raised = self.raised, None
        pc, msr = self._pc_msr()
        at = (pc - 4) & MASK            # the hook sees PC past the instruction that raised
        if intno == INTNO_DSI:
            return self._enter(0x300, at, 0, msr, at, "data access fault", intno)
        if intno == INTNO_ISI:
            reason = translate(self._mmu(msr), self.ram, at, FETCH).reason or 0x40000000
            return self._enter(0x400, at, reason, msr, at, "instruction fetch fault", intno)
        if intno == INTNO_ALIGN:
            return self._alignment(at, msr, intno)
        if intno == INTNO_INVALID:
            return self._enter(0x700, at, PROGRAM_ILLEGAL, msr, at, "illegal instruction", intno)
        if intno == INTNO_PROGRAM:
            reason, name = self._program_reason(at, msr)
            return self._enter(0x700, at, reason, msr, at, name, intno)
        if intno == INTNO_FPU:
            return self._enter(0x800, at, 0, msr, at, "FP used while disabled", intno)
        if intno == INTNO_SYSCALL:      # returns to the instruction after sc
            return self._enter(0xC00, pc, 0, msr, at, "system call (no OSI magic in r3/r4)", intno)
        if intno == INTNO_TRACE:        # SRR0 = the next instruction to run
            return self._enter(0xD00, at, 0, msr, at, "trace", intno)
        kind = "machine check" if intno == INTNO_MCHECK else EXCEPTION_NAMES.get(intno, f"exception {intno}")
        return GuestFault(kind=kind, pc=at, intno=intno,
                          detail="a 750 cannot go on after this exception; molpy does not deliver it")

    def _program_reason(self, at: int, msr: int) -> tuple[int, str]:
        """Trap, privileged, illegal or FP-enabled: Unicorn says only 'program', so decode the word."""
        word = self._insn(at, msr)
        if word is not None:
            primary = word >> 26
            if primary == 3 or (primary == 31 and (word >> 1) & 0x3FF == 4):
                return PROGRAM_TRAP, "trap"
            if _is_fp_arith(word) and msr & (MSR_FE0 | MSR_FE1):
                return PROGRAM_FP, "FP exception (enabled in FPSCR)"
        if msr & MSR_PR:
            return PROGRAM_PRIVILEGED, "privileged instruction"
        return PROGRAM_ILLEGAL, "illegal instruction"   # e.g. an mtspr to an SPR the 750 lacks

    def _alignment(self, at: int, msr: int, intno: int) -> GuestFault | None:
        word = self._insn(at, msr)
        if word is None:        # only if the page table changed under a translation Unicorn kept
            dar, dsisr = 0, 0
        else:
            ra, rb = (word >> 16) & 0x1F, (word >> 11) & 0x1F
            base = self.cpu.reg(ra) if ra else 0
            if word >> 26 == 31:
                dar = (base + self.cpu.reg(rb)) & MASK
            else:
                d = word & 0xFFFF
                dar = (base + (d - 0x10000 if d & 0x8000 else d)) & MASK
            dsisr = alignment_dsisr(word)
        return self._enter(0x600, at, 0, msr, at, "alignment fault", intno, dar=dar, dsisr=dsisr)

    def before_slice(self, now: int) -> tuple[GuestFault | None, int | None]:
        """Take a pending external interrupt (first) or decrementer exception if MSR[EE] allows.

        Returns a fault, if the machine cannot take it, and the host time by which the next
        slice must end for the next asynchronous exception (None: no such time).
        """
        pc, msr = self._pc_msr()
        timebase = self.timebase
        if not (self.lines or timebase.poll(now)):
            self._pending_since = None
            return None, timebase.next_crossing()    # whatever MSR[EE] is now: the guest may set it
        if msr & MSR_EE:
            if self.lines:
                fault = self._enter(0x500, pc, 0, msr, pc, "external interrupt", None)
            else:
                timebase.dec_pending = False
                fault = self._enter(0x900, pc, 0, msr, pc, "decrementer", None)
            self._pending_since = None
            if self.lines or timebase.poll(now):    # still pending: the handler runs with EE off
                return fault, now + POLL_EE_NS
            return fault, timebase.next_crossing()
        # Pending with MSR[EE] off: whether the guest sets it is seen only between slices.
        # Look often for a while (guests mask interrupts briefly), then at the normal slice
        # rate (a guest that keeps them masked must not pay for the polling).
        if self._pending_since is None:
            self._pending_since = now
        return None, now + POLL_EE_NS if now - self._pending_since < POLL_EE_FOR_NS else None

    def _enter(self, offset: int, srr0: int, reason: int, msr: int, at: int, name: str,
               intno: int | None, dar: int | None = None, dsisr: int | None = None) -> GuestFault | None:
        """Enter the handler at ``offset``, or say why the machine cannot."""
        vector = offset | (0xFFF00000 if msr & MSR_IP else 0)
        label = VECTOR_NAMES[offset]
        if vector + 4 > len(self.ram):
            return GuestFault(kind=name, pc=at, intno=intno,
                              detail=f"no handler: the {label} vector 0x{vector:08x} is outside RAM "
                                     f"(MSR[IP] = {int(bool(msr & MSR_IP))})")
        if not any(self.ram[vector:vector + 4]):
            return GuestFault(kind=name, pc=at, intno=intno,
                              detail=f"no handler: the {label} vector 0x{vector:08x} holds no code")
        entered = self._entered
        if (intno is not None and entered is not None and entered <= at < entered + SLOT
                and not msr & MSR_RI):
            return GuestFault(kind=f"double fault: {name}", pc=at, intno=intno,
                              detail=f"raised inside the {VECTOR_NAMES[entered & 0xFFFF]} handler at "
                                     f"0x{entered:08x} before it saved SRR0/SRR1 (MSR[RI] = 0)")
        srr1 = (msr & SRR1_FROM_MSR) | reason
        env = self.env.load()
        env.set_spr(SRR0, srr0)
        env.set_spr(SRR1, srr1)
        if dar is not None:
            env.set_spr(DAR, dar)
            env.set_spr(DSISR, dsisr or 0)
        env.store()
        new_msr = msr & (MSR_ME | MSR_IP | MSR_ILE) | (MSR_LE if msr & MSR_ILE else 0)
        self._enter_regs.write([new_msr, vector])
        self._entered = vector
        self.delivered += 1
        if self.log is not None:
            if offset == 0x300:
                dar, dsisr = env.spr(DAR), env.spr(DSISR)
            self.log.append(Delivery(vector, srr0, srr1, dar, dsisr))
        return None

