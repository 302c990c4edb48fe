"""The warm server's process (molpy.warm): load molpy once, then fork a worker per
``molpy run`` a client hands over, and tell the client how the worker ended."""

from __future__ import annotations

import atexit
import gc
import importlib
import io
import os
import pkgutil
import selectors
import signal
import socket
import struct
import sys
import threading
import time
import traceback

from . import LOCK_NAME, SOCKET_NAME, at, code_key, open_folder, receive, same_molpy, send
from ..errors import HostError
from ..files import FileLocked, lock

# Not loaded ahead: Ray (molpy.fleet) is large and no ``molpy run`` needs it; importing
# molpy.__main__ would run the CLI.
NOT_PRELOADED = ("molpy.fleet", "molpy.__main__")

CHECK_EVERY = 30.0     # seconds between checks that the socket is still the server's
MAX_SPARES_LOST = 3    # spares dying before any run: stop making them (runs then start on their own)


class ServerError(HostError):
    """The server cannot start (one line, for ``molpy server start``)."""


def preload() -> None:
    """Import every module a ``molpy run`` may need and warm the engine once."""
    import molpy
    from .. import drivers, emulation

    for package in (molpy, drivers, emulation):
        for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            if not info.name.startswith(NOT_PRELOADED):
                importlib.import_module(info.name)
    from ..cpu import Cpu
    from ..cpuenv import CpuEnv

    CpuEnv(Cpu()).close()          # the binding's first use and the register layout's probe, done here


