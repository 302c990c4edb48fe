"""molrc: MOL's configuration grammar (molrc(5)), read the way MOL reads it.

Real MOL configs carry many keys molpy has no use for, so an unknown key is a
warning, never an error; everything else that is wrong names the file and line.
"""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

KNOWN_KEYS = frozenset({"ram_size", "bootfile", "boot_args", "blkdev", "cow_dir", "session_file",
                        "session_readonly", "cpu"})
ACCUMULATING_KEYS = frozenset({"blkdev"})
MAX_INCLUDE_DEPTH = 16
MAX_RAM_MIB = 2048
BUILTIN_NAME = "<built-in default>"

DEFAULT_MOLRC = """\
# molpy's built-in default: the bundled demo guest with a demo disk and a session
ram_size: 64
session_file: ${MOLPY_DATA}/default.session
session_readonly: no
cow_dir: ${MOLPY_DATA}
blkdev: ${MOLPY_DATA}/demo.img -rw -boot
"""

_TRUE = {"yes", "true", "on", "1"}
_FALSE = {"no", "false", "off", "0"}
_KEY_LINE = re.compile(r"^([A-Za-z0-9_.\-]+)\s*:\s*(.*)$")
_VAR = re.compile(r"\$\{([^}]*)\}")
_SIZE = re.compile(r"^\s*(\d+)\s*([kmgt]?)(i?b)?\s*$", re.IGNORECASE)
_BLKDEV_FLAGS = ("-ro", "-rw", "-cow", "-boot", "-cd", "-force", "-whole")


class ConfigError(Exception):
    """A molrc problem; the message starts with ``FILE:LINE:`` when a line is to blame."""


def data_dir() -> str:
    """molpy's own folder: demo disk, default session, log ($MOLPY_HOME overrides)."""
    home = os.environ.get("MOLPY_HOME")
    if not home:
        xdg = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
        home = os.path.join(xdg, "molpy")
    os.makedirs(home, exist_ok=True)
    return home


def parse_size(text: str) -> int:
    """Bytes from ``512``, ``64K``, ``64M``, ``2G``, ``1T`` (also ``64MiB``, ``64mb``)."""
    m = _SIZE.match(text)
    if not m:
        raise ValueError(f"{text!r} is not a size (use a number with K, M, G or T, e.g. 64M)")
    value = int(m.group(1)) << {"": 0, "k": 10, "m": 20, "g": 30, "t": 40}[m.group(2).lower()]
    if value <= 0:
        raise ValueError(f"{text!r}: a size must be more than 0")
    return value


def parse_bool(text: str) -> bool | None:
    """yes/no words as MOL accepts them; None for anything else."""
    word = text.strip().lower()
    return True if word in _TRUE else False if word in _FALSE else None


@dataclass(frozen=True)
class BlkdevSpec:
    """One ``blkdev:`` line: the disk and its flags (MOL's defaults: read-only)."""

    path: str
    readonly: bool = True
    cow: bool = False
    boot: bool = False
    cd: bool = False
    force: bool = False
    whole: bool = False
    source: str = ""


@dataclass
class _Entry:
    value: str
    where: str
    base_dir: str


@dataclass
class Config:
    """The effective keys of a molrc: first definition wins, blkdev accumulates."""

    path: str | None
    entries: dict[str, list[_Entry]] = field(default_factory=dict)
    blkdevs: list[BlkdevSpec] = field(default_factory=list)

    def get(self, key: str, default: str | None = None) -> str | None:
        found = self.entries.get(key)
        return found[0].value if found else default

    def get_all(self, key: str) -> list[str]:
        return [e.value for e in self.entries.get(key, [])]

    def where(self, key: str) -> str | None:
        """``FILE:LINE`` of the definition in effect."""
        found = self.entries.get(key)
        return found[0].where if found else None

    def get_int(self, key: str, default: int) -> int:
        value = self.get(key)
        if value is None:
            return default
        try:
            return int(value, 0)
        except ValueError:
            raise ConfigError(f"{self.where(key)}: {key}: {value!r} is not a whole number") from None

    def get_bool(self, key: str, default: bool) -> bool:
        value = self.get(key)
        if value is None:
            return default
        result = parse_bool(value)
        if result is None:
            raise ConfigError(f"{self.where(key)}: {key}: {value!r} is not yes or no")
        return result

    def keys(self) -> list[str]:
        return list(self.entries)

    def checksum(self) -> str:
        """A digest of the effective settings: a session records the config it ran with."""
        h = hashlib.sha256()
        for key in sorted(self.entries):
            values = self.get_all(key) if key in ACCUMULATING_KEYS else [self.get(key)]
            for value in values:
                h.update(f"{key}\0{value}\n".encode())
        return h.hexdigest()


