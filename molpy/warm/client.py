"""The ``molpy`` command's entry point: ``molpy run`` goes to the warm server when one of
this molpy is running (molpy.warm), everything else (and every run when none is) runs in
this process as before. MOLPY_SERVER=off never uses the server."""

from __future__ import annotations

import _signal as signal     # not `signal`: its enums cost more than the rest of the client
import os
import sys

from ..signalset import JOB_CONTROL, TERMINATING
from ..status import BUG
from . import socket, SOCKET_NAME, at, code_key, folder_path, open_folder, receive, send

# What the client passes on to its worker: every signal that would end or stop molpy
# (SIGKILL and SIGSTOP cannot be caught; the worker sees the client's death as SIGHUP).
FORWARDED = TERMINATING + JOB_CONTROL


def main() -> int:
    argv = sys.argv[1:]
    if argv[:1] == ["run"] and os.environ.get("MOLPY_SERVER", "").lower() not in ("off", "0", "no"):
        status = run_warm(argv)
        if status is not None:
            return status
    from ..cli import main as cli_main

    return cli_main()


def connect():
    """A connection to this user's server, or None when there is none to trust."""
    folder = open_folder(folder_path())
    if folder is None:
        return None
    try:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    except OSError:
        os.close(folder)
        return None
    try:
        sock.connect(at(folder, SOCKET_NAME))
    except OSError:
        sock.close()
        return None
    finally:
        os.close(folder)
    return sock


def run_warm(argv: list[str]) -> int | None:
    """The command's exit status, run by the server; None when no server takes it."""
    if _in_background():
        return None                       # run here: reading the terminal stops it, as it should
    sock = connect()
    if sock is None:
        return None
    try:
        try:
            send(sock, {"op": "run", "key": code_key(), "argv": argv, "cwd": os.getcwd(),
                        "env": dict(os.environ), "umask": _umask()}, [0, 1, 2])
            reply, _ = receive(sock)
        except (OSError, ValueError):
            return None
        if not reply or not isinstance(reply.get("started"), int):
            return None                   # stale, refused, or gone: run it here
        return _follow(sock, reply["started"])
    finally:
        sock.close()


def _follow(sock, pid: int) -> int:
    """Pass signals on to the worker until the server reports its status."""
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:
        pidfd = None

    def forward(signum: int, frame) -> None:
        if signum == signal.SIGCONT and _in_background():
            # `bg`: the worker would read the terminal behind the shell's back; stop as a
            # background read of it stops a process, until `fg`
            os.kill(os.getpid(), signal.SIGTTIN)
            return
        if pidfd is not None:
            try:
                signal.pidfd_send_signal(pidfd, signum)
            except OSError:
                pass
        if signum == signal.SIGTSTP:          # stop with it, so the shell sees the job stopped,
            _wait_stopped(pid)                # once the worker has given the terminal back
            signal.signal(signal.SIGTSTP, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTSTP)
            signal.signal(signal.SIGTSTP, forward)

    for signum in FORWARDED:
        signal.signal(signum, forward)
    try:
        while True:
            try:
                message, _ = receive(sock)
            except ValueError:
                continue
            except OSError:
                message = None
            if message is None:
                sys.stderr.write("molpy: error: the warm server ended during the run "
                                 "(its log: molpy's data folder, server/server.log)\n")
                return BUG                # the server ended before it reported the status
            if isinstance(message.get("exit"), int):
                return message["exit"]
    finally:
        if pidfd is not None:
            os.close(pidfd)


def _in_background() -> bool:
    """The terminal on stdin belongs to another process group of this session (`molpy run &`)."""
    try:
        return os.isatty(0) and os.tcgetpgrp(0) != os.getpgrp()
    except OSError:
        return False


def _wait_stopped(pid: int, seconds: float = 5.0) -> None:
    """Until ``pid`` is stopped or gone (it restores the terminal first), at most ``seconds``."""
    import time

    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                state = f.read().rpartition(b") ")[2][:1]
        except OSError:
            return
        if state in (b"T", b"t", b"Z", b"X"):
            return
        time.sleep(0.001)


def _umask() -> int:
    mask = os.umask(0o22)
    os.umask(mask)
    return mask


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
