"""What kind of file a disk is, from its first bytes: a raw disk, or a container image.

osi_blk serves a file's bytes as they are (raw). A qcow2, vmdk or vdi image, a molpy
overlay or a molpy session handed to a ``blkdev`` would be served as a disk whose
sectors are that format's header and tables: the guest sees garbage, and a -rw guest
rewrites the container. So a ``blkdev`` is probed before it is attached and a container
is refused, naming its format (``-raw`` on the line insists). An Apple partition map or
an HFS/HFS+/HFSX volume is a raw disk layout and is only named.

The probe reads one block (``PROBE_BYTES``) from the start of the file, never more, so
a 16 GiB image costs what a 1 KiB one does. Every signature is checked at its offset in
that block; anything else is "raw".
"""

from __future__ import annotations

import os
import stat
import struct
from dataclasses import dataclass

PROBE_BYTES = 4096              # the header block read; every signature below lies in it
RAW_FLAG = "-raw"               # the blkdev flag that attaches a container's bytes as they are


@dataclass(frozen=True)
class DiskFormat:
    """One probe's answer: ``name`` (short, stable), what it is in words, and whether
    it is a container (its bytes are not the guest's disk) or a raw disk layout."""

    name: str
    description: str
    container: bool
    hint: str = ""              # what to do instead of attaching it (containers only)


RAW = DiskFormat("raw", "a raw disk image", False)
_CONVERT = "convert it to raw (qemu-img convert -O raw)"


def _container(name: str, description: str, hint: str = _CONVERT) -> DiskFormat:
    return DiskFormat(name, description, True, hint)


def _u32be(head: bytes, offset: int) -> int:
    return struct.unpack_from(">I", head, offset)[0] if len(head) >= offset + 4 else -1


def _u32le(head: bytes, offset: int) -> int:
    return struct.unpack_from("<I", head, offset)[0] if len(head) >= offset + 4 else -1


VDI_SIGNATURE = 0xBEDA107F      # VirtualBox's image signature, little-endian at 0x40


def probe_bytes(head: bytes) -> DiskFormat:
    """The format whose signature ``head`` (a file's first bytes) carries; RAW otherwise."""
    if head[:4] == b"QFI\xfb":
        version = _u32be(head, 4)
        if version == 1:
            return _container("qcow", "a qcow image (QEMU's format version 1)")
        return _container("qcow2", f"a qcow2 image (QEMU, version {version})")
    if head[:4] == b"QED\0":
        return _container("qed", "a QED image (QEMU)")
    if head[:4] in (b"KDMV", b"COWD"):
        return _container("vmdk", "a VMDK sparse image (VMware)")
    if head.lstrip(b" \t\r\n")[:21] == b"# Disk DescriptorFile":
        return _container("vmdk", "a VMDK descriptor (VMware; the disk's data is in the extent "
                                  "files it names)",
                          "attach the flat extent file it names (raw), or " + _CONVERT)
    if _u32le(head, 0x40) == VDI_SIGNATURE or (head[:4] == b"<<< " and b" Disk Image >>>" in head[:64]):
        return _container("vdi", "a VDI image (VirtualBox)")
    if head[:8] == b"vhdxfile":
        return _container("vhdx", "a VHDX image (Hyper-V)")
    if head[:8] == b"conectix":
        return _container("vpc", "a dynamic VHD image (Virtual PC)")
    if head[:16] in (b"WithoutFreeSpace", b"WithouFreSpacExt"):
        return _container("parallels", "a Parallels image")
    if head[:8] == b"MOLPYCOW":
        return _container("molpy-overlay", "a molpy overlay (the changes of a -cow disk)",
                          "name its base disk with -cow instead; 'molpy cow info FILE' shows it")
    if head[:8] == b"MOLPYSES":
        return _container("molpy-session", "a molpy session file",
                          "give it as session_file; 'molpy session info FILE' shows it")
    if head[:8] == b"MOLPYDGC":
        return _container("molpy-digests", "a molpy digest cache file", "")
    if head[:2] == b"ER":
        return DiskFormat("apm", "a raw disk with an Apple partition map", False)
    return _volume(head[1024:1536])


def _volume(mdb: bytes) -> DiskFormat:
    """An HFS-family volume header at byte 1024, or RAW."""
    signature = mdb[:2]
    if signature == b"H+":
        return DiskFormat("hfs+", "a raw HFS+ volume", False)
    if signature == b"HX":
        return DiskFormat("hfsx", "a raw HFSX volume", False)
    if signature == b"BD":
        if mdb[124:126] == b"H+":
            return DiskFormat("hfs+", "a raw HFS+ volume (wrapped in HFS)", False)
        return DiskFormat("hfs", "a raw HFS volume", False)
    return RAW


def probe_fd(fd: int) -> DiskFormat | None:
    """The format of an open disk (one read of PROBE_BYTES at 0); None when it cannot be
    read (a drive without a medium): then nothing is known and the open decides."""
    try:
        return probe_bytes(os.pread(fd, PROBE_BYTES, 0))
    except OSError:
        return None


def probe_path(path: str) -> DiskFormat | None:
    """The format of the file or block device at ``path``, opened read-only and non-blocking
    (a FIFO or anything else is not read: None, as for a file that cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        mode = os.fstat(fd).st_mode
        if not (stat.S_ISREG(mode) or stat.S_ISBLK(mode)):
            return None
        return probe_fd(fd)
    finally:
        os.close(fd)


def refusal(fmt: DiskFormat, path: str, source: str = "") -> str:
    """The one line that refuses a container as a blkdev: its format, what to do, the flag."""
    hint = f"{fmt.hint}, or " if fmt.hint else ""
    return (f"disk {path} is {fmt.description}, not a raw disk: {hint}add {RAW_FLAG} to its "
            f"blkdev to attach its bytes as they are (blkdev at {source or 'the config'})")


def refusal_for(spec, fmt: DiskFormat | None) -> str | None:
    """The refusal for ``spec`` (a BlkdevSpec) whose disk probed as ``fmt``; None: attach it."""
    if fmt is None or not fmt.container or spec.raw:
        return None
    return refusal(fmt, spec.path, spec.source)
