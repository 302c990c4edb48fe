"""Boot disks for MOL's firmware: an Apple partition map and an HFS volume with a System Folder.

MOL's newworld firmware boots the ``Mac OS ROM`` file (type ``tbxi``, creator ``chrp``)
of a folder that also holds a ``zsys``/``MACS`` file (System) and an ``FNDR``/``MACS``
file (Finder), and loads it as an ELF. This module makes such a disk with Debian's
parted (the map) and hfsutils (the volume), putting any PowerPC ELF there as the ROM
(molpy's demo guest linked at 4 MiB by default). The folder is blessed, as a Mac
installer leaves it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from .errors import DiskError

MIN_SIZE = 4 << 20            # the map, 1 MiB of alignment and a small HFS volume
MAX_SIZE = 2 << 30            # HFS (not HFS+) volumes end at 2 GiB
TOOLS = ("parted", "hformat", "hmount", "hmkdir", "hcopy", "hattrib", "humount")
FOLDER = "System Folder"
# (name on the volume, type, creator); the ROM's data comes from the given ELF
SYSTEM_FILES = (("System", "zsys", "MACS"), ("Finder", "FNDR", "MACS"))


class HfsDiskError(DiskError):
    """The disk cannot be made; the message says why (a missing tool, a bad argument)."""


def demo_rom() -> Path:
    """The bundled demo guest linked where MOL's firmware can load it (4 MiB)."""
    from importlib import resources
    return Path(str(resources.files("molpy") / "guest" / "demo_of.elf"))


def missing_tools() -> list[str]:
    return [t for t in TOOLS if shutil.which(t) is None]


def _run(args: list[str], env: dict) -> None:
    try:
        done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise HfsDiskError(f"{args[0]} failed: {e}") from None
    if done.returncode:
        lines = [ln for ln in (done.stderr + done.stdout).splitlines() if "udevadm" not in ln]
        raise HfsDiskError(f"{' '.join(args[:2])} failed: {lines[-1] if lines else done.returncode}")


def _check_elf(rom: str) -> None:
    try:
        with open(rom, "rb") as f:
            head = f.read(20)
    except OSError as e:
        raise HfsDiskError(f"ROM {rom}: {e.strerror}") from None
    if head[:6] != b"\x7fELF\x01\x02" or int.from_bytes(head[18:20], "big") != 20:
        raise HfsDiskError(f"ROM {rom} is not a 32-bit big-endian PowerPC ELF")


def make_boot_disk(path: str, size: int, rom: str | None = None, volume: str = "molpy boot") -> None:
    """Create ``path`` (never over an existing file): map, HFS volume, blessed System Folder."""
    from .drivers.block import BlockError
    from .drivers.raw import create_image

    missing = missing_tools()
    if missing:
        raise HfsDiskError(f"making an HFS disk needs Debian's parted and hfsutils "
                           f"(missing: {', '.join(missing)}; apt-get install parted hfsutils)")
    if not MIN_SIZE <= size <= MAX_SIZE:
        raise HfsDiskError(f"an HFS boot disk is {MIN_SIZE >> 20} MiB to {MAX_SIZE >> 30} GiB, "
                           f"not {size} bytes")
    if not 1 <= len(volume) <= 27 or ":" in volume:
        raise HfsDiskError("the volume name is 1 to 27 characters, without ':'")
    rom = rom or str(demo_rom())
    _check_elf(rom)
    try:
        create_image(path, size)
    except BlockError as e:
        raise HfsDiskError(str(e)) from None
    try:
        with tempfile.TemporaryDirectory(prefix="molpy-hfs-") as home:
            # hfsutils keep their "current volume" in $HOME/.hcwd: use a private one
            env = dict(os.environ, HOME=home, LC_ALL="C")
            empty = os.path.join(home, "empty")
            Path(empty).write_bytes(b"")
            _run(["parted", "-s", path, "mklabel", "mac", "mkpart", "MacOS", "hfs", "1MiB", "100%"], env)
            _run(["hformat", "-l", volume, path, "1"], env)       # the first HFS partition
            _run(["hmount", path, "1"], env)
            try:
                _run(["hmkdir", FOLDER], env)
                rom_path = f":{FOLDER}:Mac OS ROM"
                _run(["hcopy", "-r", rom, rom_path], env)
                _run(["hattrib", "-t", "tbxi", "-c", "chrp", rom_path], env)
                for name, ftype, creator in SYSTEM_FILES:
                    _run(["hcopy", "-r", empty, f":{FOLDER}:{name}"], env)
                    _run(["hattrib", "-t", ftype, "-c", creator, f":{FOLDER}:{name}"], env)
                _run(["hattrib", "-b", f":{FOLDER}"], env)
            finally:
                subprocess.run(["humount"], env=env, capture_output=True, timeout=60)
    except BaseException:
        os.unlink(path)
        raise
