"""One fleet worker's machine, without Ray: resume the session, then reset, type, run, report.

The session reaches a worker as bytes (:class:`PackedSession`, its data extents: the RAM
chunk's zero pages stay holes) and is written to a private temporary folder (mode 0700)
with O_EXCL|O_NOFOLLOW. The machine resumes from that file read-only; its -cow overlays
are made in the same folder. Once the machine holds every file open, the folder is
removed: nothing is left behind, even when the worker is killed with SIGKILL.

Every input starts from ``machine.reset()`` (RAM, CPU, devices and overlays as saved), so
inputs never see each other, whichever worker runs them and in whatever order.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import socket
import tempfile
import time
from dataclasses import dataclass

from ..console import BufferConsole
from ..errors import SessionError

MAX_OUTPUT = 1 << 20           # the console text kept for one result; the rest is counted
STOPS = {"exit": "exit", "fault": "fault", "timeout": "timeout", "quit": "idle"}


@dataclass
class PackedSession:
    """A session file's bytes as extents (offset, data); the holes between them are zeros."""

    name: str
    size: int
    extents: list[tuple[int, bytes]]

    @property
    def data_bytes(self) -> int:
        return sum(len(d) for _, d in self.extents)


def pack_session(path: str) -> PackedSession:
    """Read a session file's data extents (SEEK_DATA/SEEK_HOLE; the whole file where the
    file system has no holes)."""
    from ..files import open_existing

    fd = open_existing(path, what="session file")
    try:
        size = os.fstat(fd).st_size
        extents: list[tuple[int, bytes]] = []
        pos = 0
        while pos < size:
            try:
                start = os.lseek(fd, pos, os.SEEK_DATA)
                end = os.lseek(fd, start, os.SEEK_HOLE)
            except OSError as e:
                if e.errno == 6:                       # ENXIO: no data after pos
                    break
                start, end = pos, size
            end = min(end, size)
            extents.append((start, os.pread(fd, end - start, start)))
            if len(extents[-1][1]) != end - start:
                raise OSError(f"{path}: the session file shrank while it was read")
            pos = end
        return PackedSession(os.path.basename(path), size, extents)
    finally:
        os.close(fd)


def write_packed(packed: PackedSession, folder: str) -> str:
    """The session as a new file in ``folder`` (which the caller made private)."""
    from ..files import create_new, pwrite_all

    path = os.path.join(folder, "fleet.session")
    fd = create_new(path, mode=0o600, what="session copy")
    try:
        os.set_blocking(fd, True)
        os.ftruncate(fd, packed.size)
        for offset, data in packed.extents:
            pwrite_all(fd, data, offset)
    finally:
        os.close(fd)
    return path


