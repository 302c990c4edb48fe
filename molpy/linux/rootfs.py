"""``molpy img linux FILE``: an ext2 root disk holding molpy's /sbin/init shell.

The init (guest/linux/userland/init.c) is compiled here with the cross gcc against
Debian's cross glibc (static), so no third-party binary is kept in the tree; the disk
is made by e2fsprogs' ``mke2fs -d`` from a staging folder. ``make_initramfs`` puts the
same init, as /init, in a newc cpio archive (the QEMU benchmark's root, -initrd), written
here so that no cpio tool is needed.
"""

from __future__ import annotations

import os
import stat
import shutil
import subprocess
import tempfile
from pathlib import Path

from .build import CROSS, BuildError, source_dir


def build_init(out: Path) -> None:
    src = source_dir() / "userland" / "init.c"
    if not src.is_file():
        raise BuildError(f"{src}: missing (this molpy carries no kernel sources: install it from its source tree)")
    if shutil.which(CROSS + "gcc") is None:
        raise BuildError(f"{CROSS}gcc not found (install gcc-powerpc-linux-gnu)")
    r = subprocess.run([CROSS + "gcc", "-static", "-Os", "-Wall", "-o", str(out), str(src)],
                       capture_output=True, text=True)
    if r.returncode:
        lines = r.stderr.strip().splitlines()
        first = next((line for line in lines if "error" in line), lines[-1] if lines else "no message")
        hint = " (install libc6-dev-powerpc-cross: Debian's C library for the cross compiler)" \
            if ".h: No such file" in first else ""
        raise BuildError(f"compiling {src.name} failed: {first.strip()}{hint}")


def make_disk(path: str, size_mib: int = 16) -> None:
    """A fresh ext2 image at ``path`` (refused when it exists: nothing is overwritten)."""
    if size_mib < 2 or size_mib > 65536:
        raise BuildError(f"--size {size_mib}: between 2 and 65536 MiB")
    if os.path.exists(path):
        raise BuildError(f"{path}: exists; molpy does not overwrite a disk")
    if shutil.which("mke2fs") is None:
        raise BuildError("mke2fs not found (install e2fsprogs)")
    with tempfile.TemporaryDirectory(prefix="molpy-rootfs-") as tmp:
        stage = Path(tmp) / "root"
        for d in ("sbin", "proc", "dev", "tmp"):
            (stage / d).mkdir(parents=True)
        build_init(stage / "sbin" / "init")
        r = subprocess.run(["mke2fs", "-q", "-F", "-t", "ext2", "-b", "1024", "-d", str(stage),
                            path, f"{size_mib}M"], capture_output=True, text=True)
        if r.returncode:
            try:
                os.unlink(path)
            except OSError:
                pass
            raise BuildError(f"mke2fs failed: {r.stderr.strip()}")


def _newc(out, name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0), ino: int = 0) -> None:
    """One entry of a "newc" (SVR4, no checksum) cpio archive: the format the kernel's
    initramfs unpacker reads; every number is 8 hex digits, name and data 4-byte aligned."""
    fields = [ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1], len(name) + 1, 0]
    head = b"070701" + b"".join(b"%08X" % v for v in fields) + name.encode() + b"\0"
    out.write(head + b"\0" * (-len(head) % 4))
    out.write(data + b"\0" * (-len(data) % 4))


def make_initramfs(path: str) -> None:
    """A cpio initramfs at ``path`` with molpy's shell as /init (refused when it exists)."""
    if os.path.exists(path):
        raise BuildError(f"{path}: exists; molpy does not overwrite it")
    with tempfile.TemporaryDirectory(prefix="molpy-initramfs-") as tmp:
        init = Path(tmp) / "init"
        build_init(init)
        entries = [("dev", stat.S_IFDIR | 0o755, b"", (0, 0)),
                   ("dev/console", stat.S_IFCHR | 0o600, b"", (5, 1)),
                   ("proc", stat.S_IFDIR | 0o755, b"", (0, 0)),
                   ("tmp", stat.S_IFDIR | 0o1777, b"", (0, 0)),
                   ("init", stat.S_IFREG | 0o755, init.read_bytes(), (0, 0))]
        with open(path, "xb") as out:
            for ino, (name, mode, data, rdev) in enumerate(entries, 1):
                _newc(out, name, mode, data, rdev, ino)
            _newc(out, "TRAILER!!!", 0)
