"""``molpy server``: start, stop and show the warm server ``molpy run`` uses (molpy.warm)."""

from __future__ import annotations

import argparse
import os
import select
import time

from ..cli import CommandError, say

NOT_RUNNING = 1     # `server status`: no server of this molpy answers
STOP_WAIT = 10.0    # seconds `server stop` waits for an idle server to end


def add_parser(sub) -> None:
    p = sub.add_parser(
        "server", help="keep molpy loaded so that 'molpy run' starts (and resumes) at once",
        description="A warm server loads Python, Unicorn and molpy once and waits in molpy's data "
                    "folder (server/). While it runs, every 'molpy run' of this molpy is handed to it: "
                    "the run works on your terminal as before, with its exit status and signals, but "
                    "skips the start-up. When molpy, Python or MOLPY_* settings change, runs go back to "
                    "starting on their own until the server is restarted. MOLPY_SERVER=off bypasses it.")
    cmds = p.add_subparsers(dest="server_command", metavar="ACTION", required=True)
    s = cmds.add_parser("start", help="start the server in the background (it keeps running until stopped)",
                        description="Start the warm server and wait until it listens.")
    s.set_defaults(func=start)
    t = cmds.add_parser("stop", help="stop the server (runs under way finish first)",
                        description="Stop taking runs; the server ends once the runs it serves have ended.")
    t.set_defaults(func=stop)
    i = cmds.add_parser("status", help="whether a server runs, and whether it serves this molpy",
                        description="Show the server's process, age and runs; exit status 1 when none runs.")
    i.set_defaults(func=status)


def _folder() -> str:
    """The server's folder, made 0700; one that others may write into is refused (they could
    put their own socket where ``molpy run`` connects)."""
    from ..files import data_dir, own_folder
    from ..warm import FOLDER_NAME, open_folder

    folder = own_folder(data_dir(), FOLDER_NAME, what="molpy's server folder")
    fd = open_folder(folder)
    if fd is None:
        mode = os.stat(folder).st_mode & 0o777
        raise CommandError(f"{folder}: molpy's server folder is open to other users (mode {mode:04o}); "
                           f"molpy serves only from a folder closed to them: chmod 700 {folder}")
    os.close(fd)
    return folder


def _ask(op: str) -> dict | None:
    from ..warm import receive, send
    from ..warm.client import connect

    sock = connect()
    if sock is None:
        return None
    try:
        send(sock, {"op": op})
        reply, _ = receive(sock)
    except (OSError, ValueError):
        return None
    finally:
        sock.close()
    return reply


def start(args: argparse.Namespace) -> int:
    from ..warm import LOG_NAME
    from ..warm.server import daemonize

    folder = _folder()
    running = _ask("status")
    if running:
        say(f"molpy: a server is already running (pid {running.get('pid')}); 'molpy server stop' ends it")
        return 0
    log = os.path.join(folder, LOG_NAME)
    read_end, write_end = os.pipe()
    t = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        try:
            daemonize(folder, log, write_end)
        finally:
            os._exit(1)
    os.close(write_end)
    os.waitpid(pid, 0)                 # the first child: it forks the server and returns
    with os.fdopen(read_end, "rb") as ready:
        line = ready.readline().decode(errors="replace").strip()
    if line != "ok":
        raise CommandError(f"the server did not start: {line or 'it ended at once'} (log: {log})")
    info = _ask("status") or {}
    say(f"molpy: server running (pid {info.get('pid', '?')}, ready in {time.perf_counter() - t:.2f} s); "
        f"'molpy run' now starts warm; 'molpy server stop' ends it")
    return 0


def stop(args: argparse.Namespace) -> int:
    from ..warm import LOG_NAME, folder_path

    reply = _ask("stop")
    if reply is None:
        say("molpy: no server is running")
        return 0
    pid, runs = reply.get("pid"), reply.get("running") or []
    if runs:
        say(f"molpy: the server (pid {pid}) takes no more runs; it ends when its {len(runs)} "
            f"run(s) do ({_runs(reply)})")
        return 0
    try:
        pidfd = os.pidfd_open(pid)
    except (OSError, TypeError):
        pidfd = None                    # already gone
    if pidfd is not None:
        try:
            ended = bool(select.select([pidfd], [], [], STOP_WAIT)[0])
        finally:
            os.close(pidfd)
        if not ended:
            say(f"molpy: the server (pid {pid}) takes no more runs but has not ended within {STOP_WAIT:.0f} s "
                f"(its log: {os.path.join(folder_path(), LOG_NAME)})")
            return 1
    say(f"molpy: server stopped (pid {pid})")
    return 0


def _runs(reply: dict) -> str:
    """"pid W for pid C, ...": each run's worker and the `molpy run` it serves."""
    return ", ".join(f"pid {run[0]} for pid {run[1]}" for run in reply.get("running") or []
                     if isinstance(run, list) and len(run) == 2)


def status(args: argparse.Namespace) -> int:
    from ..warm import code_key, folder_path, same_molpy

    reply = _ask("status")
    if reply is None:
        print(f"no server running ({folder_path()})")
        return NOT_RUNNING
    age = time.time() - float(reply.get("started", time.time()))
    key, chosen = reply.get("key"), reply.get("engine")
    fresh = isinstance(key, str) and same_molpy(key, code_key(), chosen if isinstance(chosen, str) else None)
    runs = reply.get("running") or []
    print(f"server: pid {reply.get('pid')}, up {age:.0f} s, {reply.get('served')} run(s) served, "
          f"{len(runs)} running" + (f" ({_runs(reply)})" if runs else ""))
    print("serves this molpy: yes" if fresh else
          "serves this molpy: no (molpy, Python or MOLPY_* settings changed since it started: "
          "runs start on their own; 'molpy server stop' and 'molpy server start' renew it)")
    return 0
