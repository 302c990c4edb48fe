"""The fleet's driver on Ray: workers as actors, inputs handed out, results as they finish.

Ray is imported here only (``molpy run`` never pays for it). The driver puts the session's
bytes in Ray's object store once; every actor (a worker process, one CPU) gets them from
there, resumes its own machine and keeps it for the whole run. Each actor has at most
``DEPTH`` inputs in flight (one running, the next already queued at the actor, so that
it never waits for the driver), and results stream back one by one.

Exactly one result per input: a result counts only when it comes back. An actor that
dies (SIGKILL, out of memory, its node gone) takes the inputs it held back into the
queue and is replaced; one that stops answering (``seconds`` + ``grace`` past its
running input's start) is killed and treated the same. An input whose worker died under
it ``MAX_ATTEMPTS`` times gets a ``crash`` result instead of killing workers for ever.
A worker that cannot resume the session stops the whole run at once (FleetError).
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator

from ..errors import Error
from .actor import FleetWorker
from .inputs import Input
from .runner import MAX_OUTPUT, PackedSession

DEPTH = 2                   # inputs in flight per worker
MAX_ATTEMPTS = 3            # deaths of a worker running the same input before it is given up
PROBE_TIMEOUT = 10.0        # seconds a cluster's address has to accept a connection
START_TIMEOUT = 600.0       # no worker ready after this long: the cluster cannot host one
POLL = 0.2                  # how often the driver looks at the clock (hangs, stop requests)


class FleetError(Error):
    """The whole run cannot go on (the workers cannot resume the session, Ray cannot
    start ...): one line for the user."""


@dataclass
class _Job:
    inp: Input
    attempts: int = 0                   # times a worker died while running it


@dataclass
class _Slot:
    handle: object
    ready_ref: object | None
    name: str = "?"
    pid: int | None = None
    started: float = field(default_factory=time.monotonic)
    inflight: collections.deque = field(default_factory=collections.deque)   # (ref, job)
    head_since: float = 0.0             # when its first in-flight input started running
    hung: bool = False


class Pool:
    """Runs ``jobs`` on ``workers`` actors of an initialised Ray; iterate for results."""

    def __init__(self, packed: PackedSession, config, inputs: list[Input], *, workers: int,
                 timeout: float, grace: float, max_output: int = MAX_OUTPUT, spread: bool = False,
                 note: Callable[[str], None] | None = None,
                 should_stop: Callable[[], bool] | None = None) -> None:
        import ray

        self.ray = ray
        self.timeout = timeout
        self.grace = grace
        self.note = note or (lambda text: None)
        self.should_stop = should_stop or (lambda: False)
        self.workers = workers
        self.pending = collections.deque(_Job(i) for i in inputs)
        self.slots: list[_Slot] = []
        self.deaths = 0                 # deaths since the last result (reset by each result)
        self.max_deaths = 3 * workers + MAX_ATTEMPTS + 5
        self.session_ref = ray.put(packed)
        options = {"num_cpus": 1, "max_restarts": 0, "max_task_retries": 0}
        if spread:
            options["scheduling_strategy"] = "SPREAD"
        self.actor_class = ray.remote(**options)(FleetWorker)
        self.config = config
        self.max_output = max_output

    # -- workers --

    def _start(self) -> None:
        handle = self.actor_class.remote(self.session_ref, self.config, self.max_output)
        self.slots.append(_Slot(handle, handle.ready.remote()))

    def _retire(self, slot: _Slot, why: str) -> None:
        """A dead (or hung) worker: its inputs go back to the queue, a new worker comes."""
        self.slots.remove(slot)
        try:
            self.ray.kill(slot.handle, no_restart=True)
        except Exception:
            pass
        self.deaths += 1
        lost = list(slot.inflight)
        for i, (_, job) in enumerate(lost):
            if i == 0:
                job.attempts += 1
        requeue = [job for _, job in lost if job.attempts < MAX_ATTEMPTS]
        self.pending.extendleft(reversed(requeue))
        given_up = [job for _, job in lost if job.attempts >= MAX_ATTEMPTS]
        self.note(f"worker {slot.name} {why}; {len(requeue)} input(s) it held run again"
                  + (f", {len(given_up)} given up" if given_up else ""))
        self._given_up = given_up
        if self.deaths > self.max_deaths:
            raise FleetError(f"the workers keep dying ({self.deaths} so far, the last: {slot.name} {why}); "
                             f"stopped")
        if self.pending or any(s.inflight for s in self.slots):
            self._start()

    # -- the loop --

    def __iter__(self) -> Iterator[dict]:
        ray = self.ray
        self._given_up: list[_Job] = []
        self._began = False
        begun_at = time.monotonic()
        for _ in range(self.workers):
            self._start()
        while self.pending or any(s.inflight for s in self.slots):
            if self.should_stop():
                return
            if not self._began and time.monotonic() - begun_at > START_TIMEOUT:
                raise FleetError(f"the workers did not start within {START_TIMEOUT:.0f} s: does the Ray "
                                 f"cluster have {self.workers} CPU(s) free for them?")
            self._feed()
            refs = {}
            for s in self.slots:
                if s.ready_ref is not None:
                    refs[s.ready_ref] = (s, None)
                for ref, job in s.inflight:
                    refs[ref] = (s, job)
            if not refs:
                raise FleetError("no worker left to run the inputs")
            done, _ = ray.wait(list(refs), num_returns=1, timeout=POLL)
            if done:
                rest = [r for r in refs if r not in done]
                more, _ = ray.wait(rest, num_returns=len(rest), timeout=0) if rest else ([], None)
                finished = set(done) | set(more)
                done = [r for r in refs if r in finished]     # each worker's in their order
            for ref in done:
                slot, job = refs[ref]
                if slot not in self.slots:       # retired by an earlier ref of this round
                    continue
                if job is None:
                    self._on_ready(slot, ref)
                else:
                    result = self._on_result(slot, ref, job)
                    if result is not None:
                        yield result
                for job in self._given_up:
                    yield self._crash_result(job, slot)
                self._given_up = []
            self._watch()

    def _feed(self) -> None:
        if not self._began:            # the first inputs wait for every first worker: a session
            if any(s.ready_ref is not None for s in self.slots):   # one cannot resume fails
                return                 # the run before any input runs, and all share the start
            self._began = True
        now = time.monotonic()
        for s in self.slots:
            while s.ready_ref is None and self.pending and len(s.inflight) < DEPTH:
                job = self.pending.popleft()
                if not s.inflight:
                    s.head_since = now
                s.inflight.append((s.handle.run.remote(job.inp.task(self.timeout)), job))

    def _on_ready(self, slot: _Slot, ref) -> None:
        from ray.exceptions import RayActorError

        try:
            info = self.ray.get(ref)
        except RayActorError as e:
            slot.ready_ref = None
            self._retire(slot, f"died while it resumed the session ({_short(e)})")
            return
        slot.ready_ref = None
        slot.name, slot.pid = info["worker"], info["pid"]
        if info["error"]:
            raise FleetError(f"the workers cannot resume the session: {info['error']} (worker {slot.name})")

    def _on_result(self, slot: _Slot, ref, job: _Job) -> dict | None:
        from ray.exceptions import RayActorError, RayTaskError

        try:
            result = self.ray.get(ref)
        except RayActorError as e:
            self._retire(slot, "did not answer and was stopped" if slot.hung else f"died ({_short(e)})")
            return None
        except RayTaskError as e:            # the worker lives; this input failed in it
            result = {"id": job.inp.id, "stop": "error", "exit_status": None, "output": "",
                      "guest_seconds": 0.0, "worker": slot.name, "error": _short(e)}
        slot.inflight = collections.deque((r, j) for r, j in slot.inflight if r != ref)
        slot.head_since = time.monotonic()
        self.deaths = 0
        result["attempts"] = job.attempts + 1
        return result

    def _crash_result(self, job: _Job, slot: _Slot) -> dict:
        return {"id": job.inp.id, "stop": "crash", "exit_status": None, "output": "", "guest_seconds": None,
                "worker": slot.name, "attempts": job.attempts,
                "error": f"the worker running it died {job.attempts} times"}

    def _watch(self) -> None:
        """A worker whose running input is far past its time is stopped (a host-side hang)."""
        now = time.monotonic()
        for s in list(self.slots):
            if not s.inflight or s.hung:
                continue
            job = s.inflight[0][1]
            seconds = job.inp.seconds if job.inp.seconds is not None else self.timeout
            if now - s.head_since > seconds + self.grace:
                s.hung = True
                try:
                    self.ray.kill(s.handle, no_restart=True)
                except Exception:
                    pass

    def close(self) -> None:
        for s in self.slots:
            try:
                self.ray.kill(s.handle, no_restart=True)
            except Exception:
                pass
        self.slots = []


def _short(e: BaseException) -> str:
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    return lines[0][:300] if lines else type(e).__name__


def start_ray(address: str | None, workers: int | None, store_bytes: int) -> tuple[object, bool, int]:
    """Ray for the run: joined (``address``, or one this process already started), else a
    private local one on 127.0.0.1 (ended with the run). Returns (ray, started here, workers)."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        import ray
    except ImportError:
        raise FleetError("molpy fleet needs Ray: pip install 'molpy[fleet]'") from None
    with _keep_signal_handlers():
        return _init(ray, address, workers, store_bytes)


