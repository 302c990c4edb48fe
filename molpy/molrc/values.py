"""The values of the keys molpy serves, checked, each error naming its file and line."""

from __future__ import annotations

from .disks import BOOT_TYPES
from .errors import ConfigError, show
from .table import Config, parse_number, resolve_path

from ..emulation.memory import MAX_RAM_MIB  # noqa: F401  (the one RAM limit, re-exported)
# Unicorn PPC32 models that are embedded cores (4xx, BookE e200/e500 and the MPC85xx
# built on e500): another exception and MMU model than the classic PowerPC MOL ran on
EMBEDDED_PREFIXES = ("401", "403", "405", "440", "460", "npe4", "stb", "x2vp", "iop480", "e200", "e500",
                     "mpc85")
SIXTY_FOUR_BIT = ("g5", "970", "ppc970", "970fx", "970mp", "power", "ppc64")


def gdb_port(config: Config) -> int | None:
    """The ``gdb:`` key: the TCP port molpy's GDB stub listens on (None: no stub)."""
    d = config.first("gdb")
    if d is None or not d.words or not d.value.strip():
        return None
    text = d.value.strip()
    if not text.isdigit() or not 0 <= int(text) <= 65535:
        raise ConfigError(f"{d.where}: gdb: {show(text)} is not a TCP port (0-65535; 0 picks a free one)")
    return int(text)


def ram_mib(config: Config) -> int:
    value = config.get_int("ram_size", 64)
    if not 1 <= value <= MAX_RAM_MIB:
        raise ConfigError(f"{config.where('ram_size') or config.path}: ram_size {value} MiB is out of range "
                          f"(1 to {MAX_RAM_MIB})")
    return value


def cpu_name(config: Config) -> str | None:
    """The ``cpu:`` value when it names a classic 32-bit PowerPC molpy can run."""
    d = config.first("cpu")
    if d is None or not d.words:
        return None
    name = d.value
    key = name.strip().lower()
    hint = "use 750 (G3, the default), 7400 (G4), 604, 603 or another classic 32-bit PowerPC"
    if key.startswith(SIXTY_FOUR_BIT):
        raise ConfigError(f"{d.where}: cpu: {show(name)} is a 64-bit PowerPC, which molpy does not emulate; {hint}")
    if key.startswith(EMBEDDED_PREFIXES):
        raise ConfigError(f"{d.where}: cpu: {show(name)} is an embedded PowerPC (4xx/BookE) core, not the "
                          f"classic PowerPC MOL's guests run on; {hint}")
    from ..cpu import cpu_model          # (Unicorn's model table; machine.py imports it anyway)

    try:
        cpu_model(name)
    except ValueError:
        raise ConfigError(f"{d.where}: cpu: {show(name)} is not a PowerPC model molpy knows; {hint}") from None
    return name


def boot_method(config: Config, required: bool = False) -> str | None:
    """MOL's boot method: ``boot_method`` (MOL's molrc.post sets it to ``${boot_type}``),
    else ``boot_type``; one of MOL's newworld, osx, oldworld, linux, elf."""
    for key in ("boot_method", "boot_type"):
        d = config.first(key)
        if d is None:
            continue
        if d.value not in BOOT_TYPES:
            raise ConfigError(f"{d.where}: {key}: {show(d.value)} is not a boot type "
                              f"(MOL's are {', '.join(BOOT_TYPES)})")
        return d.value
    if required:
        raise ConfigError("boot_method is not defined (MOL needs it; its config/molrc.post sets it)")
    return None


def session_number(config: Config) -> int | None:
    """MOL's session number (it picks the boot type and MOL's per-session files; the
    session file itself is only what ``session_file`` names, in MOL as in molpy)."""
    d = config.first("session")
    if d is None:
        return None
    number = parse_number(d.words[0]) if len(d.words) == 1 else None
    if number is None or number < 0:
        raise ConfigError(f"{d.where}: session: {show(d.value)} is not a session number (0, 1, 2 ...)")
    return number


def pseudofiles(config: Config) -> list[tuple[str, str]]:
    """(name the guest sees, host path) of every pseudo file, named as MOL's pseudofs did:
    ``pseudofile`` then ``pseudofile_`` entries take NAME, else NAME-1, NAME-2 ...;
    ``@pseudofile`` entries are added only when NAME is still free."""
    files: list[tuple[str, str]] = []
    taken: set[str] = set()
    for key in ("pseudofile", "pseudofile_", "@pseudofile"):
        for d in config.defs.get(key, []):
            if len(d.words) < 2:
                raise ConfigError(f"{d.where}: {key} needs a name and a host path")
            name, path = d.words[0], resolve_path(d.words[1], d)
            if key == "@pseudofile":
                if name not in taken:
                    taken.add(name)
                    files.append((name, path))
                continue
            n, candidate = 0, name
            while candidate in taken:
                n += 1
                candidate = f"{name}-{n}"
            taken.add(candidate)
            files.append((candidate, path))
    return files
