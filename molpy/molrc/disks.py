"""``blkdev`` lines: MOL's disk flags and MOL's rules for which disks are used.

Flags (MOL's blkdev.c), plus molpy's own ``-cow``:

  -ro         read-only (adds nothing: read-only is the default)
  -rw         read-write
  -force      MOL: use a volume that is not HFS (or a small one read-write)
  -cdrom, -cd a CD/DVD: read-only, whole device, removable
  -cdboot     boot from it, ignoring every other -boot (as -boot1)
  -boot       the boot disk
  -boot1      the boot disk; every other disk loses its -boot
  -whole      the whole device, not its partitions (/dev/sda rather than /dev/sdaN)
  -removable  removable medium
  -drvdisk    MOL's driver disk (removable)
  -ignore     leave this line out
  -cow        molpy: writes go to an overlay, the disk is opened read-only
  -raw        molpy: attach the file's bytes as a raw disk even when its header says it
              is a container image (qcow2, vmdk, vdi, a molpy overlay or session ...),
              which molpy otherwise refuses (drivers/formats.py)

A flag word that is an unexpanded ``${...}`` is skipped (MOL's ``${cdboot}``); a word
holding several flags (``${mbflags}`` expands to ``-ro -drvdisk``) is split at spaces.
Where molpy differs from MOL: an unknown flag is refused, naming it and the known ones
(MOL warned and went on: a typo such as ``-cwo`` must never write a disk); a flag must be
written in full (MOL took any prefix, ``-r`` for ``-ro``); ``-ro`` with ``-rw`` is
refused (MOL took ``-rw``).

Which disks: for Mac OS boot types (newworld, oldworld, osx) MOL used ``blkdev_mol``
(its driver disk) and then ``blkdev``; for linux only ``blkdev``; for elf none. A disk
named in a MOL installation's files that cannot be opened is left out, as MOL did (its
default /dev/hda ... lines), and reported in one line; a whole disk /dev/sdX or /dev/hdX
without -whole stands for its partitions /dev/sdX1 ... /dev/sdX31 that hold Mac OS (HFS,
HFS+, HFSX) volumes, as in MOL. A disk named on the command line or in the user's own
molrc is always used, and one that does not exist is an error when it is opened.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, replace

from .errors import ConfigError, show
from .table import MOL_TREE, Config, Definition, resolve_path


@dataclass(frozen=True)
class BlkdevSpec:
    """One disk: its path and what its flags mean."""

    path: str
    readonly: bool = True
    cow: bool = False
    boot: bool = False
    cd: bool = False
    force: bool = False
    whole: bool = False
    source: str = ""             # FILE:LINE of its blkdev line
    removable: bool = False
    boot1: bool = False
    drvdisk: bool = False
    raw: bool = False            # -raw: attach even a container image's bytes as they are
    flags: tuple[str, ...] = ()  # the flag words as given (for --check)
    key: str = "blkdev"          # blkdev or blkdev_mol


# flag -> what it sets (MOL's blk_opts, and molpy's -cow)
FLAGS: dict[str, frozenset[str]] = {
    "-ro": frozenset(), "-rw": frozenset({"write"}), "-force": frozenset({"force"}),
    "-cdrom": frozenset({"cd", "whole", "removable"}), "-cd": frozenset({"cd", "whole", "removable"}),
    "-cdboot": frozenset({"boot1", "boot"}), "-boot": frozenset({"boot"}),
    "-boot1": frozenset({"boot1", "boot"}), "-whole": frozenset({"whole"}),
    "-removable": frozenset({"removable"}), "-drvdisk": frozenset({"drvdisk", "removable"}),
    "-ignore": frozenset({"ignore"}), "-cow": frozenset({"cow"}), "-raw": frozenset({"raw"}),
}
MAC_BOOT_TYPES = ("newworld", "oldworld", "osx")
BOOT_TYPES = ("newworld", "osx", "oldworld", "linux", "elf")   # MOL's boot_method values
WHOLE_DEVICE_PREFIXES = ("/dev/sd", "/dev/hd")
MAX_PARTITIONS = 31
BOOTSTRAP_BYTES = 20 << 20       # MOL: a smaller HFS volume read-write may be a boot-strap partition


def parse_flags(words: list[str], where: str, key: str) -> tuple[frozenset[str], tuple[str, ...]]:
    """(what the flags set, the flag words) for the words after a disk's path."""
    effects: set[str] = set()
    given: list[str] = []
    for word in words:
        for flag in word.split():
            if flag.startswith("${"):          # an unexpanded variable: MOL skips it
                continue
            if flag not in FLAGS:
                raise ConfigError(f"{where}: {key}: unknown flag {show(flag)} (known: {' '.join(FLAGS)})")
            effects |= FLAGS[flag]
            given.append(flag)
    if "-ro" in given and "-rw" in given:
        raise ConfigError(f"{where}: {key}: -ro and -rw together")
    if "cow" in effects and ("-ro" in given or "cd" in effects):
        raise ConfigError(f"{where}: {key}: -cow needs a writable disk; drop -ro/-cd")
    return frozenset(effects), tuple(given)


