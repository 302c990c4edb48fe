"""``molpy run``: start a guest from a molrc and talk to it on the terminal."""

from __future__ import annotations

import argparse
import atexit
import errno
import logging
import os
import sys
import time

from ..status import FAULT as FAULT_EXIT_STATUS, INTERRUPT as EXIT_INTERRUPT
from ..cli import EXIT_BROKEN_PIPE, EXIT_USAGE, CommandError, say

EXIT_OUTPUT = EXIT_USAGE     # the guest's output cannot be written (/dev/full, ...)


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
                   help="check the molrc and everything it names (bootfile or firmware ELF, disks, "
                        "cow_dir, session file and its disk markers), list what molpy will use and "
                        "every problem, then exit")
    p.add_argument("--gdb", metavar="PORT", type=str, default=None,
                   help="listen for gdb (gdb-multiarch: target remote :PORT) on 127.0.0.1:PORT and wait for "
                        "it before the first instruction; 0 picks a free port (molrc key gdb: PORT)")
    p.add_argument("--gdb-no-wait", action="store_true",
                   help="with --gdb: start the guest at once; a debugger may attach later")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="say more about what molpy does, and show the guest's log (OSI LOG_PUTC: what MOL's "
                        "firmware prints) on the terminal as well as in the log file")
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

    logging.raiseExceptions = False     # a log that cannot be written never ends the run
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
        from ..logfile import CappedLogHandler, LogFileError

        path = log_target or os.path.join(data_dir(), "molpy.log")
        try:
            handler = CappedLogHandler(path)
        except LogFileError as e:
            raise CommandError(str(e)) from None
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
        if verbose:                      # -v: the guest's log (MOL's firmware talks there) on screen too
            echo = logging.StreamHandler(sys.stderr)
            echo.setFormatter(logging.Formatter("log: %(message)s"))
            guest.addHandler(echo)
    guest.addHandler(handler)


def unhonoured_settings(config, mconf, session_ram_mib: int) -> str | None:
    """A resumed session is the machine it was: settings it cannot honour, named in one line."""
    unused = []
    where = config.where("ram_size") or ""
    if where and mconf.ram_mib != session_ram_mib:
        set_by = "-s " if where == "command line" else ""
        at = "" if set_by else f"{where}; "
        unused.append(f"{set_by}ram_size={mconf.ram_mib} ({at}the session has {session_ram_mib} MiB of RAM)")
    for key in ("bootfile", "boot_args"):
        if config.where(key) == "command line":
            unused.append(f"-s {key}={config.get(key)} (the guest is already running)")
    if not unused:
        return None
    return f"not used by the resumed session: {', '.join(unused)}; --fresh boots with them"


def start_machine(mconf, frontend, fresh: bool, config=None):
    """Resume the session_file when it holds a usable session (as MOL did), else boot."""
    from ..drivers.device import StateMismatch
    from ..emulation.session import SessionError, SessionUsed
    from ..errors import Error
    from ..machine import Machine

    path = mconf.session_file
    try:
        if path and not fresh and os.path.exists(path):
            t = time.perf_counter()
            try:
                machine = Machine.from_session(path, mconf, frontend)   # checks "used" under its lock
            except SessionUsed:
                note(frontend, f"session {path} was already resumed once (session_readonly: no); booting fresh")
            except StateMismatch:               # (its message says what to do)
                raise
            except SessionError as e:
                raise CommandError(f"{e}. Start with --fresh to boot instead (the file is left as it is)") from None
            else:
                try:
                    announce_resume(machine, mconf, config, time.perf_counter() - t)
                except BaseException:
                    machine.close()
                    raise
                return machine
        machine = Machine(mconf, frontend)
        try:
            machine.boot()
        except BaseException:
            machine.close()
            raise
        return machine
    except CommandError:
        raise
    except Error as e:                  # a disk, a device's file, the ELF ...: one line
        raise CommandError(str(e)) from None


