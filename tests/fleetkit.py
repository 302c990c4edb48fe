"""What the fleet tests share: the demo guest's read-only session, inputs of five kinds with
what the guest must print for each, the one-by-one check of results, waiting on a condition."""

from __future__ import annotations

import os
from pathlib import Path

import waits

from molpy.config import load_config
from molpy.console import BufferConsole
from molpy.drivers.demo_disk import make_demo_disk
from molpy.machine import Machine, MachineConfig, Stop

DEADLINE = 300          # seconds: a loaded machine starts Ray slowly; conditions, not sleeps


def make_session(folder: Path) -> Path:
    """The demo guest booted with a demo disk (-rw, as MOL's recipe's first step), saved at its prompt."""
    disk = folder / "disk.img"
    make_demo_disk(disk, 4 << 20)
    (folder / "cow").mkdir()
    rc = folder / "molrc"
    rc.write_text(f"ram_size: 16\nsession_file: {folder / 's.session'}\nsession_readonly: no\n"
                  f"cow_dir: {folder / 'cow'}\nblkdev: {disk} -rw -boot\n")
    conf = MachineConfig.from_config(load_config(rc))
    m = Machine(conf, BufferConsole())
    try:
        m.boot()
        assert m.run(seconds=2) is Stop.TIMEOUT
        m.save_session()
    finally:
        m.close()
    session = folder / "s.session"
    session.chmod(0o444)
    return session


def demo_inputs(n: int) -> tuple[list[dict], dict]:
    """Inputs of five kinds, and what the demo guest must print for each (stop, status, output)."""
    inputs, expect = [], {}
    for i in range(n):
        kind = i % 5
        if kind == 0:
            console, want = f"echo input {i}\nexit {i % 100}\n", ("exit", i % 100, f"echo input {i}\ninput {i}\nmolpy> exit {i % 100}\nbye\n")
        elif kind == 1:              # the session's boot count, whatever earlier inputs wrote
            console, want = "count\nexit 3\n", ("exit", 3, "count\nboot count: 1\nmolpy> exit 3\nbye\n")
        elif kind == 2:              # writes the boot record away (in this input's overlay only)
            console = "write 0 1 gone\ncount\nexit 5\n"
            want = ("exit", 5, "write 0 1 gone\nwrote sector 1 of disk 0\nmolpy> count\nno boot record\n"
                               "molpy> exit 5\nbye\n")
        elif kind == 3:              # the text ends and the guest waits for more
            console, want = f"echo {i}\n", ("idle", None, f"echo {i}\n{i}\nmolpy> ")
        else:
            console, want = f"spin 1\nexit {i % 7}\n", ("exit", i % 7, f"spin 1\nspun 1 million\nmolpy> exit {i % 7}\nbye\n")
        inputs.append({"id": f"in-{i}", "console": console})
        expect[f"in-{i}"] = want
    return inputs, expect


def check(results: list[dict], expect: dict) -> None:
    """Exactly one result per input, each what the guest must print for it."""
    ids = [r["id"] for r in results]
    assert sorted(ids) == sorted(expect) and len(ids) == len(set(ids))     # exactly one result each
    for r in results:
        stop, status, output = expect[r["id"]]
        assert (r["stop"], r["exit_status"], r["output"]) == (stop, status, output), r
        assert r["guest_seconds"] >= 0 and r["worker"]


def wait_for(condition, what: str, seconds: float = DEADLINE) -> None:
    """waits.wait_for with the fleet's longer DEADLINE (Ray starts slowly on a loaded host)."""
    waits.wait_for(condition, what, seconds)


class AccessWatch:
    """Counts the reads of one file (inotify IN_ACCESS: one per read system call that got
    bytes, whoever made it); ``wait(seconds)`` blocks until the next one (True) or gives up."""

    IN_ACCESS = 0x1
    EVENT = 16                  # struct inotify_event without a name (a watch on a file)

    def __init__(self, path: Path) -> None:
        import ctypes

        self.libc = ctypes.CDLL(None, use_errno=True)
        self.fd = self.libc.inotify_init1(os.O_CLOEXEC | os.O_NONBLOCK)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1")
        if self.libc.inotify_add_watch(self.fd, os.fsencode(path), self.IN_ACCESS) < 0:
            os.close(self.fd)
            raise OSError(ctypes.get_errno(), f"inotify_add_watch {path}")

    def wait(self, seconds: float) -> int:
        """The reads seen (0: none within ``seconds``)."""
        import select

        ready, _, _ = select.select([self.fd], [], [], seconds)
        if not ready:
            return 0
        return len(os.read(self.fd, 64 * self.EVENT)) // self.EVENT

    def close(self) -> None:
        os.close(self.fd)


def holders(path: Path) -> list[int]:
    """The processes (other than this one) that hold ``path`` open."""
    want, found = os.path.realpath(path), []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        if int(pid) == os.getpid():
            continue
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:                 # gone meanwhile
            continue
        if any(_link(f"/proc/{pid}/fd/{fd}") == want for fd in fds):
            found.append(int(pid))
    return found


def _link(path: str) -> str:
    try:
        return os.readlink(path)
    except OSError:                     # that fd was closed meanwhile
        return ""

