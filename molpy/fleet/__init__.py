"""Fleets: one read-only session, many inputs, each from an exact reset, on Ray workers.

    import molpy.fleet
    for result in molpy.fleet.run("demo.session", [{"id": 1, "console": "help\\nexit 7\\n"}]):
        print(result["id"], result["stop"], result["exit_status"])

Each input is typed to a machine reset to the session (RAM, CPU, devices, -cow overlays as
saved) and runs until the guest exits, faults, waits for input after the text ended
(``idle``) or its ``seconds`` are up (``timeout``). Results come as they finish, each with
``id``, ``stop``, ``exit_status``, ``output``, ``guest_seconds``, ``worker`` and
``attempts``. docs/fleet.md says how it works; Ray is imported only when a fleet runs.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Iterator

from .inputs import FleetInputError, Input, parse_inputs, read_inputs
from .runner import MAX_OUTPUT

__all__ = ["run", "read_inputs", "parse_inputs", "Input", "FleetError", "FleetInputError", "DEFAULT_TIMEOUT"]

DEFAULT_TIMEOUT = 10.0      # seconds a guest has for an input that does not say
DEFAULT_GRACE = 60.0        # past an input's seconds, a worker that has not answered is stopped


def __getattr__(name: str):
    if name == "FleetError":
        from .pool import FleetError
        return FleetError
    raise AttributeError(f"module 'molpy.fleet' has no attribute {name!r}")


def run(session: str, inputs: Iterable[Any], *, workers: int | None = None, address: str | None = None,
        timeout: float = DEFAULT_TIMEOUT, molrc: str | None = None, skip: Iterable[Any] = (),
        grace: float = DEFAULT_GRACE, max_output: int = MAX_OUTPUT,
        note: Callable[[str], None] | None = None, should_stop: Callable[[], bool] | None = None,
        on_start: Callable[[int, int], None] | None = None) -> Iterator[dict]:
    """Run every input on a fleet of ``workers`` machines resumed from ``session``.

    ``inputs``: dicts (``{"id", "console", "seconds"}``) or :class:`Input`; all are checked
    (FleetInputError) before anything starts. ``skip``: ids already done (not run).
    ``address``: a Ray cluster to join (``auto``, ``ray://HOST:PORT``); by default the Ray
    this process already runs, else a private local one (ended when the iterator ends).
    ``molrc``: the molrc the session was saved with (its disks and files); by default the
    disks the session names, each at its saved path (writable ones as -cow).
    ``note(text)``: events worth a line (a worker replaced); ``should_stop()``: polled, a
    True ends the iteration early; ``on_start(workers, inputs)`` once the fleet is set up.
    Raises FleetError (molpy.fleet.pool) when the run as a whole cannot go on.
    """
    from .inputs import check_seconds, id_key

    timeout = check_seconds(timeout, "timeout", "the timeout")
    grace = check_seconds(grace, "grace", "the grace")
    if workers is not None and (type(workers) is not int or not 1 <= workers <= 4096):
        raise FleetInputError(f"workers must be a whole number from 1 to 4096, not {workers!r}")
    if type(max_output) is not int or max_output < 0:
        raise FleetInputError("max_output must be a number of bytes (0 or more)")
    checked = parse_inputs(inputs)
    skipped = {id_key(i) for i in skip}
    todo = [i for i in checked if i.key not in skipped]
    packed, config = prepare(session, molrc)
    return _run(packed, config, todo, workers, address, timeout, grace, max_output, note, should_stop, on_start)


def _run(packed, config, todo, workers, address, timeout, grace, max_output, note, should_stop,
         on_start) -> Iterator[dict]:
    if not todo:
        if on_start:
            on_start(0, 0)
        return
    from .pool import Pool, start_ray

    store = max(96 << 20, 2 * packed.data_bytes + (64 << 20))
    ray, started, workers = start_ray(address, workers, store)
    pool = None
    try:
        workers = min(workers, len(todo))
        pool = Pool(packed, config, todo, workers=workers, timeout=timeout, grace=grace, max_output=max_output,
                    spread=address is not None, note=note, should_stop=should_stop)
        if on_start:
            on_start(workers, len(todo))
        yield from pool
    finally:
        if pool is not None:
            pool.close()
        if started:
            ray.shutdown()


def prepare(session: str, molrc: str | None = None):
    """The session's bytes and the workers' machine settings, checked here first (a damaged
    file, a missing molrc: one line, before Ray starts)."""
    from ..config import ConfigError
    from ..emulation.session import SessionError, open_session
    from ..preflight import not_a_regular_file
    from .runner import config_for, pack_session

    problem = not_a_regular_file(session, "session file")
    if problem:
        raise FleetInputError(problem)
    try:
        open_session(session).close()
        config = config_for(session, molrc)
        packed = pack_session(session)
    except (SessionError, ConfigError, OSError) as e:
        raise FleetInputError(str(e)) from None
    return packed, config