def announce_resume(machine, mconf, config, seconds: float) -> None:
    """After a resume: one note, settings the session cannot honour, the guest's line again.
    ``mconf`` is the molrc's (the machine's own has the session's RAM size)."""
    from .. import crashnet

    frontend, path = machine.frontend, mconf.session_file
    crashnet.set_bus_context(f"the session file {path}, which the guest's RAM is mapped "
                             f"from, was truncated or changed under the running guest")
    note(frontend, f"resumed session {path} ({seconds * 1000:.0f} ms)"
         + (", read-only" if mconf.session_readonly else "; it resumes once: press F12 to save again"))
    for dev in machine.devices:                  # disks accepted by a content check
        for text in dev.notes:
            note(frontend, text)
    if machine.config_changed:
        frontend.flush()
        say(("\n" if frontend.line_open else "") + "molpy: note: the molrc's settings changed since the session was saved; the resumed "
            "machine goes on as it was saved (--fresh boots with the new settings)")
    unused = unhonoured_settings(config, mconf, machine.memory.size >> 20) if config else None
    if unused:
        note(frontend, unused)
    redraw_guest_line(machine)


def redraw_guest_line(machine) -> None:
    """The guest's current line (its prompt) again, so the user sees where they are."""
    for dev in machine.devices:
        dev.redraw()


def note(frontend, text: str) -> None:
    """One line for the user, between the guest's output lines."""
    frontend.flush()
    start = "\n" if frontend.line_open else ""
    frontend.write(f"{start}molpy: {text}\n".encode())


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


def check(config, mconf, notes: list[str] | None = None, log: str | None = None) -> int:
    """``--check``: what a run would use, and every problem it would meet."""
    from ..molrc.errors import printable
    from .describe import describe_config
    from ..progress import bars_on_terminal

    describe_config(config, mconf, notes or [])
    bars_on_terminal()
    disk_notes: list[str] = []
    found = report_problems(mconf, disk_notes, log)
    if disk_notes:
        print("\n".join(printable(f"note: {n}") for n in disk_notes))
    if found:
        return EXIT_USAGE
    name = config.path or (config.mol_tree["etc"] if config.mol_tree else "built-in config")
    print(printable(f"{name}: ok: {mconf.ram_mib} MiB RAM, {len(mconf.blkdevs)} disk(s), "
                    f"session {mconf.session_file or 'none'}"))
    return 0


def report_problems(mconf, notes: list[str] | None = None, log: str | None = None) -> list[str]:
    """Every problem ``preflight`` finds, deep (ELF, session markers), one line each on stderr;
    disks accepted by a content check go to ``notes``."""
    from ..preflight import problems

    from ..molrc.errors import printable

    found = problems(mconf, deep=True, notes=notes, log=log)
    for problem in found:
        say(printable(f"molpy: error: {problem}"))
    return found


def refuse_problems(mconf, log: str | None = None) -> None:
    """Before a run opens anything: the first problem, as the run's one-line error."""
    from ..molrc.errors import printable
    from ..preflight import problems

    found = problems(mconf, log=log)
    if found:
        more = f" (and {len(found) - 1} more: 'molpy run --check' lists them)" if len(found) > 1 else ""
        raise CommandError(printable(found[0] + more))


def gdb_port(args: argparse.Namespace, config) -> int | None:
    """--gdb PORT, else the molrc's gdb: key; a bad port is a one-line error."""
    from ..molrc.errors import ConfigError
    from ..molrc.values import gdb_port as molrc_gdb_port

    if args.gdb is not None:
        if not args.gdb.isdigit() or int(args.gdb) > 65535:
            raise CommandError(f"--gdb {args.gdb!r} is not a TCP port (0-65535; 0 picks a free one)")
        return int(args.gdb)
    try:
        port = molrc_gdb_port(config)
    except ConfigError as e:
        raise CommandError(str(e)) from None
    if port is None and args.gdb_no_wait:
        raise CommandError("--gdb-no-wait needs --gdb PORT (or gdb: PORT in the molrc)")
    return port


