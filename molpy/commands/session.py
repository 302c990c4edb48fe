"""``molpy session``: what a session file holds, and whether it still fits its disks."""

from __future__ import annotations

import argparse
import time

from ..cli import CommandError

from ..status import MISMATCH as EXIT_MISMATCH


def add_parser(sub) -> None:
    p = sub.add_parser("session", help="inspect or verify a saved session",
                       description="Sessions are saved with F12 (molpy run) into the molrc's session_file.")
    cmds = p.add_subparsers(dest="session_command", metavar="ACTION", required=True)
    i = cmds.add_parser("info", help="what a session holds")
    i.add_argument("file")
    i.set_defaults(func=info)
    v = cmds.add_parser("verify", help="check a session against its disks",
                        description="Check every chunk's checksum (RAM included) and every disk-sync "
                                    "marker against the disks the molrc attaches. Exit status 0 when the "
                                    "session would resume, 1 when it would not.")
    v.add_argument("file")
    v.add_argument("-f", "--config", metavar="MOLRC", help="the molrc whose disks to check against "
                   "(default: ./molrc, else the built-in config)")
    v.add_argument("-s", "--set", metavar="KEY=VALUE", action="append", default=[])
    v.add_argument("--deep", action="store_true",
                   help="also compare a digest of every disk's contents with the one taken at save time")
    v.set_defaults(func=verify)


def _open(path: str):
    from ..emulation.session import SessionError, open_session
    from ..preflight import not_a_regular_file

    problem = not_a_regular_file(path, "session file")
    if problem:
        raise CommandError(problem)
    try:
        return open_session(path)
    except SessionError as e:
        raise CommandError(str(e)) from None


def info(args: argparse.Namespace) -> int:
    from ..emulation.session import SessionError
    from ..files import in_use

    s = _open(args.file)
    try:
        saved = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(s.saved_ns / 1e9))
        try:
            cpu = s.cpu_dict()
            pc, msr = int(cpu["pc"]), int(cpu["msr"])
        except SessionError as e:
            raise CommandError(str(e)) from None
        except (KeyError, TypeError, ValueError) as e:
            raise CommandError(f"{s.path}: the CPU state is damaged ({e!r})") from None
        print(f"session:  {s.path}")
        print(f"saved:    {saved} by molpy {s.molpy_version} (format {s.version})")
        print(f"state:    {'already resumed once (a non-read-only session resumes once)' if s.used else 'ready'}")
        holder = in_use(s.fd)
        if holder:
            print(f"in use:   by {holder.who}, which resumed it")
        print(f"RAM:      {s.ram_size >> 20} MiB")
        print(f"CPU:      pc 0x{pc & 0xFFFFFFFF:08x}  msr 0x{msr & 0xFFFFFFFF:08x}")
        from ..drivers.device import check_version
        from ..drivers.registry import device_classes

        classes, versions = device_classes(), s.versions()
        for (kind, instance), data in sorted(s.device_chunks().items()):
            version = versions.get((kind, instance), 0)
            cls = classes.get(kind)
            about = check_version(kind, cls, version) or cls.describe(data, version or 1)
            print(f"device:   {kind}/{instance} (state version {version or 1}): {len(data)} bytes"
                  + (f"; {about}" if about else ""))
        for (kind, instance), ref in sorted(s.bulk_chunks().items()):
            print(f"data:     {kind}/{instance}: {ref.length} bytes (streamed)")
    finally:
        s.close()
    return 0


def verify(args: argparse.Namespace) -> int:
    from .run import load_machine_config

    s = _open(args.file)
    problems: list[str] = []
    notes: list[str] = []
    try:
        if not s.verify_ram():
            problems.append("the RAM chunk fails its checksum (the file is damaged)")
        from ..cpu import CpuState
        from ..emulation.session import SessionError
        try:
            CpuState.from_dict(s.cpu_dict())
        except (SessionError, ValueError) as e:
            problems.append(f"the CPU state is damaged ({e})")
        for name in s.verify_bulk():
            problems.append(f"the chunk {name} fails its checksum (the file is damaged)")
        _, mconf = load_machine_config(args.config, args.set)
        from ..progress import bars_on_terminal
        bars_on_terminal()
        from ..resumecheck import against_disks
        problems += against_disks(s, mconf, deep=args.deep, notes=notes)
    finally:
        s.close()
    for n in notes:
        print(f"molpy: {args.file}: note: {n}")
    if problems:
        for p in problems:
            print(f"molpy: {args.file}: {p}")
        return EXIT_MISMATCH
    print(f"{args.file}: OK ({'chunks, disk markers and disk contents' if args.deep else 'chunks and disk markers'} match)")
    return 0