class FleetConsole(BufferConsole):
    """The guest's console for one input: the text typed, then end of input (a guest that
    waits for more stops as ``idle``); the output kept up to ``limit`` bytes."""

    def __init__(self, limit: int = MAX_OUTPUT) -> None:
        super().__init__()
        self.limit = limit
        self.dropped = 0
        self.eof = True
        self.quit_on_eof = True

    def write(self, data: bytes) -> None:
        room = self.limit - len(self.output)
        if room < len(data):
            self.dropped += len(data) - max(room, 0)
            data = data[:max(room, 0)]
        self.output += data

    def start(self, keys: bytes) -> None:
        self.output.clear()
        self.dropped = 0
        self.request = None
        self.feed(keys)


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class Runner:
    """A machine resumed from a session, run once per input."""

    def __init__(self, machine, name: str | None = None) -> None:
        self.machine = machine
        self.name = name or worker_name()

    @classmethod
    def from_packed(cls, packed: PackedSession, config, max_output: int = MAX_OUTPUT) -> "Runner":
        """Resume ``packed`` in a private folder with ``config``'s devices (see the module doc)."""
        folder = tempfile.mkdtemp(prefix="molpy-fleet-")
        try:
            path = write_packed(packed, folder)
            cow = os.path.join(folder, "cow")
            os.mkdir(cow, 0o700)
            return cls.resume(path, dataclasses.replace(config, cow_dir=cow), max_output)
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    @classmethod
    def resume(cls, path: str, config, max_output: int = MAX_OUTPUT) -> "Runner":
        """A runner on the session file ``path`` (read-only: it is never written)."""
        from ..machine import Machine

        config = dataclasses.replace(config, session_file=path, session_readonly=True, inspect_only=False)
        unserved = unserved_state(path, config)
        if unserved:
            raise FleetSessionError(unserved)
        return cls(Machine.from_session(path, config, FleetConsole(max_output)))

    def run(self, task: dict) -> dict:
        """One input from the session's state: ``task`` is Input.task()'s record."""
        m = self.machine
        console: FleetConsole = m.frontend
        m.reset()
        console.start(task["console"])
        t = time.perf_counter()
        try:
            stop = m.run(seconds=task["seconds"])
        except Exception as e:             # a host-side failure (a disk gone): this input's result
            stop, error = None, f"{type(e).__name__}: {e}"
        else:
            error = None
        seconds = time.perf_counter() - t
        console.flush()
        result = {"id": task["id"], "stop": "error" if stop is None else STOPS.get(stop.value, stop.value),
                  "exit_status": m.exit_code if stop is not None and stop.value == "exit" else None,
                  "output": bytes(console.output).decode("utf-8", "replace"),
                  "guest_seconds": round(seconds, 6), "worker": self.name}
        if console.dropped:
            result["output_dropped"] = console.dropped
        if error is not None:
            result["error"] = error
        elif stop.value == "fault" and m.fault is not None:
            result["fault"] = m.fault.report()
        return result

    def close(self) -> None:
        self.machine.close()


class FleetSessionError(SessionError):
    """The session cannot be resumed with the fleet's configuration."""


def unserved_state(path: str, config) -> str:
    """Why ``config`` would leave some of the session's saved devices out ('' if none):
    the machine would resume without them (a device tree, NVRAM ...), which is not the
    saved machine."""
    from ..drivers.devtree import DevTree
    from ..emulation.session import open_session

    s = open_session(path)
    try:
        kinds = {kind for kind, _ in s.device_chunks()}
    finally:
        s.close()
    if DevTree.kind in kinds and not config.oftree:
        return (f"session {path} holds a device tree (oftree) that this configuration does not "
                f"serve: give the molrc it was saved with (-f MOLRC)")
    return ""


def config_for(session_path: str, molrc: str | None = None):
    """The machine settings every worker resumes with: the molrc's (``molrc``), else the
    disks the session names, each at its saved path, read-only ones -ro and writable ones
    -rw -cow (MOL's recipe for a read-only session)."""
    from ..config import load_config
    from ..machine import MachineConfig

    if molrc is not None:
        return MachineConfig.from_config(load_config(molrc))
    return MachineConfig(blkdevs=saved_disks(session_path))


def saved_disks(session_path: str) -> list:
    """The blkdevs a session was saved with, as specs, from its disk-sync markers."""
    from ..drivers.blk_state import parse_state
    from ..drivers.osi_blk import OsiBlk
    from ..emulation.session import SessionError, open_session
    from ..emulation.state import StateError
    from ..molrc.disks import BlkdevSpec

    s = open_session(session_path)
    try:
        data = s.device_chunks().get((OsiBlk.kind, 0))
        version = s.versions().get((OsiBlk.kind, 0), 0) or 1
    finally:
        s.close()
    if data is None:
        return []
    try:
        disks = parse_state(data, version).disks
    except StateError as e:
        raise SessionError(f"session {session_path} is damaged ({e})") from None
    specs = []
    for m in disks:
        writable = m.cow or not m.readonly
        # raw: the session was saved with this disk attached, so molpy took it as a raw disk
        # then (a container only with -raw); its markers check that it is still those bytes
        specs.append(BlkdevSpec(path=m.path, readonly=not writable, cow=writable, boot=bool(m.boot),
                                raw=True, source=f"{session_path}, disk {m.unit}",
                                flags=("-rw", "-cow") if writable else ("-ro",)))
    return specs