def open_gdb(port: int | None):
    """The stub's listening socket, opened before anything else so a busy port fails first."""
    if port is None:
        return None
    from ..gdbstub import GdbError, GdbServer

    try:
        return GdbServer(port)
    except GdbError as e:
        raise CommandError(str(e)) from None


def main(args: argparse.Namespace) -> int:
    from ..console import open_console
    from ..hostsignals import current, deferred

    notes: list[str] = []
    config, mconf = load_machine_config(args.config, args.set, mol_lib=args.mol_lib, mol_etc=args.mol_etc,
                                        warn=notes.append if args.check else None)
    if args.check:
        return check(config, mconf, notes, args.log)
    port = gdb_port(args, config)
    refuse_problems(mconf, args.log)
    setup_logging(args.log, args.verbose)
    from ..progress import bars_on_terminal
    bars_on_terminal()
    guard = current()
    with deferred():                 # raw mode and its undoing are set up as one step
        frontend = open_console()
        atexit.register(frontend.close)
        if guard is not None:
            frontend.attach_signals(guard)
    machine = stop = stub = server = None
    try:
        server = open_gdb(port)
        machine = start_machine(mconf, frontend, args.fresh, config)   # a signal here ends the start-up
        if server is not None:
            from ..gdbstub import GdbStub

            stub = GdbStub(machine, server, wait=not args.gdb_no_wait)
            frontend.flush()
            say(f"molpy: gdb stub listening on {server.host}:{server.port}"
                + ("" if args.gdb_no_wait else "; waiting for the debugger")
                + f" (gdb-multiarch: target remote :{server.port})")
            if not args.gdb_no_wait:
                stub.wait_for_debugger()                       # a signal here ends the wait
        with deferred():                                       # from here on it ends the run loop
            stop = run_until_stop(machine, frontend, stub)
    finally:
        with deferred():
            frontend.close()
            if stub is not None:
                stub.close(machine.exit_code or 0)
            elif server is not None:
                server.close()
            if machine is not None:
                machine.close()
    if stub is not None and stub.killed:
        say("molpy: killed by the debugger")
        return 0
    return outcome(stop, machine, frontend, guard.received if guard is not None else None)


def run_until_stop(machine, frontend, stub=None):
    """Run the guest (under the debugger's stub when there is one); F12 saves (and then
    molpy stops, as MOL did)."""
    from ..machine import Stop

    runner = stub if stub is not None else machine
    while True:
        stop = runner.run()
        if stop is not Stop.SAVE:
            return stop
        if save(machine, frontend):
            return Stop.QUIT


def outcome(stop, machine, frontend, signum: int | None) -> int:
    """The exit status and the last line: the guest's code, 3 after a fault, 128+signal ..."""
    from ..hostsignals import SIGNAL_BASE, signal_name
    from ..machine import Stop

    if stop is Stop.FAULT:
        say(machine.fault.report())
    if signum is not None:
        say(f"molpy: stopped by {signal_name(signum)}"
            + (" (the session was saved first)" if machine.saved else ""))
        return SIGNAL_BASE + signum
    error = frontend.output_error
    if error is not None:
        if error.errno == errno.EPIPE:
            say("molpy: the guest's output was closed (broken pipe); stopped")
            return EXIT_BROKEN_PIPE
        say(f"molpy: cannot write the guest's output ({error.strerror}); stopped")
        return EXIT_OUTPUT
    if stop is Stop.EXIT:
        return machine.exit_code & 0xFF
    if stop is Stop.FAULT:
        return FAULT_EXIT_STATUS
    if stop is Stop.QUIT and machine.saved:
        return 0
    if stop is Stop.QUIT:
        say("molpy: input ended; quitting" if frontend.quit_on_eof and frontend.eof else "molpy: quit (Ctrl-])")
        return 0
    say("molpy: interrupted")
    return EXIT_INTERRUPT
