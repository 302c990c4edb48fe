"""The Ray actor: one worker process holding one machine (molpy.fleet.runner.Runner).

A plain class: molpy.fleet.pool wraps it with ``ray.remote`` (so importing this module
needs no Ray). A session that cannot be resumed does not kill the actor: ``ready()``
reports why, so the driver fails the whole run once, with that one line.
"""

from __future__ import annotations

import os

from .runner import MAX_OUTPUT, PackedSession, Runner, worker_name


def one_line(e: BaseException) -> str:
    """An exception as one line: molpy's own errors say it all, others get their type."""
    text = " ".join(str(e).split()) or type(e).__name__
    if type(e).__module__.startswith("molpy") or isinstance(e, OSError):
        return text
    return f"{type(e).__name__}: {text}"


class FleetWorker:
    def __init__(self, packed: PackedSession, config, max_output: int = MAX_OUTPUT) -> None:
        self.name = worker_name()
        self.error: str | None = None
        self.runner: Runner | None = None
        try:
            self.runner = Runner.from_packed(packed, config, max_output)
            self.runner.name = self.name
        except Exception as e:
            self.error = one_line(e)

    def ready(self) -> dict:
        """Who this worker is, and whether it resumed the session (``error``: why not)."""
        return {"worker": self.name, "pid": os.getpid(), "error": self.error}

    def run(self, task: dict) -> dict:
        return self.runner.run(task)
