"""The ``molpy`` command: one sub-command a module in molpy.commands."""

from __future__ import annotations

import argparse
import importlib
import sys

from . import __version__

COMMANDS = ("run", "cow", "img", "session")   # modules of molpy.commands, each with add_parser() and main()

EXIT_USAGE = 2


class CommandError(Exception):
    """A user-facing failure: printed as one line, exit status ``status``."""

    def __init__(self, message: str, status: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.status = status


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="molpy",
        description="Run PowerPC guests on a Unicorn core with Mac-on-Linux's block driver "
                    "and sessions: boot once, press F12 to save, resume instantly.",
        epilog="Run 'molpy COMMAND --help' for a command's options.")
    parser.add_argument("--version", action="version", version=f"molpy {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"molpy.commands.{name}").add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return args.func(args)
    except CommandError as e:
        print(f"molpy: error: {e}", file=sys.stderr)
        return e.status
    except KeyboardInterrupt:
        print("molpy: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
