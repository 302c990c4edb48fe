"""``molpy engine``: build and show the patched Unicorn molpy runs on (docs/engine.md)."""

from __future__ import annotations

import argparse
import json
import os

from ..cli import CommandError, say


def add_parser(sub) -> None:
    p = sub.add_parser("engine", help="build or show molpy's engine (Unicorn with exact stops)",
                       description="molpy runs guests on Unicorn built from its released source with "
                                   "molpy's exact-stops patch (stock Unicorn runs a load or store twice "
                                   "after a stop). 'pip install' builds it; these commands rebuild and "
                                   "inspect it.")
    cmds = p.add_subparsers(dest="engine_command", metavar="ACTION", required=True)
    b = cmds.add_parser("build", help="download, check, patch and build the engine (cached)",
                        description="Download Unicorn's sdist with pip, check its sha256, apply "
                                    "molpy's patch and build the PowerPC library into the cache "
                                    "(about a minute; needs a C compiler, cmake and patch). "
                                    "A cached build is reused unless --force.")
    b.add_argument("--force", action="store_true", help="build again even if the cache holds it")
    b.add_argument("--sdist", metavar="FILE", help="use this copy of unicorn-2.1.4.tar.gz (checked) "
                   "instead of downloading it")
    b.set_defaults(func=build)
    i = cmds.add_parser("info", help="which engine molpy loads, and whether its stops are exact",
                        description="Show the cache folder, the library the binding loads and "
                                    "whether it carries the exact-stops patch.")
    i.set_defaults(func=info)


def build(args: argparse.Namespace) -> int:
    from ..engine import build as builder

    if args.sdist is not None and not os.path.isfile(args.sdist):
        raise CommandError(f"{args.sdist}: no such file")
    try:
        folder = builder.build(lambda line: say(f"molpy engine: {line}"), sdist=args.sdist, force=args.force)
    except builder.BuildError as e:
        raise CommandError(f"engine build: {e}") from None
    print(folder)
    return 0


def info(args: argparse.Namespace) -> int:
    from .. import engine

    folder = engine.built()
    print(f"engine:   Unicorn {engine.UNICORN_VERSION} + {os.path.basename(engine.PATCH_FILE)}")
    print(f"cache:    {engine.engine_dir()} ({'built' if folder else 'not built'})")
    if folder:
        try:
            with open(os.path.join(folder, "BUILDINFO.json")) as f:
                print(f"built:    {json.load(f).get('built', '?')}")
        except (OSError, ValueError):
            pass
    path, exact = engine.loaded_library()
    print(f"loaded:   {path}")
    print(f"exact:    {'yes' if exact else 'no (stock Unicorn: molpy refuses to run guests)'}")
    return 0 if exact else 1