class Server:
    """Listening on the socket in ``folder``; ``serve()`` until stopped. One worker is
    always forked ahead (the spare), waiting for a request, so that a run pays for no fork."""

    def __init__(self, folder: str) -> None:
        self.folder_fd = open_folder(folder)
        if self.folder_fd is None:
            raise ServerError(f"{folder}: not a folder of this user's closed to others (0700)")
        self.key = code_key()
        self.started = time.time()
        self.served = 0
        self.stopping = False
        self.workers: dict[int, tuple[int, socket.socket | None, int]] = {}  # pidfd -> (pid, client's connection, client's pid)
        self.spare: tuple[int, int, socket.socket] | None = None          # (pidfd, pid, control)
        self._spares_lost = 0                  # spares that died waiting, in a row
        self._lock_fd = os.open(at(self.folder_fd, LOCK_NAME),
                                os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            lock(self._lock_fd, exclusive=True)
        except FileLocked:
            os.close(self._lock_fd)
            raise ServerError("another molpy server is starting or running") from None
        path = at(self.folder_fd, SOCKET_NAME)
        try:
            os.unlink(path)                  # a dead server's socket (the lock says none is alive)
        except FileNotFoundError:
            pass
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        self.listener.bind(path)
        self.listener.listen(64)
        self._socket_id = _identity(path)
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.listener, selectors.EVENT_READ)

    def serve(self) -> None:
        # SIGTERM and SIGINT stop the server as `molpy server stop` does; the loop hears of
        # them through the wake-up socket (a handler alone would leave select() waiting).
        self._woken, self._wake = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        self._woken.setblocking(False)
        self._wake.setblocking(False)
        signal.set_wakeup_fd(self._wake.fileno(), warn_on_full_buffer=False)
        self.selector.register(self._woken, selectors.EVENT_READ)
        self._stop_asked = False
        signal.signal(signal.SIGTERM, self._asked_to_stop)
        signal.signal(signal.SIGINT, self._asked_to_stop)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        gc.freeze()                          # the workers share the loaded molpy's pages
        self._fork_spare()
        while not (self.stopping and not self.workers):
            ready = self.selector.select(CHECK_EVERY)
            if not ready and not self.stopping and _identity(at(self.folder_fd, SOCKET_NAME)) != self._socket_id:
                self.stop()                  # the socket was removed or replaced: nobody can reach us
            for key, _ in ready:
                try:
                    if key.fileobj is self._woken:
                        self._woken.recv(4096)     # the signals' numbers: the flag says what to do
                    elif key.fileobj is self.listener:
                        self._accept()
                    else:
                        self._reap(key.fileobj)
                except Exception:              # noqa: BLE001 (a bug here must not end the runs under way)
                    traceback.print_exc()
            if self._stop_asked:
                self.stop()
            if self.spare is None and not self.stopping and self._spares_lost < MAX_SPARES_LOST:
                self._fork_spare()
        self.selector.close()

    def _asked_to_stop(self, signum, frame) -> None:
        self._stop_asked = True

    def stop(self) -> None:
        """Take no more runs; the server ends when the runs under way have."""
        if self.stopping:
            return
        self.stopping = True
        self.selector.unregister(self.listener)
        path = at(self.folder_fd, SOCKET_NAME)
        if _identity(path) == self._socket_id:      # not a newer server's socket at the name
            try:
                os.unlink(path)
            except OSError:
                pass
        self.listener.close()
        if self.spare is not None:
            self.spare[2].close()            # the spare sees the end and exits
            self.spare = None

    def serves(self, key) -> bool:
        from .. import engine

        return isinstance(key, str) and same_molpy(self.key, key, engine.chosen)

    # -- requests --

    def _accept(self) -> None:
        try:
            conn, _ = self.listener.accept()
        except OSError:
            return
        try:
            pid, uid, gid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
            if uid != os.getuid():
                raise ValueError("another user")
            conn.settimeout(5)                # a client that connects and says nothing
            message, fds = receive(conn, max_fds=3)
            conn.settimeout(None)
        except (OSError, ValueError):
            conn.close()
            return
        if message is None:
            conn.close()
            return
        try:
            self._request(conn, message, fds, pid)
        finally:
            for fd in fds:
                os.close(fd)

    def _request(self, conn: socket.socket, message: dict, fds: list[int], client: int) -> None:
        op = message.get("op")
        try:
            if op == "status":
                from .. import engine

                send(conn, {"pid": os.getpid(), "key": self.key, "engine": engine.chosen,
                            "started": self.started, "served": self.served,
                            "running": self._running()})
            elif op == "stop":
                send(conn, {"pid": os.getpid(), "running": self._running()})
                self.stop()
            elif op == "run":
                request = _valid_run(message, fds)
                if request is None or not self.serves(message.get("key")) or self.stopping:
                    send(conn, {"refused": "stale" if request is not None else "bad request"})
                elif self._hand_over(conn, request, fds, client):
                    return                    # the connection is the worker's to report on
        except OSError:
            pass
        conn.close()

    def _running(self) -> list[list[int]]:
        """[worker's pid, its client's pid] of each run under way (not the spare)."""
        return sorted([pid, client] for pid, conn, client in self.workers.values() if conn is not None)

    def _hand_over(self, conn: socket.socket, request: dict, fds: list[int], client: int) -> bool:
        """Give the run to the spare worker; False if it is gone (the client runs it itself)."""
        if self.spare is None:
            return False
        pidfd, pid, control = self.spare
        self.spare = None
        try:
            send(control, request, [conn.fileno(), *fds])
        except OSError:
            return False
        finally:
            control.close()
        self.served += 1
        self._spares_lost = 0
        self.workers[pidfd] = (pid, conn, client)
        send(conn, {"started": pid})
        return True

    def _fork_spare(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        server = os.getpid()
        pid = os.fork()
        if pid == 0:
            try:
                ours.close()
                self._wake.close()
                self._woken.close()
                self.selector.close()
                self.listener.close()
                os.close(self._lock_fd)           # the lock is the server's alone
                os.close(self.folder_fd)
                for pidfd, (_, other, _) in self.workers.items():
                    os.close(pidfd)
                    if other is not None:
                        other.close()
                spare_worker(theirs, server)
            finally:
                os._exit(70)
        theirs.close()
        pidfd = os.pidfd_open(pid)
        self.workers[pidfd] = (pid, None, 0)
        self.selector.register(pidfd, selectors.EVENT_READ)
        self.spare = (pidfd, pid, ours)

    def _reap(self, pidfd: int) -> None:
        pid, conn, _ = self.workers.pop(pidfd)
        self.selector.unregister(pidfd)
        os.close(pidfd)
        _, status = os.waitpid(pid, 0)
        if self.spare is not None and self.spare[0] == pidfd:     # died waiting: make another
            self.spare[2].close()
            self.spare = None
            self._spares_lost += 1
            print(f"molpy server: the spare worker {pid} ended ({status:#x}) before a run", file=sys.stderr, flush=True)
        if conn is None:
            return
        code = os.waitstatus_to_exitcode(status)
        try:
            send(conn, {"exit": code if code >= 0 else 128 - code})
        except OSError:
            pass
        conn.close()


def _identity(path: str) -> tuple[int, int] | None:
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _valid_run(message: dict, fds: list[int]) -> dict | None:
    """The run request's fields, or None when one is not what a client sends."""
    argv, cwd, env, umask = (message.get(k) for k in ("argv", "cwd", "env", "umask"))
    if (len(fds) != 3 or not isinstance(argv, list) or argv[:1] != ["run"]
            or not all(isinstance(a, str) and "\0" not in a for a in argv)
            or not isinstance(cwd, str) or not cwd.startswith("/") or "\0" in cwd
            or not isinstance(env, dict) or not all(_env_entry(k, v) for k, v in env.items())
            or not isinstance(umask, int) or isinstance(umask, bool) or not 0 <= umask <= 0o777):
        return None
    return {"argv": argv, "cwd": cwd, "env": env, "umask": umask}


def _env_entry(name, value) -> bool:
    return (isinstance(name, str) and isinstance(value, str) and name != "" and "=" not in name
            and "\0" not in name and "\0" not in value)


def spare_worker(control: socket.socket, server: int) -> None:
    """In a forked spare: wait for the server to hand over a run, then become it."""
    _python_signals()
    os.setpgid(0, 0)
    _hang_up_with_the_server(server)
    try:
        rehearse()
    except Exception:                          # noqa: BLE001 (only a head start: the run says what is wrong)
        pass
    try:
        request, fds = receive(control, max_fds=4)
    except (OSError, ValueError):
        os._exit(0)
    if request is None or len(fds) != 4:
        os._exit(0)                          # the server stopped
    control.close()
    conn = socket.socket(fileno=fds[0])
    run_worker(conn, request, fds[1:])


def _hang_up_with_the_server(server: int) -> None:
    """SIGHUP when the server dies (killed): the run stops as on a hung-up terminal instead
    of going on with nobody to report its status."""
    import ctypes

    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGHUP), 0, 0, 0)
    if os.getppid() != server:                # it died before that took effect
        os._exit(0)


