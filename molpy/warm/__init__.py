"""molpy's warm server: ``molpy run`` without paying for Python and molpy's start-up.

A resume is about a millisecond of work once molpy is loaded; a fresh ``molpy`` process
spends a hundred times that starting Python, loading Unicorn and importing molpy. The
server (``molpy server start``) pays that once: it loads everything and waits on a Unix
socket in molpy's data folder. ``molpy run`` (molpy.warm.client) hands it its argv, cwd,
environment, umask and its three standard descriptors; the server forks a worker that
becomes that command (the terminal is the client's own descriptor) and reports its exit
status back. The client forwards the signals it gets to the worker; if the client dies,
the worker gets SIGHUP, as from a hung-up terminal.

A server whose molpy, Python or import-time environment differs from the client's is
*stale*: the client then runs the command itself, as if no server were there.

This module is what client and server share; at its top it imports only what Python has
loaded at start-up, struct, and the C halves of json and socket (the client must stay cheap).
"""

from __future__ import annotations

import _json                 # json's C half: json itself loads re and enum, which the client has no use for
import _socket as socket     # the C module: socket.py's enums and selectors cost the client time
import os
import stat
import struct
import sys

SOCKET_NAME = "server.sock"
LOCK_NAME = "server.lock"
LOG_NAME = "server.log"
FOLDER_NAME = "server"
MAX_MESSAGE = 1 << 20            # a request (argv + environment) is at most this long
# The environment that is fixed when molpy is imported; a client whose values differ is
# not served by this server (its molpy would not be the one the client would load).
IMPORT_TIME_ENV_PREFIXES = ("MOLPY_", "PYTHON", "LC_")
IMPORT_TIME_ENV = ("LIBUNICORN_PATH", "XDG_CACHE_HOME", "LANG")


def folder_path() -> str:
    """The server's folder, inside molpy's data folder as molpy.files.data_dir finds it (not
    created here; that module loads ctypes, which the client has no time for)."""
    home = os.environ.get("MOLPY_HOME")
    if not home:
        xdg = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
        home = os.path.join(xdg, "molpy")
    return os.path.join(os.path.abspath(home), FOLDER_NAME)


def open_folder(path: str) -> int | None:
    """A descriptor of the server's folder if it is a real folder of this user's, closed to
    others (0700); None otherwise, so that nothing planted there is ever connected to."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    st = os.fstat(fd)
    if st.st_uid != os.getuid() or stat.S_IMODE(st.st_mode) & 0o077:
        os.close(fd)
        return None
    return fd


def at(folder_fd: int, name: str) -> str:
    """A short path to ``name`` in the opened folder (a socket's path has at most 107 bytes,
    and the folder opened without following links stays the one checked)."""
    return f"/proc/self/fd/{folder_fd}/{name}"


def _package_roots() -> list[str]:
    import molpy

    roots = [os.path.dirname(os.path.abspath(molpy.__file__))]
    for name in ("drivers", "emulation"):
        module = sys.modules.get(f"molpy.{name}")
        path = getattr(module, "__file__", None) if module else None
        if path:
            roots.append(os.path.dirname(path))
        else:
            beside = os.path.join(os.path.dirname(roots[0]), name)
            if os.path.isdir(beside):
                roots.append(beside)
    return roots


def code_key(env: dict[str, str] | None = None) -> str:
    """What makes two processes load the same molpy: the interpreter, molpy's files (their
    paths, sizes and times) and the environment read at import time. Compared whole (a few
    kilobytes), so that the client needs no hash library."""
    env = os.environ if env is None else env
    engine = sys.modules.get("molpy.engine")
    ours = getattr(engine, "chosen", None)     # set by molpy as it loaded unicorn: not an input
    parts = [sys.executable, sys.version]
    for root in _package_roots():
        for folder, dirs, files in os.walk(root):
            dirs[:] = sorted(d for d in dirs if d != "__pycache__")
            for name in sorted(files):
                if name.endswith((".py", ".so", ".patch")):
                    path = os.path.join(folder, name)
                    try:
                        st = os.stat(path)
                    except OSError:
                        continue
                    parts.append(f"{path}:{st.st_size}:{st.st_mtime_ns}")
    for name in sorted(env):
        if (name.startswith(IMPORT_TIME_ENV_PREFIXES) or name in IMPORT_TIME_ENV) \
                and name != "PYTHONDONTWRITEBYTECODE" \
                and not (name == "LIBUNICORN_PATH" and ours is not None and env[name] == ours):
            parts.append(f"{name}={env[name]}")
    return "\n".join(parts)


def same_molpy(server: str, client: str, chosen: str | None) -> bool:
    """Whether a client with key ``client`` would load the molpy a server with key ``server``
    loaded; a LIBUNICORN_PATH naming the engine the server chose itself (``chosen``) is the
    same choice."""
    theirs = set(client.split("\n"))
    if chosen is not None:
        theirs.discard(f"LIBUNICORN_PATH={chosen}")
    return theirs == set(server.split("\n"))


class _Strict:
    """What the C scanner reads from a json.JSONDecoder: plain JSON, no hooks."""
    strict = True
    object_hook = object_pairs_hook = None
    parse_float = float
    parse_int = int

    @staticmethod
    def parse_constant(name: str):
        raise ValueError(f"{name} is not JSON")


def _not_json(value):
    raise TypeError(f"{type(value).__name__} is not sent")


_scan = _json.make_scanner(_Strict())
_encode = _json.make_encoder(None, _not_json, _json.encode_basestring_ascii, None, ":", ",", False, False, False)


def encode(message: dict) -> bytes:
    return "".join(_encode(message, 0)).encode("ascii")


def decode(data: bytes) -> dict:
    """One JSON object, the whole of ``data``; ValueError for anything else."""
    text = data.decode("ascii", "strict")
    try:
        value, end = _scan(text, 0)
    except StopIteration as e:
        raise ValueError(f"not JSON at {e.value}") from None
    except RecursionError:
        raise ValueError("nested too deep") from None
    if end != len(text) or not isinstance(value, dict):
        raise ValueError("not one JSON object")
    return value


def send(sock, message: dict, fds: list[int] = ()) -> None:
    data = encode(message)
    if fds:
        sock.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack(f"{len(fds)}i", *fds))])
    else:
        sock.send(data)


def receive(sock, max_fds: int = 0) -> tuple[dict | None, list[int]]:
    """One message (None at the end of the stream) and the descriptors that came with it.
    Anything that is not a JSON object is refused with ValueError (its descriptors closed)."""
    data, ancillary, flags, _ = sock.recvmsg(MAX_MESSAGE, socket.CMSG_SPACE(max(max_fds, 1) * 4))
    received: list[int] = []
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            received += struct.unpack(f"{len(payload) // 4}i", payload[:len(payload) - len(payload) % 4])
    if not data and not received:
        return None, []
    try:
        if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC) or len(received) > max_fds:
            raise ValueError("the message is too long or carries too many descriptors")
        message = decode(data)
    except ValueError:
        for fd in received:
            os.close(fd)
        raise
    return message, received
