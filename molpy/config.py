"""molrc: MOL's configuration grammar, read the way MOL's own parser reads it.

``load_config`` reads the user's own molrc (``-f``, ./molrc or the built-in default)
or, with ``mol_lib``/``mol_etc``, a MOL installation's config tree. The grammar and
every bound are in ``molpy.molrc`` and docs/molrc.md. Real MOL configs carry many keys
molpy has no use for: they give one warning line per group, never an error;
everything else that is wrong names the file and line.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable, Iterable, Mapping

from .files import data_dir
from .molrc.disks import BlkdevSpec, build_disks
from .molrc.errors import ConfigError, printable
from .molrc.interpreter import Interpreter
from .molrc.keys import warn_unused
from .molrc.moltree import load_mol_tree
from .molrc.table import FILE, PREDEFINED, Config, Definition, parse_bool
from .molrc.values import MAX_RAM_MIB, boot_method

__all__ = ["BUILTIN_NAME", "DEFAULT_MOLRC", "MAX_RAM_MIB", "BlkdevSpec", "Config", "ConfigError", "data_dir",
           "load_config", "parse_bool", "parse_size"]

BUILTIN_NAME = "<built-in default>"

DEFAULT_MOLRC = """\
# molpy's built-in default: the bundled demo guest with a demo disk and a session
ram_size: 64
session_file: ${MOLPY_DATA}/default.session
session_readonly: no
cow_dir: ${MOLPY_DATA}
blkdev: ${MOLPY_DATA}/demo.img -rw -boot
"""

_SIZE = re.compile(r"^\s*(\d+)\s*([kmgt]?)(i?b)?\s*$", re.IGNORECASE)


def parse_size(text: str) -> int:
    """Bytes from ``512``, ``64K``, ``64M``, ``2G``, ``1T`` (also ``64MiB``, ``64mb``)."""
    m = _SIZE.match(text)
    if not m:
        raise ValueError(f"{text!r} is not a size (use a number with K, M, G or T, e.g. 64M)")
    value = int(m.group(1)) << {"": 0, "k": 10, "m": 20, "g": 30, "t": 40}[m.group(2).lower()]
    if value <= 0:
        raise ValueError(f"{text!r}: a size must be more than 0")
    return value


def _default_echo(text: str) -> None:
    print(printable(f"molrc: {text}"), file=sys.stderr)


def _default_warn(text: str) -> None:
    print(printable(f"molpy: warning: {text}"), file=sys.stderr)


def _settings(variables: Mapping[str, str] | Iterable[tuple[str, str]] | None) -> list[tuple[str, str]]:
    if variables is None:
        return []
    return list(variables.items()) if isinstance(variables, Mapping) else list(variables)


def load_config(path: str | os.PathLike | None = None,
                variables: Mapping[str, str] | Iterable[tuple[str, str]] | None = None, *,
                text: str | None = None, echo: Callable[[str], None] | None = None,
                warn: Callable[[str], None] | None = None,
                mol_lib: str | None = None, mol_etc: str | None = None) -> Config:
    """Read a molrc: ``path``, else ``text``, else ./molrc, else the built-in default;
    or, given ``mol_lib`` and ``mol_etc``, a MOL installation's config tree.

    ``variables`` are the ``-s KEY=VALUE`` settings (a mapping or (key, value) pairs, in
    the order given): each is put in front of every other definition, as MOL did with
    its command line, so it wins, and is usable as ``${KEY}``.
    """
    echo = echo or _default_echo
    warn = warn or _default_warn
    settings = _settings(variables)
    if mol_lib is not None or mol_etc is not None:
        if mol_lib is None or mol_etc is None:
            raise ConfigError("a MOL installation needs both --mol-lib (its library tree) and --mol-etc (its /etc/mol)")
        if path is not None or text is not None:
            raise ConfigError("give either a molrc (-f) or a MOL installation (--mol-lib/--mol-etc), not both")
        config = load_mol_tree(mol_lib, mol_etc, settings, echo=echo)
        method = boot_method(config, required=True)
    else:
        config = _load_own(path, settings, text, echo)
        method = boot_method(config)
    build_disks(config, method)
    if config.skipped_disks:
        warn(f"disks left out as MOL did: {'; '.join(config.skipped_disks)}")
    warn_unused(config, warn)
    return config


def _load_own(path: str | os.PathLike | None, settings: list[tuple[str, str]], text: str | None,
              echo: Callable[[str], None]) -> Config:
    config = Config(path=None)
    interp = Interpreter(config, echo=echo, origin=FILE)
    cwd = os.getcwd()
    config.add(Definition("MOLPY_DATA", [data_dir()], PREDEFINED, cwd, PREDEFINED), head=True)
    for key, value in settings:
        interp.define_setting(key, value, cwd)
    if path is not None:
        config.path = os.fspath(path)
        interp.read_file(config.path, None)
    elif text is not None:
        interp.read_text(text, "<text>", cwd)
    elif os.path.exists("molrc"):
        config.path = "molrc"
        interp.read_file("molrc", None)
    else:
        interp.read_text(DEFAULT_MOLRC, BUILTIN_NAME, cwd)
    return config
