"""Fleets on a real local Ray cluster (127.0.0.1, 2 CPUs, a small object store): the demo
guest's read-only session, results checked one by one, a worker SIGKILLed mid-run, a
hanging input, an interrupted run resumed, and every kind of bad input refused in one line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import ray                                                # noqa: E402  (the fleet extra)

from fleetkit import DEADLINE, AccessWatch, check, demo_inputs, holders, make_session, wait_for   # noqa: E402
from molpy import fleet                                   # noqa: E402
from molpy.fleet import pool                              # noqa: E402
from molpy.fleet.results import ResultsFile               # noqa: E402


@pytest.fixture(scope="module")
def session(tmp_path_factory) -> Path:
    return make_session(tmp_path_factory.mktemp("fleet"))


@pytest.fixture(scope="module")
def cluster():
    """One small local Ray for the library tests (molpy.fleet joins the one already running)."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(address="local", num_cpus=2, object_store_memory=96 << 20, include_dashboard=False, _node_ip_address="127.0.0.1",
             log_to_driver=False, logging_level="ERROR")
    yield ray
    ray.shutdown()


def test_200_inputs_on_two_workers(session, cluster):
    inputs, expect = demo_inputs(200)
    results = list(fleet.run(str(session), inputs, workers=2))
    check(results, expect)
    assert len({r["worker"] for r in results}) == 2
    assert all(r["attempts"] == 1 for r in results)


def test_a_worker_killed_mid_run_loses_nothing(session, cluster):
    inputs, expect = demo_inputs(200)
    for inp in inputs:                     # every input takes a while: the kill lands mid-input
        inp["console"] = "spin 3\n" + inp["console"]
    expect = {k: (s, st, "spin 3\nspun 3 million\nmolpy> " + out) for k, (s, st, out) in expect.items()}
    results, killed, notes = [], None, []
    for r in fleet.run(str(session), inputs, workers=2, note=notes.append):
        results.append(r)
        if len(results) == 30:
            killed = r["worker"]
            os.kill(int(killed.rsplit(":", 1)[1]), signal.SIGKILL)
    check(results, expect)
    again = [r for r in results if r["attempts"] == 2]
    assert again and all(r["worker"] != killed for r in again)   # what it held ran again, elsewhere
    assert all(r["attempts"] == 1 for r in results if r not in again)
    assert any(killed in n and "run again" in n for n in notes)


def test_a_hanging_input_times_out_and_the_worker_goes_on(session, cluster):
    inputs = [{"id": "before", "console": "exit 1\n"},
              {"id": "hang", "console": "spin 4000000000\n", "seconds": 1},
              {"id": "after", "console": "count\nexit 2\n"}]
    results = {r["id"]: r for r in fleet.run(str(session), inputs, workers=1)}
    assert results["hang"]["stop"] == "timeout" and results["hang"]["exit_status"] is None
    assert results["hang"]["output"] == "spin 4000000000\n"
    assert 1 <= results["hang"]["guest_seconds"] < 30
    assert results["after"]["stop"] == "exit" and results["after"]["output"].endswith("boot count: 1\nmolpy> exit 2\nbye\n")
    assert len({r["worker"] for r in results.values()}) == 1 and all(r["attempts"] == 1 for r in results.values())