def spec_for(d: Definition) -> BlkdevSpec | None:
    """The disk one definition names (None for -ignore)."""
    if not d.words or d.words[0].startswith("-"):
        raise ConfigError(f"{d.where}: {d.key} needs a disk path first, then flags")
    effects, given = parse_flags(d.words[1:], d.where, d.key)
    if "ignore" in effects:
        return None
    return BlkdevSpec(path=resolve_path(d.words[0], d),
                      readonly=not ({"write", "cow"} & effects) or "cd" in effects,
                      cow="cow" in effects, boot="boot" in effects, cd="cd" in effects,
                      force="force" in effects, whole="whole" in effects, source=d.where,
                      removable="removable" in effects, boot1="boot1" in effects,
                      drvdisk="drvdisk" in effects, raw="raw" in effects, flags=given, key=d.key)


def disk_keys(boot_method: str | None) -> tuple[str, ...]:
    """The keys whose disks MOL used for a boot method (None: molpy's own config, both)."""
    if boot_method == "linux":
        return ("blkdev",)
    if boot_method == "elf":
        return ()
    return ("blkdev_mol", "blkdev")


def build_disks(config: Config, boot_method: str | None) -> None:
    """Fill ``config.blkdevs`` and ``config.skipped_disks`` by MOL's rules."""
    specs: list[BlkdevSpec] = []
    for key in disk_keys(boot_method):
        for d in config.defs.get(key, []):
            spec = spec_for(d)
            if spec is None:
                config.skipped_disks.append(f"{d.words[0]} (-ignore, {d.where})")
            elif d.origin != MOL_TREE:
                if "${" in d.words[0]:
                    raise ConfigError(f"{d.where}: {key}: the disk {show(d.words[0])} holds an undefined "
                                      f"${{...}} variable")
                specs.append(spec)
            else:
                specs += _mol_disks(spec, boot_method, config.skipped_disks)
    if any(s.boot1 for s in specs):               # MOL: -boot1 takes the boot flag from the others
        specs = [s if s.boot1 else replace(s, boot=False) for s in specs]
    config.blkdevs = specs


def _mol_disks(spec: BlkdevSpec, boot_method: str | None, skipped: list[str]) -> list[BlkdevSpec]:
    """A MOL installation's disk as MOL's blkdev.c took it: left out when it cannot be
    opened; a whole /dev/sdX or /dev/hdX stands for its Mac OS partitions."""
    if (not spec.cd and boot_method in MAC_BOOT_TYPES and not spec.whole
            and any(spec.path.startswith(p) and len(spec.path) == len(p) + 1 for p in WHOLE_DEVICE_PREFIXES)):
        found = [replace(spec, path=p, force=False) for p in mac_volumes(spec.path, writable=not spec.readonly)]
        if not found:
            why = "no Mac OS volumes found" if os.path.exists(spec.path) else "not on this machine"
            skipped.append(f"{spec.path} ({why}, {spec.source})")
        return found
    problem = _unopenable(spec)
    if problem:
        skipped.append(f"{spec.path} ({problem}, {spec.source})")
        return []
    return [spec]


def _unopenable(spec: BlkdevSpec) -> str | None:
    if not os.path.lexists(spec.path):
        return "not on this machine"
    if not os.path.exists(spec.path):
        return "a broken symbolic link"
    writes = not spec.readonly and not spec.cow
    if not os.access(spec.path, os.R_OK | (os.W_OK if writes else 0)):
        return "permission denied"
    return None


def mac_volumes(device: str, writable: bool) -> list[str]:
    """The partitions DEVICE1 ... DEVICE31 that MOL would have used: HFS, HFS+ or HFSX
    volumes (not partition maps, not other file systems), and for read-write use none
    smaller than 20 MiB (MOL took those for boot-strap partitions)."""
    found = []
    for n in range(1, MAX_PARTITIONS + 1):
        path = f"{device}{n}"
        if not os.path.exists(path):
            continue
        kind, size = probe_volume(path)
        if kind in ("hfs", "hfs+", "hfsx") and not (writable and kind != "hfsx" and size < BOOTSTRAP_BYTES):
            found.append(path)
    return found


def probe_volume(path: str) -> tuple[str | None, int]:
    """(kind, size in bytes) of a disk or partition: "partitioned" (an Apple partition
    map), "hfs", "hfs+" (plain or wrapped in HFS), "hfsx", "unknown"; None when it cannot
    be read. Opened read-only and non-blocking, regular files and block devices only; the
    signatures are the block layer's probe (drivers/formats.py)."""
    from molpy.drivers.formats import PROBE_BYTES, probe_bytes

    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError:
        return None, 0
    try:
        mode = os.fstat(fd).st_mode
        if not (stat.S_ISREG(mode) or stat.S_ISBLK(mode)):
            return None, 0
        size = os.lseek(fd, 0, os.SEEK_END)
        head = os.pread(fd, PROBE_BYTES, 0)
    except OSError:
        return None, 0
    finally:
        os.close(fd)
    if len(head) < 512:
        return None, size
    name = probe_bytes(head).name
    if name == "apm":
        return "partitioned", size
    return (name if name in ("hfs", "hfs+", "hfsx") else "unknown"), size


def disk_meaning(spec: BlkdevSpec) -> str:
    """What a disk's flags mean, in words (for --check)."""
    words = ["copy-on-write" if spec.cow else "read-only" if spec.readonly else "read-write"]
    words += [what for flag, what in ((spec.cd, "CD-ROM"), (spec.removable and not spec.cd, "removable"),
                                      (spec.drvdisk, "MOL's driver disk"), (spec.boot, "boot disk"),
                                      (spec.whole and not spec.cd, "whole device"), (spec.force, "-force"),
                                      (spec.raw, "raw whatever its header says"))
              if flag]
    return ", ".join(words)