@dataclass
class _Block:
    """An open ``if... {`` block: whether its lines are taken, and where it began."""

    active: bool          # lines in the current branch are taken
    parent_active: bool
    taken: bool           # the condition's value (the else branch is the opposite)
    where: str
    in_else: bool = False


class _Parser:
    def __init__(self, variables: dict[str, str], echo: Callable[[str], None],
                 warn: Callable[[str], None]) -> None:
        self.config = Config(path=None)
        self.variables = dict(variables)
        self.echo = echo
        self.warn = warn
        self.warned: set[str] = set()
        self.stack: list[str] = []          # files being read, for include cycles

    # -- values --

    def lookup(self, name: str) -> str | None:
        if name in self.variables:
            return self.variables[name]
        return self.config.get(name)

    def expand(self, text: str, where: str) -> str:
        def sub(m: re.Match) -> str:
            value = self.lookup(m.group(1).strip())
            if value is None:
                raise ConfigError(f"{where}: ${{{m.group(1)}}} is not defined")
            return value
        return _VAR.sub(sub, text)

    def split_words(self, text: str, where: str) -> list[str]:
        try:
            return shlex.split(text, comments=True)
        except ValueError as e:
            raise ConfigError(f"{where}: {e}") from None

    # -- files --

    def parse_file(self, path: str, where: str | None) -> None:
        real = os.path.realpath(path)
        if real in self.stack:
            chain = " -> ".join([*self.stack[self.stack.index(real):], real])
            raise ConfigError(f"{where}: include cycle: {chain}")
        if len(self.stack) >= MAX_INCLUDE_DEPTH:
            raise ConfigError(f"{where}: includes nested more than {MAX_INCLUDE_DEPTH} deep")
        try:
            text = Path(path).read_text(encoding="utf-8", errors="replace")
        except OSError as e:
            prefix = f"{where}: include {path}" if where else path
            raise ConfigError(f"{prefix}: cannot read: {e.strerror}") from None
        self.stack.append(real)
        try:
            self.parse_text(text, path, os.path.dirname(os.path.abspath(path)))
        finally:
            self.stack.pop()

    def parse_text(self, text: str, name: str, base_dir: str) -> None:
        blocks: list[_Block] = []
        for lineno, raw in enumerate(text.splitlines(), 1):
            where = f"{name}:{lineno}"
            line = _strip_comment(raw).strip()
            if not line:
                continue
            active = blocks[-1].active if blocks else True
            if line == "}":
                if not blocks:
                    raise ConfigError(f"{where}: '}}' without an open block")
                blocks.pop()
                continue
            if re.fullmatch(r"\}\s*else\s*\{", line):
                if not blocks or blocks[-1].in_else:
                    raise ConfigError(f"{where}: 'else' without an open if-block")
                b = blocks[-1]
                b.in_else = True
                b.active = b.parent_active and not b.taken
                continue
            word = line.split(None, 1)[0]
            if word in ("ifeq", "ifneq", "ifdef", "ifndef"):
                if not line.endswith("{"):
                    raise ConfigError(f"{where}: '{word}' needs '{{' at the end of its line")
                args = line[len(word):-1].strip()
                taken = self.condition(word, args, where) if active else False
                blocks.append(_Block(active=active and taken, parent_active=active, taken=taken, where=where))
                continue
            if not active:
                continue
            self.statement(line, word, where, base_dir)
        if blocks:
            raise ConfigError(f"{blocks[-1].where}: this block is never closed with '}}'")

    def condition(self, word: str, args: str, where: str) -> bool:
        words = self.split_words(args, where)
        if not words:
            raise ConfigError(f"{where}: '{word}' needs a name")
        name = words[0]
        m = re.fullmatch(r"\$\{([^}]*)\}", name)
        if word in ("ifdef", "ifndef"):
            if len(words) != 1:
                raise ConfigError(f"{where}: '{word}' takes one name")
            defined = self.lookup(m.group(1).strip() if m else name) is not None
            return defined if word == "ifdef" else not defined
        value = self.lookup(m.group(1).strip() if m else name) or ""
        choices = [self.expand(w, where) for w in words[1:]]
        if not choices:
            raise ConfigError(f"{where}: '{word}' needs a name and at least one value")
        equal = value in choices
        return equal if word == "ifeq" else not equal

    def statement(self, line: str, word: str, where: str, base_dir: str) -> None:
        rest = line[len(word):].strip()
        if word == "include":
            target = os.path.expanduser(self.unquote(self.expand(rest, where), where))
            if not target:
                raise ConfigError(f"{where}: include needs a file name")
            self.parse_file(os.path.join(base_dir, target), where)
            return
        if word == "echo":
            self.echo(self.unquote(self.expand(rest, where), where))
            return
        if word == "fail":
            raise ConfigError(f"{where}: {self.unquote(self.expand(rest, where), where) or 'fail'}")
        m = _KEY_LINE.match(line)
        if not m:
            raise ConfigError(f"{where}: cannot parse: {line}")
        key, value = m.group(1), self.unquote(self.expand(m.group(2).strip(), where), where)
        self.define(key, value, where, base_dir)

    @staticmethod
    def unquote(value: str, where: str) -> str:
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            return value[1:-1]
        if value[:1] in "\"'":
            raise ConfigError(f"{where}: unterminated quote")
        return value

    def define(self, key: str, value: str, where: str, base_dir: str) -> None:
        if key not in KNOWN_KEYS and key not in self.warned:
            self.warned.add(key)
            self.warn(f"{where}: key '{key}' is not used by molpy (ignored)")
        entries = self.config.entries.setdefault(key, [])
        if entries and key not in ACCUMULATING_KEYS:
            return                             # the first definition wins (MOL)
        _check_value(key, value, where)
        entries.append(_Entry(value, where, base_dir))
        if key == "blkdev":
            self.config.blkdevs.append(parse_blkdev(value, where, base_dir))


