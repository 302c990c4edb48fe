"""Booting a Linux kernel the way molpy's platform expects (docs/linux.md).

Entry: every PT_LOAD segment at its p_paddr, the MMU off, PC = the entry point's
physical address, r3 = the physical address of a flattened device tree, r4 = r5 = 0,
r1 a usable stack. Unless the molrc gives ``dtb:``, the tree is built here with libfdt
(pylibfdt): root compatible "molpy", /memory, /cpus/cpu@0, /chosen.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from ..boot import BootError, Segment
from ..cpu import BOOT_MSR, CpuState
from ..timebase import TB_FREQ

FDT_RESERVE = 64 * 1024          # the top of RAM: the device tree
STACK_RESERVE = 64 * 1024        # below it: the entry stack
CPU_CLOCK = 400_000_000          # what the tree tells the kernel (it only prints it)
BUS_CLOCK = 4 * TB_FREQ          # the time base runs at bus / 4 on a G3
CPU_NAMES = {"750": "PowerPC,750", None: "PowerPC,750"}


@dataclass
class Kernel:
    entry: int                   # physical
    segments: list[Segment]
    end: int                     # first byte after the highest segment


def read_kernel(path: str, ram_size: int) -> Kernel:
    """A PPC32 big-endian vmlinux: segments at p_paddr, entry translated to physical."""
    from elftools.common.exceptions import ELFError
    from elftools.elf.elffile import ELFFile

    try:
        f = open(path, "rb")
    except OSError as e:
        raise BootError(f"{path}: cannot open kernel: {e.strerror}") from None
    with f:
        try:
            elf = ELFFile(f)
            if elf.elfclass != 32 or elf.little_endian or elf["e_machine"] != "EM_PPC":
                raise BootError(f"{path}: not a 32-bit big-endian PowerPC ELF")
            if elf["e_type"] != "ET_EXEC":
                raise BootError(f"{path}: not an executable ELF (type {elf['e_type']})")
            limit = ram_size - FDT_RESERVE - STACK_RESERVE
            segments, entry, vmentry = [], None, elf["e_entry"]
            for seg in elf.iter_segments():
                if seg["p_type"] != "PT_LOAD" or seg["p_memsz"] == 0:
                    continue
                pa, va, memsz = seg["p_paddr"], seg["p_vaddr"], seg["p_memsz"]
                if seg["p_filesz"] > memsz:
                    raise BootError(f"{path}: a segment's file size is larger than its memory size")
                if pa + memsz > limit:
                    raise BootError(f"{path}: segment at 0x{pa:08x}+0x{memsz:x} does not fit in "
                                    f"{ram_size >> 20} MiB of RAM")
                if va <= vmentry < va + memsz:
                    entry = pa + (vmentry - va)
                segments.append(Segment(pa, seg.data(), memsz))
        except ELFError as e:
            raise BootError(f"{path}: not an ELF file ({e})") from None
        except (ValueError, OSError, EOFError) as e:
            raise BootError(f"{path}: damaged ELF file ({e})") from None
    if not segments:
        raise BootError(f"{path}: no loadable segments")
    if entry is None:
        raise BootError(f"{path}: entry point 0x{vmentry:08x} is outside every loaded segment")
    return Kernel(entry, segments, max(s.paddr + s.memsz for s in segments))


def make_fdt(ram_size: int, bootargs: str, cpu: str | None = None,
             initrd: tuple[int, int] | None = None, tb_freq: int = TB_FREQ) -> bytes:
    """The device tree molpy's platform binds to (docs/linux.md has the binding)."""
    try:
        import libfdt
    except ImportError:
        raise BootError("booting a kernel needs pylibfdt (pip install pylibfdt)") from None

    sw = libfdt.FdtSw()
    sw.finish_reservemap()
    with sw.add_node(""):
        sw.property_string("compatible", "molpy")
        sw.property_string("model", "molpy")
        sw.property_u32("#address-cells", 1)
        sw.property_u32("#size-cells", 1)
        with sw.add_node("chosen"):
            sw.property_string("bootargs", bootargs)
            if initrd:
                sw.property_u32("linux,initrd-start", initrd[0])
                sw.property_u32("linux,initrd-end", initrd[1])
        with sw.add_node("memory@0"):
            sw.property_string("device_type", "memory")
            sw.property("reg", (0).to_bytes(4, "big") + ram_size.to_bytes(4, "big"))
        with sw.add_node("cpus"):
            sw.property_u32("#address-cells", 1)
            sw.property_u32("#size-cells", 0)
            with sw.add_node("cpu@0"):
                sw.property_string("device_type", "cpu")
                sw.property_string("compatible", CPU_NAMES.get(cpu, f"PowerPC,{cpu}"))
                sw.property_u32("reg", 0)
                sw.property_u32("timebase-frequency", tb_freq)
                sw.property_u32("clock-frequency", CPU_CLOCK)
                sw.property_u32("bus-frequency", BUS_CLOCK)
                for cache in ("i", "d"):          # the 750's L1: 32 KiB, 8 ways, 32-byte lines
                    sw.property_u32(f"{cache}-cache-size", 32 * 1024)
                    sw.property_u32(f"{cache}-cache-line-size", 32)
                    sw.property_u32(f"{cache}-cache-block-size", 32)
                    sw.property_u32(f"{cache}-cache-sets", 128)
    fdt = sw.as_fdt()
    fdt.pack()
    return bytes(fdt.as_bytearray())


