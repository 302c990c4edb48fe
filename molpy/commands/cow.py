"""``molpy cow``: what a -cow overlay holds, and committing or discarding it."""

from __future__ import annotations

import argparse
import contextlib
import os

from ..cli import CommandError


def add_parser(sub) -> None:
    p = sub.add_parser("cow", help="inspect, commit or discard a -cow overlay",
                       description="A -cow disk's writes go to an overlay file in cow_dir "
                                   "(NAME-HASH.cow; the previous run's is NAME-HASH.cow.prev). "
                                   "These commands work on such a file.")
    cmds = p.add_subparsers(dest="cow_command", metavar="ACTION", required=True)
    i = cmds.add_parser("info", help="what an overlay holds and whether its disk still matches")
    i.add_argument("overlay")
    i.set_defaults(func=info)
    c = cmds.add_parser("commit", help="write an overlay's changes into its disk",
                        description="Write the overlay's sectors into the disk it belongs to, fsync "
                                    "the disk, then mark the overlay empty. Safe to interrupt: run it "
                                    "again and it finishes. Sessions saved against the disk will no "
                                    "longer resume afterwards (an empty overlay writes nothing, "
                                    "and they still do).")
    c.add_argument("overlay")
    c.add_argument("--force", action="store_true",
                   help="commit even though the disk changed since the overlay was made")
    c.set_defaults(func=commit)
    d = cmds.add_parser("discard", help="drop an overlay's changes (removes the file)")
    d.add_argument("overlay")
    d.set_defaults(func=discard)


def _overlay(path: str) -> str:
    """The overlay argument, refused in one line when it is a directory, a FIFO ..."""
    from ..preflight import not_a_regular_file

    problem = not_a_regular_file(path, "-cow overlay")
    if problem:
        raise CommandError(problem)
    return path


class _FinishFirst:
    """A signal during a commit: the commit ends first, then molpy exits with 128+signal."""

    def __init__(self) -> None:
        self.told = False

    def on_signal(self, signum: int) -> None:
        if not self.told:
            from ..hostsignals import signal_name
            self.told = True
            line = (f"molpy: {signal_name(signum)}: the commit finishes first (if you kill it, "
                    f"'molpy cow commit' again finishes it)\n")
            try:   # straight to the descriptor: the handler may run inside another stderr write
                os.write(2, line.encode())
            except OSError:
                pass


@contextlib.contextmanager
def _finish_first():
    from ..hostsignals import current

    guard = current()
    if guard is None:
        yield
        return
    listener = _FinishFirst()
    guard.add_listener(listener)
    try:
        with guard.deferred():
            yield
    finally:
        guard.remove_listener(listener)


def _mib(sectors: int) -> str:
    return f"{sectors * 512 / (1 << 20):.1f} MiB"


def info(args: argparse.Namespace) -> int:
    from ..drivers.block import BlockError
    from ..drivers.commit import layer_info

    try:
        i = layer_info(_overlay(args.overlay))
    except BlockError as e:
        raise CommandError(str(e)) from None
    print(f"overlay:  {i.path}")
    if i.in_use:
        print(f"in use:   {i.in_use.line()}")
    print(f"disk:     {i.base.path} ({i.base.size} bytes)")
    print(f"holds:    {i.sectors} sectors ({_mib(i.sectors)}); {i.file_bytes / (1 << 20):.1f} MiB on the host")
    if i.committing:
        print(f"state:    a commit was interrupted at sector {i.progress}; run 'molpy cow commit' again")
    print("disk matches: yes" if i.base_matches else f"disk matches: NO - {i.base_problem}")
    return 0


def commit(args: argparse.Namespace) -> int:
    import sys

    from ..drivers.block import SECTOR, BlockError
    from ..drivers.commit import commit as do_commit
    from ..progress import bar_if_terminal

    path = _overlay(args.overlay)
    try:
        with _finish_first(), bar_if_terminal(f"commit {os.path.basename(path)}") as bar:
            progress = (lambda done, total: bar(done * SECTOR, total * SECTOR)) if bar else None
            result = do_commit(path, force=args.force, progress=progress)
    except BlockError as e:
        raise CommandError(str(e)) from None
    except OSError as e:
        raise CommandError(f"commit of {args.overlay} failed: {e.strerror or e}; nothing is lost: "
                           f"fix the cause and run the commit again") from None
    if not result.wrote:
        print(f"nothing to commit: {args.overlay} holds no changes; {result.base} was not written")
        return 0
    how = "finished an interrupted commit: " if result.resumed else ""
    print(f"{how}committed {result.sectors} sectors ({_mib(result.sectors)}) into {result.base}; "
          f"the overlay is now empty")
    print(f"note: sessions saved against {result.base} will no longer resume (the disk changed)",
          file=sys.stderr)
    return 0


def discard(args: argparse.Namespace) -> int:
    from ..drivers.block import BlockError
    from ..drivers.commit import discard as do_discard

    try:
        held, base = do_discard(_overlay(args.overlay))
    except BlockError as e:
        raise CommandError(str(e)) from None
    print(f"discarded {held} sectors ({_mib(held)}) of changes to {base}; removed {args.overlay}")
    return 0