def _strip_comment(line: str) -> str:
    """Drop a ``#`` comment that is outside quotes."""
    quote = None
    for i, c in enumerate(line):
        if quote:
            if c == quote:
                quote = None
        elif c in "\"'":
            quote = c
        elif c == "#":
            return line[:i]
    return line


def _check_value(key: str, value: str, where: str) -> None:
    if key == "ram_size":
        try:
            ram = int(value, 0)
        except ValueError:
            raise ConfigError(f"{where}: ram_size: {value!r} is not a whole number of MiB") from None
        if not 1 <= ram <= MAX_RAM_MIB:
            raise ConfigError(f"{where}: ram_size {ram} MiB is out of range (1 to {MAX_RAM_MIB})")
    elif key == "session_readonly" and parse_bool(value) is None:
        raise ConfigError(f"{where}: session_readonly: {value!r} is not yes or no")


def parse_blkdev(value: str, where: str, base_dir: str) -> BlkdevSpec:
    """``PATH [-ro|-rw] [-cow] [-boot] [-cd] [-force] [-whole]`` -> BlkdevSpec."""
    try:
        words = shlex.split(value)
    except ValueError as e:
        raise ConfigError(f"{where}: blkdev: {e}") from None
    if not words or words[0].startswith("-"):
        raise ConfigError(f"{where}: blkdev needs a disk path first, then flags")
    path, flags = words[0], words[1:]
    for flag in flags:
        if flag not in _BLKDEV_FLAGS:
            raise ConfigError(f"{where}: blkdev: unknown flag {flag!r} "
                              f"(known: {' '.join(_BLKDEV_FLAGS)})")
    if "-ro" in flags and "-rw" in flags:
        raise ConfigError(f"{where}: blkdev: -ro and -rw together")
    if "-cow" in flags and ("-ro" in flags or "-cd" in flags):
        raise ConfigError(f"{where}: blkdev: -cow needs a writable disk; drop -ro/-cd")
    readonly = not ("-rw" in flags or "-cow" in flags) or "-cd" in flags
    full = os.path.join(base_dir, os.path.expanduser(path))
    return BlkdevSpec(path=os.path.normpath(full), readonly=readonly, cow="-cow" in flags,
                      boot="-boot" in flags, cd="-cd" in flags, force="-force" in flags,
                      whole="-whole" in flags, source=where)


def _default_echo(text: str) -> None:
    print(f"molrc: {text}", file=sys.stderr)


def _default_warn(text: str) -> None:
    print(f"molpy: warning: {text}", file=sys.stderr)


def load_config(path: str | os.PathLike | None = None, variables: dict[str, str] | None = None, *,
                text: str | None = None, echo: Callable[[str], None] | None = None,
                warn: Callable[[str], None] | None = None) -> Config:
    """Read a molrc: ``path``, else ``text``, else ./molrc, else the built-in default.

    ``variables`` come from ``-s KEY=VALUE``: usable as ``${KEY}``, and they define
    KEY before the file does (so they win).
    """
    variables = dict(variables or {})
    parser = _Parser({"MOLPY_DATA": data_dir(), **variables}, echo or _default_echo, warn or _default_warn)
    cwd = os.getcwd()
    for key, value in variables.items():
        parser.define(key, value, f"-s {key}", cwd)
    if path is not None:
        parser.config.path = os.fspath(path)
        parser.parse_file(os.fspath(path), None)
    elif text is not None:
        parser.parse_text(text, "<text>", cwd)
    elif os.path.exists("molrc"):
        parser.config.path = "molrc"
        parser.parse_file("molrc", None)
    else:
        parser.parse_text(DEFAULT_MOLRC, BUILTIN_NAME, cwd)
    return parser.config

