"""The ``molpy`` command: one sub-command a module in molpy.commands."""

from __future__ import annotations

import argparse
import errno
import importlib
import os
import sys

from . import __version__
from .errors import Error

COMMANDS = ("run", "cow", "img", "session", "fleet", "engine", "linux", "server")   # modules of molpy.commands, each with add_parser() and main()

from .status import BROKEN_PIPE as EXIT_BROKEN_PIPE, BUG as EXIT_BUG, USAGE as EXIT_USAGE


class CommandError(Error):
    """A user-facing failure: printed as one line, exit status ``status``."""

    def __init__(self, message: str, status: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.status = status


def say(text: str) -> None:
    """One line on stderr; nothing when stderr is gone (a hung-up terminal, a closed pipe)."""
    try:
        sys.stderr.write(text + "\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


class _Parser(argparse.ArgumentParser):
    """argparse, except that help that cannot be written is an error (argparse drops it)."""

    def _print_message(self, message: str, file=None) -> None:
        if message:
            (file or sys.stderr).write(message)


_parsers: dict[str | None, argparse.ArgumentParser] = {}   # built once a process (the warm server's spare builds "run" ahead)


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The whole parser, or (``only``, a command's name) the one command being run: a resume
    pays for no other command's module."""
    only = only if only in COMMANDS else None
    if only not in _parsers:
        _parsers[only] = _new_parser(only)
    return _parsers[only]


def _new_parser(only: str | None) -> argparse.ArgumentParser:
    parser = _Parser(
        prog="molpy",
        description="Run PowerPC guests on a Unicorn core with Mac-on-Linux's block driver "
                    "and sessions: boot once, press F12 to save, resume instantly.",
        epilog="Run 'molpy COMMAND --help' for a command's options.")
    parser.add_argument("--version", action="version", version=f"molpy {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in (only,) if only else COMMANDS:
        importlib.import_module(f"molpy.commands.{name}").add_parser(sub)
    return parser


def main(argv: list[str] | None = None, *, process: bool | None = None) -> int:
    """Run one command. ``process`` (the default when ``argv`` is None: the ``molpy``
    script, ``python -m molpy``): molpy is the whole process, so its signal handling stays
    to the end instead of being undone for the caller."""
    if process is None:
        process = argv is None
    from . import crashnet
    from .hostsignals import SignalGuard

    if process:
        _hold_standard_fds()
    guard = SignalGuard().hold().install()    # a signal from here on: _main's one line
    crashnet.install()
    try:
        return _main(argv, guard)
    finally:
        if process:
            guard.ignore_from_now()       # nothing can change the status any more
        else:
            guard.uninstall()
            crashnet.uninstall()


def _main(argv: list[str] | None, guard) -> int:
    from .hostsignals import SignalExit, signal_name

    try:
        guard.release()                   # a signal during the start-up raises here
        status = _dispatch(argv)
    except Error as e:                    # every failure molpy means to report: one line
        from .molrc.errors import printable
        say(f"molpy: error: {printable(str(e))}")
        status = e.status if isinstance(e, CommandError) else EXIT_USAGE
    except SignalExit as e:
        say(f"molpy: stopped by {e}")
        status = e.status
    except KeyboardInterrupt:             # SIGINT before the guard took it
        say("molpy: interrupted")
        status = 130
    except BrokenPipeError:               # stdout's reader went away (`molpy session info F | head`)
        status = EXIT_BROKEN_PIPE
    except OSError as e:                  # a file problem no command turned into a message
        where = f"{e.filename}: " if e.filename else ""
        say(f"molpy: error: {where}{e.strerror or e}")
        status = EXIT_USAGE
    except SystemExit as e:               # argparse: --help, --version, a usage error
        status = e.code if isinstance(e.code, int) else 0 if e.code is None else EXIT_USAGE
    except Exception as e:                # anything else is a molpy bug, never the user's file
        from .bugreport import bug_line, write_report
        say(bug_line(e, write_report(e, argv)))
        status = EXIT_BUG
    failed = _flush_or_drop()
    if failed is not None and status == 0:    # the last of the output did not go out
        if failed.errno == errno.EPIPE:
            status = EXIT_BROKEN_PIPE
        else:
            say(f"molpy: error: cannot write the output: {failed.strerror}")
            status = EXIT_USAGE
    if guard.status is not None and status < 128:
        say(f"molpy: stopped by {signal_name(guard.received)} (after the work under way was done)")
        status = guard.status             # a signal came while the command finished its work
    return status


def _dispatch(argv: list[str] | None) -> int:
    words = sys.argv[1:] if argv is None else argv
    parser = build_parser(words[0] if words else None)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    return args.func(args)


def _hold_standard_fds() -> None:
    """Started with stdin, stdout or stderr closed: put /dev/null there, or the next file
    molpy opens (a disk, the log) would get that number and receive the guest's output."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDWR)
            if null != fd:
                os.dup2(null, fd)
                os.close(null)


def _flush_or_drop() -> OSError | None:
    """Flush stdout/stderr now; if they cannot be written, send what is left to /dev/null
    (else Python reports the failure itself at exit, with a traceback and status 120).
    Returns why stdout could not be written, if it could not."""
    failed = None
    for stream in (sys.stdout, sys.stderr):
        if stream is None:                   # it was closed when molpy started
            continue
        try:
            stream.flush()
        except (OSError, ValueError) as e:
            if stream is sys.stdout and isinstance(e, OSError):
                failed = e
            try:
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, stream.fileno())
                os.close(devnull)
                stream.flush()
            except (OSError, ValueError):
                pass
    return failed


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
