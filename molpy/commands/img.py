"""``molpy img``: make and inspect raw disk images."""

from __future__ import annotations

import argparse
import os

from ..cli import CommandError


def add_parser(sub) -> None:
    p = sub.add_parser("img", help="create or inspect a raw disk image",
                       description="Raw disk images for blkdev lines.")
    cmds = p.add_subparsers(dest="img_command", metavar="ACTION", required=True)
    c = cmds.add_parser("create", help="make a sparse raw image",
                        description="Make a sparse raw image of SIZE bytes (512, 64K, 64M, 2G ...). "
                                    "An existing file is never overwritten.")
    c.add_argument("file")
    c.add_argument("size")
    c.set_defaults(func=create)
    h = cmds.add_parser("hfs", help="make a boot disk for MOL's firmware (HFS, Apple partition map)",
                        description="Make a raw disk with an Apple partition map and an HFS volume whose "
                                    "blessed System Folder holds ROM as its 'Mac OS ROM' (type tbxi, "
                                    "creator chrp) with a System and a Finder file: the disk MOL's "
                                    "newworld firmware boots. Needs Debian's parted and hfsutils. "
                                    "An existing file is never overwritten.")
    h.add_argument("file")
    h.add_argument("--size", default="16M", help="disk size (default 16M; 4M to 2G)")
    h.add_argument("--rom", metavar="ELF", help="the PowerPC ELF to boot (default: molpy's demo "
                   "guest linked at 4 MiB, demo_of.elf)")
    h.add_argument("--name", default="molpy boot", help="the volume name (default 'molpy boot')")
    h.set_defaults(func=hfs)
    lx = cmds.add_parser("linux", help="make an ext2 root disk with molpy's Linux shell as /sbin/init",
                         description="Compile guest/linux/userland/init.c (static, cross gcc) and make "
                                     "an ext2 image holding it with mke2fs -d (docs/linux.md).")
    lx.add_argument("file", help="the image to create (must not exist)")
    lx.add_argument("--size", type=int, default=16, metavar="MIB", help="size in MiB (default 16)")
    lx.set_defaults(func=linux_disk)
    i = cmds.add_parser("info", help="format, size and allocation of an image",
                        description="Show an image's format as its header says (raw, an Apple "
                                    "partition map, an HFS volume; or a container molpy refuses as "
                                    "a blkdev: qcow2, vmdk, vdi, a molpy overlay or session ...), its "
                                    "size, the space it takes on the host and, when it is a molpy "
                                    "demo disk, its boot count.")
    i.add_argument("file")
    i.set_defaults(func=info)


def _human(n: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError


def create(args: argparse.Namespace) -> int:
    from ..config import parse_size
    from ..drivers.block import BlockError
    from ..drivers.raw import create_image

    try:
        size = parse_size(args.size)
        create_image(args.file, size)
    except (ValueError, BlockError) as e:
        raise CommandError(str(e)) from None
    print(f"created {args.file}: {_human(size)} ({size // 512} sectors), sparse")
    return 0


def hfs(args: argparse.Namespace) -> int:
    from ..config import parse_size
    from ..hfsdisk import HfsDiskError, make_boot_disk

    try:
        size = parse_size(args.size)
        make_boot_disk(args.file, size, args.rom, args.name)
    except (ValueError, HfsDiskError) as e:
        raise CommandError(str(e)) from None
    print(f"created {args.file}: {_human(size)}, Apple partition map, HFS volume '{args.name}' "
          f"with a blessed System Folder booting {args.rom or 'the demo guest'}")
    return 0


def linux_disk(args: argparse.Namespace) -> int:
    from ..linux.build import BuildError
    from ..linux.rootfs import make_disk

    try:
        make_disk(args.file, args.size)
    except BuildError as e:
        raise CommandError(f"img linux: {e}") from None
    print(args.file)
    return 0


def info(args: argparse.Namespace) -> int:
    from ..drivers.block import BlockError
    from ..drivers.raw import RawBackend
    from ..drivers.demo_disk import read_boot_count
    from ..drivers.formats import RAW_FLAG, probe_fd
    from ..files import in_use

    try:
        disk = RawBackend(args.file, readonly=True, lock=False)
    except BlockError as e:
        raise CommandError(str(e)) from None
    try:
        st = os.fstat(disk.fd)
        fmt = probe_fd(disk.fd)
        print(f"image:     {disk.path}")
        print(f"format:    {fmt.name}: {fmt.description}" if fmt else "format:    unknown (unreadable)")
        print(f"size:      {_human(disk.size)} ({disk.size} bytes, {disk.size // 512} sectors)"
              + (" of the file" if fmt and fmt.container else ""))
        if fmt and fmt.container:
            print(f"note:      not a raw disk: a blkdev refuses it unless its line says {RAW_FLAG}"
                  + (f"; {fmt.hint}" if fmt.hint else ""))
        if disk.size % 512 and not (fmt and fmt.container):
            print(f"warning:   the size is not a multiple of 512; the last {disk.size % 512} bytes "
                  "are not reachable by the guest")
        print(f"allocated: {_human(st.st_blocks * 512)} on the host")
        holder = in_use(disk.fd)
        if holder:
            print(f"in use:    {holder.line()}")
        count = read_boot_count(args.file)
        if count is not None:
            print(f"boot count: {count} (molpy demo boot record in sector 1)")
    finally:
        disk.close()
    return 0
