"""The TCP side: one listening socket on 127.0.0.1, at most one debugger at a time.

While a debugger is attached the listening socket is closed, so a second ``target
remote`` is refused by the kernel; it is opened again when the debugger leaves. Each
connection has a reader thread that owns all reading: packets go to a queue the stub
takes them from between slices, and a Ctrl-C (0x03) calls ``on_interrupt`` at once, so
a running guest stops within microseconds (Machine.request_debug_stop).
"""

from __future__ import annotations

import queue
import socket
import threading

from ..errors import HostError
from .packets import PacketReader, frame

HOST = "127.0.0.1"


class GdbError(HostError):
    """The stub cannot listen (port in use, bad port): a one-line message."""


class Connection:
    def __init__(self, sock: socket.socket, on_interrupt, on_closed) -> None:
        self.sock = sock
        self.events: queue.Queue = queue.Queue()
        self.noack = False
        self.closed = False
        self._send_lock = threading.Lock()
        self._on_interrupt = on_interrupt
        self._on_closed = on_closed
        self._reader = threading.Thread(target=self._read_loop, name="molpy-gdb-reader", daemon=True)
        self._reader.start()

    def _read_loop(self) -> None:
        reader = PacketReader()
        try:
            while True:
                data = self.sock.recv(65536)
                if not data:
                    break
                for kind, payload in reader.feed(data):
                    if kind == "packet":
                        if not self.noack:
                            self._raw_send(b"+")
                        self.events.put(("packet", payload))
                    elif kind == "bad":
                        if not self.noack:
                            self._raw_send(b"-")
                    elif kind == "interrupt":
                        self.events.put(("interrupt", None))
                        self._on_interrupt()
        except OSError:
            pass
        self.closed = True
        self.events.put(("closed", None))
        self._on_closed(self)

    def _raw_send(self, data: bytes) -> None:
        with self._send_lock:
            try:
                self.sock.sendall(data)
            except OSError:
                self.closed = True

    def send(self, payload: bytes) -> None:
        self._raw_send(frame(payload))

    def close(self) -> None:
        self.closed = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


class GdbServer:
    """Listens for gdb; ``on_connect(conn)`` runs on the accepting thread."""

    def __init__(self, port: int, host: str = HOST) -> None:
        if not 0 <= port <= 65535:
            raise GdbError(f"gdb port {port} is not a TCP port (0-65535)")
        self.host = host
        self.requested_port = port
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._on_connect = None
        self._on_interrupt = None
        self.connection: Connection | None = None
        self.connected = threading.Event()
        self._closed = False
        self._listen(port)
        self.port = self._listener.getsockname()[1]

    def _listen(self, port: int) -> None:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((self.host, port))
            s.listen(1)
        except OSError as e:
            s.close()
            raise GdbError(f"cannot listen for gdb on {self.host}:{port}: {e.strerror}") from None
        self._listener = s

    def start(self, on_connect, on_interrupt) -> None:
        """Accept on a thread from now on."""
        self._on_connect, self._on_interrupt = on_connect, on_interrupt
        self._spawn_acceptor()

    def _spawn_acceptor(self) -> None:
        threading.Thread(target=self._accept, args=(self._listener,), name="molpy-gdb-accept", daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        try:
            sock, _ = listener.accept()
        except OSError:
            return                  # closed: the server is shutting down
        with self._lock:
            if self._closed:
                sock.close()
                return
            listener.close()        # one debugger at a time: the next connect is refused
            self._listener = None
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = Connection(sock, self._on_interrupt, self._closed_cb)
            self.connection = conn
        self._on_connect(conn)
        self.connected.set()

    def _closed_cb(self, conn: Connection) -> None:
        """The debugger left (detach, kill or a dropped connection): listen again."""
        with self._lock:
            if self.connection is conn:
                self.connection = None
                self.connected.clear()
            if self._closed or self._listener is not None:
                return
            try:
                self._listen(self.port)
            except GdbError:
                return
            self._spawn_acceptor()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            conn, self.connection = self.connection, None
            if self._listener is not None:
                try:
                    self._listener.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                self._listener.close()
                self._listener = None
        if conn is not None:
            conn.close()
