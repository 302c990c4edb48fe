"""``molpy fleet run``: every input of a JSON-lines file on a fleet of machines (docs/fleet.md)."""

from __future__ import annotations

import argparse
import collections
import contextlib
import os
import sys
import time

from ..cli import CommandError, say
from ..status import SIGNAL_BASE


def add_parser(sub) -> None:
    p = sub.add_parser("fleet", help="run many inputs from one read-only session, on Ray workers",
                       description="A fleet of machines resumed from one session (docs/fleet.md).")
    cmds = p.add_subparsers(dest="fleet_command", metavar="ACTION", required=True)
    r = cmds.add_parser(
        "run", help="run every input of INPUTS from an exact reset of SESSION",
        description="Each line of INPUTS is one input, {\"id\": ..., \"console\": \"text to type\", "
                    "\"seconds\": n}; it runs from an exact reset of SESSION (never written) until the "
                    "guest exits, faults, waits for more input (idle) or its time is up. RESULTS gets "
                    "one JSON line per input as it finishes; run again with the same RESULTS, the "
                    "inputs already there are skipped. Ray starts locally unless --address joins a cluster.")
    r.add_argument("session", metavar="SESSION", help="the session file (saved with F12)")
    r.add_argument("inputs", metavar="INPUTS", help="the inputs, one JSON object a line")
    r.add_argument("--out", "-o", metavar="RESULTS", required=True,
                   help="the results file (appended to; the ids already in it are skipped)")
    r.add_argument("--workers", "-n", metavar="N", type=int, default=None,
                   help="worker machines (default: one per CPU, of this machine or of the cluster)")
    r.add_argument("--address", metavar="ADDR", default=None,
                   help="join a running Ray cluster: 'auto' (this machine is a node of it) or "
                        "ray://HOST:PORT (its Ray Client server)")
    r.add_argument("--timeout", metavar="S", type=float, default=None,
                   help="seconds a guest has for an input that does not give its own \"seconds\" (default 10)")
    r.add_argument("-f", "--config", metavar="MOLRC", default=None,
                   help="the molrc the session was saved with (default: the disks the session names, "
                        "writable ones as -cow)")
    r.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from .. import fleet
    from ..fleet.inputs import FleetInputError
    from ..fleet.results import ResultsFile
    from ..hostsignals import current, deferred, signal_name

    timeout = fleet.DEFAULT_TIMEOUT if args.timeout is None else args.timeout
    try:
        inputs = fleet.read_inputs(args.inputs)
        _distinct(args.out, [(args.inputs, "INPUTS"), (args.session, "SESSION")] +
                  ([(args.config, "the molrc")] if args.config else []))
        results = ResultsFile(args.out, note=lambda text: say(f"molpy: note: {text}"))
    except FleetInputError as e:
        raise CommandError(str(e)) from None
    guard = current()
    stopped = (lambda: guard.received is not None) if guard is not None else None
    counts: collections.Counter = collections.Counter()
    total = sum(1 for i in inputs if i.key not in results.done)
    skipped = len(inputs) - total
    started = time.monotonic()
    try:
        with deferred(), _Progress(total) as progress:
            try:
                stream = fleet.run(args.session, inputs, workers=args.workers, address=args.address,
                                   timeout=timeout, molrc=args.config, skip=results.done_ids,
                                   note=progress.note, should_stop=stopped, on_start=progress.start)
                for result in stream:
                    results.append(result)
                    counts[result["stop"]] += 1
                    progress.advance()
                    if stopped is not None and stopped():
                        break
            except FleetInputError as e:
                raise CommandError(str(e)) from None
            except Exception as e:
                from ..fleet.pool import FleetError

                if isinstance(e, FleetError):
                    raise CommandError(str(e)) from None
                raise
    finally:
        results.close()
    done = sum(counts.values())
    seconds = time.monotonic() - started
    kinds = ", ".join(f"{n} {stop}" for stop, n in counts.most_common())
    summary = (f"molpy fleet: {done} of {total} input(s) run" + (f" ({kinds})" if kinds else "")
               + (f", {skipped} already in {args.out}" if skipped else "")
               + (f", {done / seconds:.1f}/s" if done and seconds > 0 else ""))
    say(summary)
    if guard is not None and guard.received is not None:
        say(f"molpy: stopped by {signal_name(guard.received)}; {total - done} input(s) left: run the same "
            f"command again to go on")
        return SIGNAL_BASE + guard.received
    return 0


def _distinct(out: str, others: list[tuple[str, str]]) -> None:
    """RESULTS must not be one of the files the fleet reads (it is appended to)."""
    from ..fleet.inputs import FleetInputError

    for path, what in others:
        try:
            same = os.path.samefile(out, path)
        except OSError:
            same = os.path.abspath(out) == os.path.abspath(path)
        if same:
            raise FleetInputError(f"RESULTS {out} is {what}; give another file to --out")


class _Progress:
    """A rich bar on stderr with the rate and the time left, when stderr is a terminal;
    notes go above it (or as plain lines when there is no bar)."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.bar = None
        self.task = None
        from ..progress import stderr_is_terminal

        self.on_terminal = stderr_is_terminal()

    def __enter__(self) -> "_Progress":
        return self

    def start(self, workers: int, total: int) -> None:
        if not self.on_terminal or not total:
            return
        from rich.console import Console
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn, TextColumn,
                                   TimeElapsedColumn, TimeRemainingColumn)

        self.bar = Progress(TextColumn(f"fleet, {workers} worker{'s' if workers != 1 else ''}"), BarColumn(),
                            MofNCompleteColumn(), TaskProgressColumn(),
                            TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("eta"),
                            TimeRemainingColumn(), console=Console(file=sys.stderr), transient=True)
        self.task = self.bar.add_task("fleet", total=total, rate="")
        self.started = time.monotonic()
        self.bar.start()

    def advance(self) -> None:
        if self.bar is None:
            return
        task = self.bar.tasks[0]
        done = task.completed + 1
        elapsed = time.monotonic() - self.started
        self.bar.update(self.task, completed=done, rate=f"{done / elapsed:.1f} inputs/s" if elapsed > 0 else "")

    def note(self, text: str) -> None:
        if self.bar is not None:
            with contextlib.suppress(OSError, ValueError):
                self.bar.console.print(f"molpy: {text}", markup=False, highlight=False)
        else:
            say(f"molpy: {text}")

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            with contextlib.suppress(OSError, ValueError):
                self.bar.stop()
            self.bar = None