def test_an_input_whose_worker_dies_three_times_gets_a_crash_result(tmp_path, cluster, monkeypatch):
    """The marked input reads a sector of its disk before it spins: a read (inotify, on a
    disk only this test's workers hold open) by the one worker that is ready and has the
    marked input at the head of its queue means it runs it, and that worker is SIGKILLed.
    A worker's own start reads the disk too (format probe, the resume's content check):
    such reads come before the pool has it ready and are not counted (found: counting
    them killed a starting worker or saw a read by a stand-in already closed). After the
    third death the input gets one ``crash`` result; every other input its own result."""
    session = make_session(tmp_path)
    disk = tmp_path / "disk.img"
    inputs, expect = demo_inputs(30)
    keep = [i for i in inputs if int(i["id"][3:]) % 5 not in (1, 2)]        # no input that reads the disk
    inputs = keep[:4] + [{"id": "poison", "console": "read 0 9\nspin 4000000000\n", "seconds": DEADLINE}] + keep[4:]
    expect = {k: v for k, v in expect.items() if k in {i["id"] for i in keep}}
    watch = AccessWatch(disk)
    killed: list[int] = []
    problems: list = []
    reads = [0]
    stop = threading.Event()
    pools: list[pool.Pool] = []
    made = pool.Pool.__init__

    def spy(self, *args, **kwargs) -> None:                  # the test sees the pool's slots
        made(self, *args, **kwargs)
        pools.append(self)

    monkeypatch.setattr(pool.Pool, "__init__", spy)

    def running_poison() -> set[int]:
        """The pids of ready workers whose first queued input is the marked one."""
        return {s.pid for s in list(pools[0].slots) if s.ready_ref is None and s.pid
                and s.inflight and s.inflight[0][1].inp.id == "poison"} if pools else set()

    def killer() -> None:
        while not stop.is_set():
            if not watch.wait(0.2):
                continue
            pids = holders(disk)
            runner = running_poison() & set(pids) - set(killed)
            if not runner:                                  # a worker's start, not the input
                continue
            reads[0] += 1
            if len(pids) != 1:                              # one worker: the one that read
                problems.append(pids)
                continue
            if len(killed) < 3:
                os.kill(pids[0], signal.SIGKILL)
                killed.append(pids[0])

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    notes: list[str] = []
    try:
        results = list(fleet.run(str(session), inputs, workers=1, note=notes.append))
    finally:
        stop.set()
        thread.join()
        watch.close()
    assert not problems and len(killed) == 3 and reads[0] == 3, (problems, killed, reads)   # it ran three times, never a fourth
    crash = [r for r in results if r["id"] == "poison"]
    assert len(crash) == 1, results
    assert crash[0]["stop"] == "crash" and crash[0]["exit_status"] is None and crash[0]["attempts"] == 3
    assert crash[0]["worker"].endswith(f":{killed[-1]}")
    check([r for r in results if r["id"] != "poison"], expect)
    assert all(r["attempts"] == 1 for r in results if r["id"] != "poison")
    after = {i["id"] for i in keep[4:]}                            # run by the worker that came after
    assert {int(r["worker"].rsplit(":", 1)[1]) for r in results if r["id"] in after}.isdisjoint(killed)
    assert sum("died" in n for n in notes) == 3 and "1 given up" in notes[-1], notes


def test_an_interrupted_run_resumes(session, tmp_path, cli):
    inputs, expect = demo_inputs(120)
    for inp in inputs:
        inp["console"] = "spin 5\n" + inp["console"]
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(i) + "\n" for i in inputs))
    out = tmp_path / "out.jsonl"
    args = [sys.executable, "-m", "molpy", "fleet", "run", str(session), str(src), "--out", str(out), "--workers", "2"]
    p = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: out.exists() and out.read_bytes().count(b"\n") >= 10 or p.poll() is not None,
                 "the first results")
        p.send_signal(signal.SIGTERM)
        _, err = p.communicate(timeout=DEADLINE)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 143, err
    assert b"run the same command again" in err and b"Traceback" not in err
    first = [json.loads(line) for line in out.read_text().splitlines()]
    assert 10 <= len(first) < 120
    again = cli("fleet", "run", str(session), str(src), "--out", str(out), "--workers", "2", timeout=DEADLINE)
    assert again.returncode == 0, again.stderr
    assert f"{len(first)} already in".encode() in again.stderr
    results = [json.loads(line) for line in out.read_text().splitlines()]
    expect = {k: (s, st, "spin 5\nspun 5 million\nmolpy> " + o) for k, (s, st, o) in expect.items()}
    check(results, expect)
    assert results[:len(first)] == first


def test_a_session_the_workers_cannot_resume_fails_once(session, tmp_path, cli):
    """The disk the session names changed after the save: every worker would refuse it."""
    folder = tmp_path / "changed"
    changed = make_session(folder)
    with open(folder / "disk.img", "r+b") as f:
        f.seek(4096)
        f.write(b"changed")
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"id": i, "console": "exit\n"}) + "\n" for i in range(50)))
    r = cli("fleet", "run", str(changed), str(src), "--out", str(tmp_path / "out.jsonl"), timeout=DEADLINE)
    assert r.returncode == 2
    lines = r.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and "cannot resume the session" in lines[0] and "disk.img" in lines[0], lines
    assert (tmp_path / "out.jsonl").read_bytes() == b""


