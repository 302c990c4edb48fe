"""The resources a configuration defines, kept as MOL keeps them.

Every definition is a key and its words. MOL's lookup order is the table's order:
definitions from the command line are put in front (so they win), definitions from
files are added at the end, and a key that is already defined is not added again
unless it is one of MOL's multi-instance keys.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field

from .errors import ConfigError

# MOL's keys that may be defined more than once (res_manager.c's multi_res)
MULTI_KEYS = frozenset({
    "netdev", "blkdev", "symfile", "pseudofile", "pseudofile_", "@pseudofile", "remap_key",
    "remap_xkey", "remap_vnckey", "macos_rompath", "macos_rompath_", "allow", "deny", "drivers",
    "scsi_dev", "pci_proxy_device",
})

# where a definition came from
PREDEFINED = "predefined"    # MOL's lib, var, etc ... or molpy's MOLPY_DATA
CMDLINE = "cmdline"          # -s KEY=VALUE
FILE = "file"                # the user's own molrc (-f, ./molrc, the built-in default)
MOL_TREE = "mol"             # a file of a MOL installation (--mol-lib / --mol-etc)


@dataclass
class Definition:
    """One ``key: words`` definition and where it came from."""

    key: str
    words: list[str]
    where: str               # FILE:LINE, "-s KEY" or "predefined"
    base_dir: str            # what a relative path in it is relative to
    origin: str = FILE

    @property
    def value(self) -> str:
        return " ".join(self.words)


@dataclass
class Config:
    """The effective resources of a configuration (``molpy.config.load_config``'s result)."""

    path: str | None
    defs: dict[str, list[Definition]] = field(default_factory=dict)
    blkdevs: list = field(default_factory=list)            # BlkdevSpec, in unit order
    skipped_disks: list[str] = field(default_factory=list)  # "PATH (why, where)": MOL's disk rules
    files: list[str] = field(default_factory=list)         # every file read, in order
    referenced: set[str] = field(default_factory=set)       # keys some ${name} used
    mol_tree: dict[str, str] | None = None                  # lib, etc, data of a MOL installation

    # -- building --

    def add(self, d: Definition, *, head: bool = False) -> bool:
        """Add a definition; False when MOL's first-definition rule drops it."""
        found = self.defs.get(d.key)
        if head:
            self.defs.setdefault(d.key, []).insert(0, d)
            return True
        if found and d.key not in MULTI_KEYS:
            return False
        self.defs.setdefault(d.key, []).append(d)
        return True

    def present(self, key: str) -> bool:
        return bool(self.defs.get(key))

    def first(self, key: str) -> Definition | None:
        found = self.defs.get(key)
        return found[0] if found else None

    # -- reading --

    def get(self, key: str, default: str | None = None) -> str | None:
        """The first definition's words joined with spaces ('' for a key with no value)."""
        d = self.first(key)
        return d.value if d else default

    def get_all(self, key: str) -> list[str]:
        return [d.value for d in self.defs.get(key, [])]

    def where(self, key: str) -> str | None:
        """``FILE:LINE`` (or ``-s KEY``) of the definition in effect."""
        d = self.first(key)
        return d.where if d else None

    def keys(self) -> list[str]:
        return list(self.defs)

    @property
    def resources(self) -> dict[str, list[list[str]]]:
        """key -> the words of each definition, in MOL's lookup order
        (MOL's ``get_str_res_ind(key, index, argnum)`` is ``resources[key][index][argnum]``)."""
        return {key: [list(d.words) for d in ds] for key, ds in self.defs.items()}

    def get_int(self, key: str, default: int) -> int:
        """A number as MOL reads one: decimal, or hexadecimal after '0x'."""
        return self._typed(key, default, parse_number, "a whole number")

    def get_bool(self, key: str, default: bool) -> bool:
        return self._typed(key, default, parse_bool, "yes or no")

    def _typed(self, key: str, default, parse, what: str):
        d = self.first(key)
        if d is None:
            return default
        value = parse(d.value)
        if value is None:
            raise ConfigError(f"{d.where}: {key}: {d.value!r} is not {what}")
        return value

    def get_path(self, key: str) -> str | None:
        """The first word of ``key`` as a path, relative ones resolved as ``resolve_path`` says."""
        d = self.first(key)
        if d is None or not d.words:
            return None
        return resolve_path(d.words[0], d)

    def checksum(self, ignore: frozenset[str] = frozenset()) -> str:
        """A digest of the effective settings (but ``ignore``): a session records the config
        it ran with."""
        h = hashlib.sha256()
        for key in sorted(set(self.defs) - ignore):
            ds = self.defs[key] if key in MULTI_KEYS else self.defs[key][:1]
            for d in ds:
                h.update(f"{key}\0{d.value}\n".encode("utf-8", "surrogatepass"))
        return h.hexdigest()


def resolve_path(path: str, d: Definition) -> str:
    """A path word of a definition as an absolute path.

    In a MOL installation's files a relative path is relative to MOL's data directory
    (MOL ran from there); in the user's own molrc it is relative to that file's folder
    (and ``~`` is the home folder); on the command line it is relative to the current one.
    """
    if d.origin != MOL_TREE:
        path = os.path.expanduser(path)
    return os.path.normpath(os.path.join(d.base_dir, path))


_HEX = frozenset("0123456789abcdefABCDEF")
_TRUE = {"yes", "true", "on", "1"}
_FALSE = {"no", "false", "off", "0"}


def parse_bool(text: str) -> bool | None:
    """yes/no words for molpy's own keys; None for anything else."""
    word = text.strip().lower()
    return True if word in _TRUE else False if word in _FALSE else None


def parse_number(text: str) -> int | None:
    """MOL's numbers: decimal digits (leading zeros allowed), or hex digits after '0x'."""
    text = text.strip()
    negative = text.startswith("-")
    digits = text[1:] if negative else text
    try:
        if digits.startswith("0x") and len(digits) > 2 and all(c in _HEX for c in digits[2:]):
            value = int(digits[2:], 16)
        elif digits.isdigit() and digits.isascii():
            value = int(digits, 10)
        else:
            return None
    except ValueError:
        return None
    return -value if negative else value
