"""Booting a guest ELF: segments to their physical addresses, registers set for crt0.

At entry: PC = entry, MSR with FP on and the MMU off, r1 = a 16-byte aligned stack
below the boot-argument page at the top of RAM, r3 = RAM size, r4 = the guest
address of the NUL-terminated boot_args string. pyelftools is imported only here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from .cpu import BOOT_MSR, CpuState
from .errors import ConfigError

ARGS_PAGE = 4096                 # the top page of RAM holds boot_args
STACK_RESERVE = 64 * 1024        # at least this much stack below it
EM_PPC = 20


class BootError(ConfigError):
    """The ELF cannot be booted; the message names the file and the reason."""


@dataclass
class Segment:
    paddr: int
    data: bytes
    memsz: int


def demo_guest() -> Path:
    """The bundled demo guest, package data of molpy."""
    return Path(str(resources.files("molpy") / "guest" / "demo.elf"))


def bundled_guest(name: str) -> Path:
    """A bundled test guest by name (``osi_calls``, ``regs`` ...)."""
    return Path(str(resources.files("molpy") / "guest" / "tests" / f"{name}.elf"))


def read_elf(path: str | os.PathLike, ram_size: int) -> tuple[int, list[Segment]]:
    """Entry point and loadable segments, refusing anything that is not a PPC32 BE executable."""
    from elftools.common.exceptions import ELFError
    from elftools.elf.elffile import ELFFile

    path = os.fspath(path)
    try:
        f = open(path, "rb")
    except OSError as e:
        raise BootError(f"{path}: cannot open guest: {e.strerror}") from None
    with f:
        try:
            elf = ELFFile(f)
            if elf.elfclass != 32 or elf.little_endian:
                raise BootError(f"{path}: not a 32-bit big-endian ELF "
                                f"({elf.elfclass}-bit, {'little' if elf.little_endian else 'big'}-endian)")
            if elf["e_machine"] != "EM_PPC":
                raise BootError(f"{path}: not a PowerPC executable (machine {elf['e_machine']})")
            if elf["e_type"] != "ET_EXEC":
                raise BootError(f"{path}: not an executable ELF (type {elf['e_type']})")
            limit = ram_size - ARGS_PAGE - STACK_RESERVE
            segments = []
            for seg in elf.iter_segments():
                if seg["p_type"] != "PT_LOAD" or seg["p_memsz"] == 0:
                    continue
                start, memsz = seg["p_paddr"], seg["p_memsz"]
                if seg["p_filesz"] > memsz:
                    raise BootError(f"{path}: a segment's file size is larger than its memory size")
                if start + memsz > limit:
                    raise BootError(f"{path}: segment at 0x{start:08x}+0x{memsz:x} does not fit in "
                                    f"{ram_size >> 20} MiB of RAM (room below 0x{limit:08x})")
                segments.append(Segment(start, seg.data(), memsz))
            if not segments:
                raise BootError(f"{path}: no loadable segments")
            entry = elf["e_entry"]
        except ELFError as e:
            raise BootError(f"{path}: not an ELF file ({e})") from None
        except (ValueError, OSError, EOFError) as e:   # truncated or malformed headers
            raise BootError(f"{path}: damaged ELF file ({e})") from None
    if not any(s.paddr <= entry < s.paddr + s.memsz for s in segments):
        raise BootError(f"{path}: entry point 0x{entry:08x} is outside every loaded segment")
    return entry, segments


def boot_state(entry: int, ram_size: int, args_addr: int) -> CpuState:
    """The registers a guest finds at its entry point."""
    state = CpuState(msr=BOOT_MSR, pc=entry)
    state.gpr[1] = (args_addr - 64) & ~0xF
    state.gpr[3] = ram_size
    state.gpr[4] = args_addr
    return state


def load(memory, path: str | os.PathLike, boot_args: str) -> CpuState:
    """Place the ELF and the boot arguments in RAM; return the entry CPU state."""
    entry, segments = read_elf(path, memory.size)
    args = boot_args.encode("utf-8")
    if len(args) >= ARGS_PAGE:
        raise BootError(f"boot_args is {len(args)} bytes; at most {ARGS_PAGE - 1} fit")
    for seg in segments:
        memory.write(seg.paddr, seg.data)
    args_addr = memory.size - ARGS_PAGE
    memory.write(args_addr, args + b"\0")
    return boot_state(entry, memory.size, args_addr)