@pytest.mark.parametrize("text, message", [
    ('{"id": 1}\n{"id": 2,}\n', "in.jsonl:2: not a JSON line"),
    ('{"console": "help\\n"}\n', 'in.jsonl:1: the input has no "id"'),
    ('{"id": "a"}\n\n{"id": "a"}\n', 'in.jsonl:3: id "a" is used twice (first at '),
    ('{"id": 1, "consol": "x"}\n', 'in.jsonl:1: unknown key "consol"'),
    ('{"id": 1, "seconds": -1}\n', 'in.jsonl:1: "seconds" must be a number of seconds'),
    ('{"id": 1, "seconds": "5"}\n', 'in.jsonl:1: "seconds" must be a number of seconds'),
    ('{"id": [1]}\n', 'in.jsonl:1: "id" must be a string or an integer'),
    ('{"id": 1.5}\n', 'in.jsonl:1: "id" must be a string or an integer'),
    ('{"id": 1, "console": 5}\n', 'in.jsonl:1: "console" must be a string'),
    ('[1, 2]\n', "in.jsonl:1: an input must be a JSON object"),
    ('{"id": 1}\n\xff\n', "in.jsonl:2: not UTF-8"),
])
def test_bad_inputs_one_line_no_run(session, tmp_path, text, message, cli):
    src = tmp_path / "in.jsonl"
    src.write_bytes(text.encode("latin-1"))
    out = tmp_path / "out.jsonl"
    r = cli("fleet", "run", str(session), str(src), "--out", str(out))
    assert r.returncode == 2
    lines = r.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and message in lines[0], lines
    assert not out.exists()


def test_bad_results_files_and_options(session, tmp_path, cli):
    src = tmp_path / "in.jsonl"
    src.write_text('{"id": 1}\n')
    (tmp_path / "notes.txt").write_text("my notes\n")
    os.mkfifo(tmp_path / "fifo")
    os.symlink(tmp_path / "notes.txt", tmp_path / "link")
    cases = [(["--out", str(tmp_path / "notes.txt")], "not a result of molpy fleet"),
             (["--out", str(tmp_path / "fifo")], "is a FIFO"),
             (["--out", str(tmp_path / "link")], "symbolic link"),
             (["--out", str(src)], "is INPUTS"),
             (["--out", str(tmp_path / "o"), "--timeout", "0"], "the timeout must be"),
             (["--out", str(tmp_path / "o"), "--workers", "0"], "workers must be")]
    for extra, message in cases:
        r = cli("fleet", "run", str(session), str(src), *extra)
        lines = r.stderr.decode().strip().splitlines()
        assert r.returncode == 2 and len(lines) == 1 and message in lines[0], (extra, lines)
    assert (tmp_path / "notes.txt").read_text() == "my notes\n"
    r = cli("fleet", "run", str(tmp_path / "missing.session"), str(src), "--out", str(tmp_path / "o2"))
    assert r.returncode == 2 and len(r.stderr.splitlines()) == 1 and b"Traceback" not in r.stderr


def test_a_torn_last_result_is_dropped(tmp_path):
    out = tmp_path / "out.jsonl"
    out.write_text('{"id":1,"stop":"exit"}\n{"id":"two","stop":"ex')
    notes = []
    f = ResultsFile(str(out), note=notes.append)
    try:
        assert f.done_ids == [1] and len(notes) == 1 and "incomplete last line" in notes[0]
        f.append({"id": "two", "stop": "exit"})
    finally:
        f.close()
    assert out.read_text() == '{"id":1,"stop":"exit"}\n{"id":"two","stop":"exit"}\n'


def test_skip_and_the_session_is_never_written(session, cluster):
    before = session.read_bytes()
    inputs = [{"id": i, "console": "write 0 0 scribble\nexit\n"} for i in range(6)]
    results = list(fleet.run(str(session), inputs, skip=[0, 1, 2], workers=2))
    assert sorted(r["id"] for r in results) == [3, 4, 5]
    assert session.read_bytes() == before
    assert all("wrote sector 0" in r["output"] for r in results)


def test_ray_is_not_imported_by_the_cli():
    code = ("import sys; from molpy import cli; import molpy.fleet, molpy.commands.fleet; cli.build_parser();"
            "from molpy.machine import Machine; print('ray' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60)
    assert r.stdout.strip() == b"False", r.stderr
