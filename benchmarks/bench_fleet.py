"""Fleet throughput: molpy fleet with 1 and 2 Ray workers against the same inputs run in one
process with ``machine.reset()`` in a loop (molpy.fleet.runner.Runner, no Ray).

Two kinds of input on the demo guest's read-only session: light ones (``echo``, ``exit``:
about 2 ms of guest work, so Ray's cost per input shows) and heavy ones (``spin 20``: tens
of ms, where the workers' CPUs are what counts). One local Ray (127.0.0.1, 2 CPUs) serves
every fleet row; its start is not timed, each fleet's own start (actors resuming) is.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import time
from pathlib import Path

LIGHT = 600
HEAVY = 120


def _session(folder: Path) -> Path:
    from molpy.config import load_config
    from molpy.console import BufferConsole
    from molpy.drivers.demo_disk import make_demo_disk
    from molpy.machine import Machine, MachineConfig, Stop

    disk = folder / "disk.img"
    make_demo_disk(disk, 4 << 20)
    (folder / "cow").mkdir()
    rc = folder / "molrc"
    rc.write_text(f"ram_size: 16\nsession_file: {folder / 's.session'}\nsession_readonly: no\n"
                  f"cow_dir: {folder / 'cow'}\nblkdev: {disk} -rw -boot\n")
    m = Machine(MachineConfig.from_config(load_config(rc)), BufferConsole())
    try:
        m.boot()
        assert m.run(seconds=2) is Stop.TIMEOUT
        m.save_session()
    finally:
        m.close()
    return folder / "s.session"


def _inputs(kind: str) -> list[dict]:
    if kind == "light":
        return [{"id": i, "console": f"echo {i}\nexit {i % 100}\n"} for i in range(LIGHT)]
    return [{"id": i, "console": f"spin 20\nexit {i % 100}\n"} for i in range(HEAVY)]


def _in_process(session: Path, inputs: list[dict]) -> float:
    from molpy.fleet import parse_inputs
    from molpy.fleet.runner import Runner, config_for

    runner = Runner.resume(str(session), dataclasses.replace(config_for(str(session)),
                                                             cow_dir=str(session.parent / "cow")))
    try:
        tasks = [i.task(10.0) for i in parse_inputs(inputs)]
        t = time.perf_counter()
        for task in tasks:
            assert runner.run(task)["stop"] == "exit"
        return len(tasks) / (time.perf_counter() - t)
    finally:
        runner.close()


def _fleet(session: Path, inputs: list[dict], workers: int) -> float:
    from molpy import fleet

    t = time.perf_counter()
    n = 0
    for r in fleet.run(str(session), inputs, workers=workers):
        assert r["stop"] == "exit", r
        n += 1
    assert n == len(inputs)
    return n / (time.perf_counter() - t)


def run() -> list[dict]:
    import ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["MOLPY_HOME"] = tmp
        session = _session(Path(tmp))
        ray.init(address="local", num_cpus=2, object_store_memory=96 << 20, include_dashboard=False,
                 _node_ip_address="127.0.0.1", log_to_driver=False, logging_level="ERROR")
        try:
            _fleet(session, _inputs("light")[:20], 2)            # warm: workers' imports cached
            for kind in ("light", "heavy"):
                inputs = _inputs(kind)
                loop = _in_process(session, inputs)
                one = _fleet(session, inputs, 1)
                two = _fleet(session, inputs, 2)
                overhead_ms = (1 / one - 1 / loop) * 1000
                what = "echo + exit, ~2 ms each" if kind == "light" else "spin 20 + exit"
                rows.append({"name": f"fleet, 1 Ray worker, {kind} inputs ({what})", "molpy": one, "reference": loop,
                             "unit": "inputs/s", "ratio": one / loop, "target": "-",
                             "note": f"reference: the same inputs, one process, machine.reset() in a loop; "
                                     f"Ray adds {overhead_ms:.2f} ms per input ({len(inputs)} inputs, fleet start included)"})
                rows.append({"name": f"fleet, 2 Ray workers, {kind} inputs ({what})", "molpy": two, "reference": one,
                             "unit": "inputs/s", "ratio": two / one, "target": ">= 1.5" if kind == "heavy" else "-",
                             "note": f"reference: 1 Ray worker, same run; in-process loop {loop:,.0f}/s "
                                     f"(2 workers: {two / loop:.2f}x of it)"})
        finally:
            ray.shutdown()
    return rows