@contextlib.contextmanager
def _keep_signal_handlers():
    """Ray's core installs its own SIGTERM handler (it dumps a stack and exits): molpy's
    (hostsignals: an orderly stop, results kept) are put back."""
    import signal

    from ..hostsignals import TERMINATING

    before = {s: signal.getsignal(s) for s in TERMINATING}
    try:
        yield
    finally:
        for s, handler in before.items():
            if handler is not None:
                signal.signal(s, handler)


def _init(ray, address, workers, store_bytes):
    if ray.is_initialized():
        return ray, False, workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
    quiet = {"log_to_driver": False, "logging_level": logging.ERROR}
    if address:
        silent = unanswered(address)
        if silent:
            raise FleetError(f"cannot join the Ray cluster at {address}: {silent}")
    try:
        if address:
            ray.init(address=address, **quiet)
            return ray, True, workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
        workers = workers or os.cpu_count() or 1
        ray.init(address="local", num_cpus=workers, object_store_memory=store_bytes, include_dashboard=False,
                 _node_ip_address="127.0.0.1", **quiet)
    except Exception as e:
        raise FleetError(f"cannot {'join the Ray cluster at ' + address if address else 'start Ray'}: "
                         f"{_short(e)}") from None
    return ray, True, workers


def unanswered(address: str) -> str:
    """Why nothing can answer at a cluster ``address`` ('' when something accepts a TCP
    connection there, or the address is not HOST:PORT). Ray itself would retry for minutes
    before it gives up on an address where nothing listens. ``auto`` is RAY_ADDRESS's."""
    import socket

    if address == "auto":
        address = os.environ.get("RAY_ADDRESS", "")
        if address in ("", "auto"):
            return ""                   # Ray's own files on this machine say where (or that none runs)
    if address.startswith("ray://"):
        address = address[len("ray://"):]
    host, colon, port = address.rpartition(":")
    host = host.strip("[]")
    if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
        return ""                       # not HOST:PORT: Ray's own message
    try:
        socket.create_connection((host, int(port)), timeout=PROBE_TIMEOUT).close()
    except socket.gaierror as e:
        return f"no host {host} ({e.strerror or type(e).__name__})"
    except socket.timeout:
        return f"nothing answers at {host}:{port} (no answer within {PROBE_TIMEOUT:.0f} s)"
    except OSError as e:
        return f"nothing answers at {host}:{port} ({e.strerror or type(e).__name__})"
    return ""
