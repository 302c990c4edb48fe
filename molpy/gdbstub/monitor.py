"""``monitor`` commands (gdb's qRcmd): what gdb cannot ask with its own packets."""

from __future__ import annotations

import shlex

HELP = """molpy monitor commands:
  monitor help              this list
  monitor info disks        the guest's disks: unit, path, size, flags
  monitor save FILE         save a session of the stopped guest to FILE (resume it with
                            molpy run -s session_file=FILE; add --gdb PORT to debug it again)
"""


def info_disks(machine) -> str:
    lines = []
    for dev in machine.devices:
        for i, unit in enumerate(dev.units):
            flags = " ".join(unit.spec.flags) or "(no flags)"
            mode = "read-only" if unit.readonly else "read-write"
            lines.append(f"unit {i}: {unit.spec.path}: {unit.backend.size} bytes, {mode}, {flags}")
    return "\n".join(lines) + "\n" if lines else "no disks\n"


def run(machine, line: str) -> str:
    """The output of one monitor command (ValueError: a usage message)."""
    try:
        words = shlex.split(line)
    except ValueError as e:
        raise ValueError(f"monitor: {e}") from None
    if not words or words == ["help"]:
        return HELP
    if words == ["info", "disks"]:
        return info_disks(machine)
    if words[0] == "save":
        if len(words) != 2:
            raise ValueError("usage: monitor save FILE")
        from ..emulation.session import SessionError

        try:
            size = machine.save_session(words[1])
        except (SessionError, OSError) as e:
            raise ValueError(f"monitor save: {e}") from None
        return f"session saved to {words[1]} ({size / (1 << 20):.1f} MiB)\n"
    raise ValueError(f"monitor: unknown command {line!r} (monitor help lists them)")
