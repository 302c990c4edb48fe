"""``molpy linux build``: build molpy's Linux kernel into the cache (docs/linux.md)."""

from __future__ import annotations

import argparse

from ..cli import CommandError, say


def add_parser(sub) -> None:
    p = sub.add_parser("linux", help="build molpy's Linux kernel (cached)",
                       description="Build Debian's linux-source-6.1 with molpy's patches "
                                   "(guest/linux) into ~/.cache/molpy/linux; a cached build is reused.")
    cmds = p.add_subparsers(dest="linux_command", metavar="ACTION", required=True)
    b = cmds.add_parser("build", help="build (or find in the cache) the vmlinux; prints its path")
    b.add_argument("-j", "--jobs", type=int, default=2, help="parallel compile jobs (default 2)")
    b.add_argument("--force", action="store_true", help="build again even if cached")
    b.set_defaults(func=build)


def build(args: argparse.Namespace) -> int:
    from ..linux import build as builder

    if args.jobs < 1:
        raise CommandError("--jobs: at least 1")
    try:
        path = builder.build(lambda line: say(f"molpy linux: {line}"), jobs=args.jobs, force=args.force)
    except builder.BuildError as e:
        raise CommandError(f"linux build: {e}") from None
    print(path)
    return 0


def main(args: argparse.Namespace) -> int:
    return args.func(args)
