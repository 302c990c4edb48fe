"""``molpy run``: start a guest from a molrc and talk to it on the terminal."""

from __future__ import annotations

import argparse
import atexit
import logging
import os
import sys
import time

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
    p.add_argument("--mol-lib", metavar="LIBDIR",
                   help="run from a MOL installation: its library tree (the folder holding "
                        "config/molrc.sys: /usr/share/mol/VERSION, or mollib/ in MOL's source); "
                        "needs --mol-etc")
    p.add_argument("--mol-etc", metavar="ETCDIR",
                   help="the MOL installation's config folder (/etc/mol: session.map, molrc.*); "
                        "-s session=N picks MOL's session (0-5), as mol -N did")
    p.add_argument("--log", metavar="FILE", help="where the guest's log (OSI LOG_PUTC) goes; "
                   "'-' for stderr (default: molpy.log in molpy's data directory)")
    p.add_argument("--fresh", action="store_true",
                   help="boot the guest even when the molrc's session_file holds a saved session")
    p.add_argument("--check", action="store_true",
                   help="check the molrc (its values, that its disks and bootfile exist), list what "
                        "molpy will use from it, then exit")
    p.add_argument("-v", "--verbose", action="store_true", help="say more about what molpy does")
    p.set_defaults(func=main)


def parse_sets(items: list[str]) -> list[tuple[str, str]]:
    """``-s KEY=VALUE`` settings, in the order given (a later one wins, as in MOL)."""
    variables = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise CommandError(f"-s expects KEY=VALUE, got {item!r}")
        variables.append((key.strip(), value))
    return variables


def load_machine_config(path: str | None, sets: list[str], *, mol_lib: str | None = None,
                        mol_etc: str | None = None, warn=None):
    """Config file (or MOL installation) -> MachineConfig, with every problem as a CommandError."""
    from ..config import ConfigError, load_config
    from ..machine import MachineConfig
    from ..molrc.errors import printable

    try:
        config = load_config(path, parse_sets(sets), mol_lib=mol_lib, mol_etc=mol_etc, warn=warn)
        return config, MachineConfig.from_config(config)
    except ConfigError as e:
        raise CommandError(printable(str(e))) from None
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


def start_machine(mconf, frontend, fresh: bool):
    """Resume the session_file when it holds a usable session (as MOL did), else boot."""
    from ..boot import BootError
    from ..drivers.block import BlockError
    from ..drivers.device import StateMismatch
    from ..emulation.session import SessionError, open_session
    from ..machine import Machine

    path = mconf.session_file
    try:
        if path and not fresh and os.path.exists(path):
            try:
                with_used = open_session(path)
                used = with_used.used
                with_used.close()
            except SessionError as e:
                raise CommandError(f"{e}. Start with --fresh to boot instead (the file is left as it is)") from None
            if used and not mconf.session_readonly:
                note(frontend, f"session {path} was already resumed once (session_readonly: no); booting fresh")
            else:
                t = time.perf_counter()
                machine = Machine.from_session(path, mconf, frontend)
                note(frontend, f"resumed session {path} ({(time.perf_counter() - t) * 1000:.0f} ms)"
                     + (", read-only" if mconf.session_readonly else "; it resumes once: press F12 to save again"))
                return machine
        machine = Machine(mconf, frontend)
        try:
            machine.boot()
        except BaseException:
            machine.close()
            raise
        return machine
    except (BootError, BlockError, SessionError, StateMismatch) as e:
        raise CommandError(str(e)) from None


def note(frontend, text: str) -> None:
    """One line for the user, between the guest's output lines."""
    frontend.write(f"molpy: {text}\r\n".encode())


def save(machine, frontend) -> bool:
    """F12: save the session; True when saved (molpy then exits, as MOL did)."""
    from ..emulation.session import SessionError

    t = time.perf_counter()
    try:
        size = machine.save_session()
    except SessionError as e:
        note(frontend, f"F12: {e}")
        return False
    machine.saved = True
    note(frontend, f"session saved to {machine.config.session_file} ({size / (1 << 20):.1f} MiB, "
                   f"{time.perf_counter() - t:.2f} s)")
    return True


def check(config, mconf, notes: list[str] | None = None) -> int:
    """``--check``: what a run would use, or the first problem as a one-line error."""
    from ..molrc.errors import printable

    if config.mol_tree is not None:
        describe_mol_config(config, mconf, notes or [])
    elif notes:
        print("\n".join(printable(f"note: {n}") for n in notes))
    try:
        _check_files(config, mconf)
    except CommandError as e:                  # paths come from the molrc: control characters escaped
        raise CommandError(printable(str(e))) from None
    name = config.path or (config.mol_tree["etc"] if config.mol_tree else "built-in config")
    print(printable(f"{name}: ok: {mconf.ram_mib} MiB RAM, {len(mconf.blkdevs)} disk(s), "
                    f"session {mconf.session_file or 'none'}"))
    return 0


