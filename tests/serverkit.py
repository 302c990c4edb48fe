"""The warm server in a test's molpy folder (molpy.warm), driven through `molpy server`."""

from __future__ import annotations

import re

from clirun import run_cli
from waits import wait_for


def start() -> int:
    """Start a server; its pid."""
    r = run_cli("server", "start")
    assert r.returncode == 0 and b"server running" in r.stderr, r.stderr
    return int(re.search(rb"pid (\d+)", r.stderr).group(1))


def stop(pid: int) -> None:
    """Stop it and wait until its process has ended."""
    r = run_cli("server", "stop")
    assert r.returncode == 0, r.stderr
    wait_for(lambda: gone(pid), "the server to end after 'molpy server stop'", 30)


def status(env: dict | None = None) -> tuple[int, str]:
    r = run_cli("server", "status", env=env)
    return r.returncode, r.stdout.decode()


def served(env: dict | None = None) -> int:
    """How many runs the server has taken."""
    code, out = status(env)
    assert code == 0, out
    return int(re.search(r"(\d+) run\(s\) served", out).group(1))


def running(env: dict | None = None) -> dict[int, int]:
    """{client's pid: its worker's pid} of the runs under way."""
    code, out = status(env)
    assert code == 0, out
    return {int(c): int(w) for w, c in re.findall(r"pid (\d+) for pid (\d+)", out)}


def worker_of(client: int) -> int:
    """The pid of the worker that runs the `molpy run` whose pid is ``client``."""
    wait_for(lambda: client in running(), f"the server to take the run of pid {client}")
    return running()[client]


def gone(pid: int) -> bool:
    """``pid`` has ended (a zombie not yet reaped counts)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(") ")[2].startswith("Z")
    except FileNotFoundError:
        return True
