"""A MOL installation's config tree, read in MOL's order with MOL's predefined variables.

MOL (res_manager.c's start-up) defines ``lib``, ``var``, ``etc``, ``bin`` (= ${lib}/bin,
from the built-in lib) and ``arch``, then takes the command-line settings (in front of
everything), defines ``data`` (its data directory) unless the command line did, works
from the data directory (so relative paths in every file are relative to it), reads
``config/molrc.sys``, defines ``molrc`` (= ${etc}), reads ``${etc}/session.map``, then
``config/molrc.post``, and stops unless ``session`` is then defined.

molpy's ``--mol-lib DIR`` is MOL's library tree, the folder holding config/molrc.sys
(mollib/ in MOL's source, /usr/share/mol/VERSION when installed; MOL calls it the data
directory): it is both ``lib`` and ``data`` (``-s data=DIR`` or ``-s lib=DIR`` change
one). ``--mol-etc DIR`` is MOL's /etc/mol. ``var`` is MOL's /var/lib/mol unless
``-s var=DIR`` says otherwise; ``arch`` is ``linux``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable

from .errors import ConfigError
from .interpreter import Interpreter
from .table import MOL_TREE, PREDEFINED, Config, Definition, parse_number
from .values import session_number

MOL_VAR_DIR = "/var/lib/mol"
MOL_ARCH = "linux"
SYS_FILE = os.path.join("config", "molrc.sys")
POST_FILE = os.path.join("config", "molrc.post")
SESSION_MAP = "session.map"


def _folder(path: str, what: str) -> str:
    full = os.path.abspath(os.path.expanduser(path))
    if not os.path.isdir(full):
        raise ConfigError(f"{what} {path}: not a folder")
    return full


def _predefine(config: Config, key: str, value: str) -> None:
    config.add(Definition(key, [value], PREDEFINED, os.getcwd(), PREDEFINED), head=True)


def load_mol_tree(lib: str, etc: str, settings: Iterable[tuple[str, str]], *,
                  echo: Callable[[str], None]) -> Config:
    """The resources of a MOL installation, as MOL read them (disks not yet built)."""
    lib = _folder(lib, "--mol-lib")
    etc = _folder(etc, "--mol-etc")
    config = Config(path=None)
    interp = Interpreter(config, echo=echo, origin=MOL_TREE)
    for key, value in (("lib", lib), ("var", MOL_VAR_DIR), ("etc", etc), ("bin", os.path.join(lib, "bin")),
                       ("arch", MOL_ARCH)):
        _predefine(config, key, value)
    cwd = os.getcwd()
    for key, value in settings:
        if key == "session" and (n := parse_number(value)) is not None and n >= 0:
            value = str(n)                          # MOL's -N / --session=N: a number
        interp.define_setting(key, value, cwd)
    if not config.present("data"):
        _predefine(config, "data", lib)
    data = _folder(config.get_path("data") or lib, "the data directory (data)")
    interp.fixed_base = data
    config.mol_tree = {"lib": config.get("lib") or lib, "etc": config.get("etc") or etc, "data": data}

    interp.read_file(os.path.join(data, SYS_FILE), None)
    etc_now = config.get_path("etc") or etc
    _predefine(config, "molrc", etc_now)
    interp.read_file(os.path.join(data, etc_now, SESSION_MAP), None)
    interp.read_file(os.path.join(data, POST_FILE), None)

    if not config.present("session"):
        raise ConfigError(f"session is not defined after {os.path.join(data, POST_FILE)} "
                          f"(MOL needs a session number: -s session=N)")
    session_number(config)
    return config