def rehearse() -> None:
    """What every run does first, done while no run waits: the run command's parser, and a
    machine (no disks, no files) made and closed: this process's first one costs twice a
    later one, its memory being copied from the server's as it is first written."""
    from ..cli import build_parser
    from ..console import BufferConsole
    from ..machine import Machine, MachineConfig

    build_parser("run")
    Machine(MachineConfig(ram_mib=16, blkdevs=[]), BufferConsole()).close()


def run_worker(conn: socket.socket, request: dict, fds: list[int]) -> None:
    """Become the client's ``molpy run`` on its descriptors and exit with its status."""
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        if fd > 2:
            os.close(fd)
    try:
        os.chdir(request["cwd"])
    except OSError as e:
        os.write(2, f"molpy: error: cannot enter the folder {request['cwd']}: {e.strerror}\n".encode())
        os._exit(2)
    os.umask(request["umask"])
    chosen = os.environ.get("LIBUNICORN_PATH")
    os.environ.clear()
    os.environ.update(request["env"])
    if chosen is not None:                  # the engine loaded here (molpy.engine.select)
        os.environ.setdefault("LIBUNICORN_PATH", chosen)
    sys.argv = ["molpy", *request["argv"]]
    _standard_streams()
    threading.Thread(target=_hang_up_with, args=(conn,), daemon=True).start()
    from ..cli import main

    status = main(request["argv"], process=True) & 0xFF
    try:
        atexit._run_exitfuncs()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        try:
            send(conn, {"exit": status})     # said by the server too, unless it is gone
        except OSError:
            pass
        os._exit(status)


def _python_signals() -> None:
    """Signals as a new Python process has them; the handlers molpy's C fault net set
    (molpy.crashnet, not Python's) stay, and so does its record of them."""
    signal.set_wakeup_fd(-1)
    for signum in signal.valid_signals():
        if signum not in (signal.SIGKILL, signal.SIGSTOP) and signal.getsignal(signum) not in (None, signal.SIG_DFL):
            signal.signal(signum, signal.SIG_DFL)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)     # a failed write says EPIPE instead
    signal.signal(signal.SIGINT, signal.default_int_handler)


def _standard_streams() -> None:
    """sys.stdin/stdout/stderr on the client's descriptors, buffered as Python buffers them."""
    encoding = sys.stdout.encoding if sys.stdout else "utf-8"

    def stream(fd: int, mode: str, errors: str):
        raw = io.FileIO(fd, mode, closefd=False)
        interactive = os.isatty(fd)
        buffer = io.BufferedReader(raw) if mode == "r" else io.BufferedWriter(raw)
        return io.TextIOWrapper(buffer, encoding=encoding, errors=errors,
                                line_buffering=interactive or fd == 2, write_through=fd == 2)

    sys.stdin = sys.__stdin__ = stream(0, "r", "strict")
    sys.stdout = sys.__stdout__ = stream(1, "w", "strict")
    sys.stderr = sys.__stderr__ = stream(2, "w", "backslashreplace")


def _hang_up_with(conn: socket.socket) -> None:
    """The client went away (killed, its terminal closed): SIGHUP, as a terminal would send."""
    while True:
        try:
            data = conn.recv(64)
        except InterruptedError:
            continue
        except OSError:
            data = b""
        if not data:
            os.kill(os.getpid(), signal.SIGHUP)
            return


def daemonize(folder: str, log_path: str, ready_fd: int) -> None:
    """In the child of ``molpy server start``: detach, load molpy, listen, and tell the
    parent through ``ready_fd`` (one line: "ok" or the reason it cannot serve)."""
    _python_signals()
    os.setsid()
    if os.fork():
        os._exit(0)
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    log = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(null)
    os.close(log)
    os.chdir("/")
    try:
        preload()
        server = Server(folder)
    except Exception as e:                     # noqa: BLE001 (said to the starting command)
        os.write(ready_fd, f"{e}\n".encode())
        os._exit(1)
    os.write(ready_fd, b"ok\n")
    os.close(ready_fd)
    try:
        server.serve()
    finally:
        os._exit(0)