def _check_files(config, mconf) -> None:
    from ..drivers.demo_disk import default_demo_path

    for spec in mconf.blkdevs:                 # (a run makes the default demo disk if missing)
        if not os.path.exists(spec.path) and os.path.abspath(spec.path) != default_demo_path():
            raise CommandError(f"disk {spec.path} does not exist (blkdev at {spec.source or 'the config'})")
    if mconf.bootfile and not os.path.isfile(mconf.bootfile):
        raise CommandError(f"bootfile {mconf.bootfile} does not exist")
    if mconf.of_image and not os.path.isfile(mconf.of_image):
        raise CommandError(f"of_image {mconf.of_image} does not exist (the firmware, {config.where('of_image')})")
    if mconf.session_file and not os.path.isdir(os.path.dirname(os.path.abspath(mconf.session_file))):
        raise CommandError(f"session_file {mconf.session_file}: its folder does not exist")
    if mconf.cow_dir and os.path.exists(mconf.cow_dir) and not os.path.isdir(mconf.cow_dir):
        raise CommandError(f"cow_dir {mconf.cow_dir} is not a folder")


def describe_mol_config(config, mconf, notes: list[str]) -> None:
    """What molpy will use from a MOL installation, one line a thing (--check)."""
    from ..molrc.disks import disk_meaning
    from ..molrc.errors import printable

    def mark(path: str | None) -> str:
        return "" if path is None or os.path.exists(path) else " (missing)"

    def say(line: str) -> None:                   # (every line may hold words of the files)
        print(printable(line))

    tree = config.mol_tree
    say(f"MOL installation: lib {tree['lib']}, etc {tree['etc']}, data {tree['data']}")
    say(f"files read: {', '.join(config.files)}")
    say(f"session {mconf.session_id}, boot type {mconf.boot_type}")
    say(f"RAM: {mconf.ram_mib} MiB ({config.where('ram_size') or 'molpy default'})")
    for spec in mconf.blkdevs:
        say(f"disk: {spec.path} {' '.join(spec.flags) or '(no flags)'}: {disk_meaning(spec)} "
            f"({spec.key} at {spec.source}){mark(spec.path)}")
    if not mconf.blkdevs:
        say("disks: none")
    for key in ("of_image", "bootx_image", "rom_image", "elf_image"):    # what MOL would boot
        path = config.get_path(key)
        if path and key == "of_image":
            say(f"firmware: {path} (of_image){mark(path)}")
        elif path:
            say(f"boot file: {path} ({key}, not served by molpy){mark(path)}")
    for key in ("oftree", "nvram"):
        if getattr(mconf, key):
            say(f"{key}: {getattr(mconf, key)}{mark(getattr(mconf, key))}")
    if mconf.pseudofiles:
        say("pseudo files: " + ", ".join(f"{name} = {path}{mark(path)}" for name, path in mconf.pseudofiles))
    say(f"session file: {mconf.session_file or 'none (MOL sets no session_file; -s session_file=PATH saves sessions)'}")
    for n in notes:
        say(n)


def main(args: argparse.Namespace) -> int:
    from ..console import open_console
    from ..machine import Stop

    notes: list[str] = []
    config, mconf = load_machine_config(args.config, args.set, mol_lib=args.mol_lib, mol_etc=args.mol_etc,
                                        warn=notes.append if args.check else None)
    if args.check:
        return check(config, mconf, notes)
    setup_logging(args.log, args.verbose)
    frontend = open_console()
    atexit.register(frontend.close)
    machine = None
    try:
        if hasattr(frontend, "install_signals"):
            frontend.install_signals()
        machine = start_machine(mconf, frontend, args.fresh)
        while True:
            stop = machine.run()
            if stop is not Stop.SAVE:
                break
            if save(machine, frontend):
                stop = Stop.QUIT
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
    if stop is Stop.QUIT and machine.saved:
        return 0
    if stop is Stop.QUIT:
        print("molpy: input ended; quitting" if frontend.quit_on_eof and frontend.eof
              else "molpy: quit (Ctrl-])", file=sys.stderr)
        return 0
    print("molpy: interrupted", file=sys.stderr)
    return EXIT_INTERRUPT
