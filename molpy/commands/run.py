"""``molpy run``: start a guest from a molrc and talk to it on the terminal."""

from __future__ import annotations

import argparse
import atexit
import logging
import os
import sys

from ..cli import CommandError

EXIT_FAULT = 3
EXIT_INTERRUPT = 130


def add_parser(sub) -> None:
    p = sub.add_parser(
        "run", help="run a guest from a molrc",
        description="Run the guest a molrc describes (./molrc, else the built-in demo config). "
                    "On a terminal: keys go to the guest, Ctrl-] quits, F12 saves the session. "
                    "The exit status is the guest's exit code, 3 after a guest fault.")
    p.add_argument("-f", "--config", metavar="MOLRC", help="the molrc to read (default: ./molrc, "
                   "else the built-in config that runs the demo guest)")
    p.add_argument("-s", "--set", metavar="KEY=VALUE", action="append", default=[],
                   help="set a molrc variable (usable as ${KEY}; also defines KEY); repeatable")
    p.add_argument("--log", metavar="FILE", help="where the guest's log (OSI LOG_PUTC) goes; "
                   "'-' for stderr (default: molpy.log in molpy's data directory)")
    p.add_argument("-v", "--verbose", action="store_true", help="say more about what molpy does")
    p.set_defaults(func=main)


def parse_sets(items: list[str]) -> dict[str, str]:
    variables = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise CommandError(f"-s expects KEY=VALUE, got {item!r}")
        variables[key.strip()] = value
    return variables


def load_machine_config(path: str | None, sets: list[str]):
    """Config file -> MachineConfig, with every problem as a CommandError."""
    from ..config import ConfigError, load_config
    from ..machine import MachineConfig

    try:
        config = load_config(path, parse_sets(sets))
        return config, MachineConfig.from_config(config)
    except ConfigError as e:
        raise CommandError(str(e)) from None
    except OSError as e:
        raise CommandError(f"{e.filename or path}: {e.strerror}") from None


def setup_logging(log_target: str | None, verbose: bool) -> None:
    from ..config import data_dir

    root = logging.getLogger("molpy")
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    err = logging.StreamHandler(sys.stderr)
    err.setFormatter(logging.Formatter("molpy: %(message)s"))
    err.setLevel(logging.DEBUG if verbose else logging.WARNING)
    root.addHandler(err)
    guest = logging.getLogger("molpy.guest")
    guest.propagate = False
    if log_target == "-":
        handler: logging.Handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("log: %(message)s"))
    else:
        path = log_target or os.path.join(data_dir(), "molpy.log")
        try:
            handler = logging.FileHandler(path, encoding="utf-8")
        except OSError as e:
            raise CommandError(f"cannot open the log {path}: {e.strerror}") from None
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    guest.addHandler(handler)


def main(args: argparse.Namespace) -> int:
    from ..boot import BootError
    from ..console import open_console
    from ..drivers.block import BlockError
    from ..machine import Machine, Stop

    config, mconf = load_machine_config(args.config, args.set)
    setup_logging(args.log, args.verbose)
    frontend = open_console()
    atexit.register(frontend.close)
    machine = None
    try:
        if hasattr(frontend, "install_signals"):
            frontend.install_signals()
        try:
            machine = Machine(mconf, frontend)
            machine.boot()
        except (BootError, BlockError) as e:
            raise CommandError(str(e)) from None
        while True:
            stop = machine.run()
            if stop is Stop.SAVE:
                frontend.write(b"\r\nmolpy: F12: this molrc has no session_file; nothing saved\r\n")
                continue
            break
    finally:
        frontend.close()
        if machine is not None:
            machine.close()
    if stop is Stop.EXIT:
        return machine.exit_code & 0xFF
    if stop is Stop.FAULT:
        print(machine.fault.report(), file=sys.stderr)
        return EXIT_FAULT
    if stop is Stop.QUIT:
        print("molpy: input ended; quitting" if frontend.quit_on_eof and frontend.eof
              else "molpy: quit (Ctrl-])", file=sys.stderr)
        return 0
    print("molpy: interrupted", file=sys.stderr)
    return EXIT_INTERRUPT