@dataclass
class KernelPlan:
    """Where a Linux boot puts everything in RAM, every input checked (nothing written yet)."""

    kernel: Kernel
    initrd_range: tuple[int, int] | None
    initrd_data: bytes
    fdt_addr: int
    fdt: bytes


def plan_kernel(ram_size: int, path: str, bootargs: str, *, cpu: str | None = None,
                initrd: str | None = None, dtb: str | None = None) -> KernelPlan:
    """Read and check kernel, initrd and device tree for a machine of ``ram_size`` bytes
    (BootError naming the file): what a boot does before it writes RAM, and all that
    ``molpy run --check`` does with them."""
    kernel = read_kernel(path, ram_size)
    fdt_addr = ram_size - FDT_RESERVE
    top = fdt_addr - STACK_RESERVE          # initrd goes below the stack
    initrd_range = None
    initrd_data = b""
    if initrd:
        try:
            with open(initrd, "rb") as f:
                initrd_data = f.read(top + 1)
        except OSError as e:
            raise BootError(f"{initrd}: cannot read initrd: {e.strerror}") from None
        start = (top - len(initrd_data)) & ~0xFFF
        if start < ((kernel.end + 0xFFFF) & ~0xFFFF) + (4 << 20):   # room for the kernel's bss and early allocations
            raise BootError(f"{initrd}: {len(initrd_data)} bytes do not fit in RAM above the kernel")
        initrd_range = (start, start + len(initrd_data))
    if dtb:
        try:
            with open(dtb, "rb") as f:
                blob = f.read(FDT_RESERVE + 1)
        except OSError as e:
            raise BootError(f"{dtb}: cannot read device tree: {e.strerror}") from None
        if blob[:4] != b"\xd0\x0d\xfe\xed":
            raise BootError(f"{dtb}: not a flattened device tree (no magic)")
    else:
        blob = make_fdt(ram_size, bootargs, cpu, initrd_range)
    if len(blob) > FDT_RESERVE:
        raise BootError(f"device tree is {len(blob)} bytes; at most {FDT_RESERVE} fit")
    return KernelPlan(kernel, initrd_range, initrd_data, fdt_addr, blob)


def load_kernel(memory, path: str, bootargs: str, *, cpu: str | None = None,
                initrd: str | None = None, dtb: str | None = None) -> CpuState:
    """Place kernel, initrd and device tree in RAM; return the entry CPU state."""
    plan = plan_kernel(memory.size, path, bootargs, cpu=cpu, initrd=initrd, dtb=dtb)
    for seg in plan.kernel.segments:
        memory.write(seg.paddr, seg.data)
        if seg.memsz > len(seg.data):
            memory.write(seg.paddr + len(seg.data), bytes(seg.memsz - len(seg.data)))
    if plan.initrd_range:
        memory.write(plan.initrd_range[0], plan.initrd_data)
    memory.write(plan.fdt_addr, plan.fdt)
    state = CpuState(msr=BOOT_MSR, pc=plan.kernel.entry)
    state.gpr[1] = (plan.fdt_addr - 256) & ~0xF
    state.gpr[3] = plan.fdt_addr
    state.gpr[4] = 0
    state.gpr[5] = 0
    return state


def resolve_kernel(value: str) -> str:
    """``kernel: linux`` is the one ``molpy linux build`` made; anything else is a path."""
    if value == "linux":
        from .build import HOW_TO_GET, cached_vmlinux

        path = cached_vmlinux()
        if path is None:
            raise BootError(f"kernel: linux: not built yet; {HOW_TO_GET}")
        return str(path)
    if not os.path.isfile(value):
        raise BootError(f"kernel: {value}: no such file")
    return value
