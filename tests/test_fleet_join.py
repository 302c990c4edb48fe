"""`molpy fleet run --address`: joining a Ray cluster that `ray start --head` runs (a real
process on 127.0.0.1, its own ports, temp folder and token), the session reaching the
workers through Ray's object store only, and an address where nothing answers."""

from __future__ import annotations

import json
import os
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from fleetkit import DEADLINE, check, demo_inputs, make_session, wait_for

pytest.importorskip("ray")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ray_env(token: Path) -> dict:
    """The environment of the head and of every driver joining it. Token authentication,
    as Ray's head enables it by default, with this cluster's own token (not ~/.ray's).
    RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 keeps Ray's node address on 127.0.0.1: without it
    Ray replaces 127.0.0.1 (in --node-ip-address and in a driver's --address) by the
    machine's outward address."""
    return dict(os.environ, RAY_USAGE_STATS_ENABLED="0", RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token),
                RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0")


@pytest.fixture(scope="module")
def head():
    """`ray start --head --block` as a process of its own (its own process group), 2 CPUs,
    no dashboard, every port chosen free here; it runs from a folder of its own. Stopped
    by its pid (SIGTERM: it stops what it started), then its process group is killed, so
    no Ray process outlives the module. `ray stop` is not used: it stops every Ray of the
    machine, other test runs' too."""
    folder = Path(tempfile.mkdtemp(prefix="rj", dir="/tmp"))     # short: Ray's socket paths live under it
    token = folder / "token"
    token.write_text(secrets.token_hex(16))
    cwd = folder / "head-cwd"
    cwd.mkdir()
    port = free_port()
    ports = {"--port": port, "--ray-client-server-port": free_port(), "--node-manager-port": free_port(),
             "--object-manager-port": free_port(), "--dashboard-agent-listen-port": free_port(),
             "--dashboard-agent-grpc-port": free_port(), "--runtime-env-agent-port": free_port(),
             "--metrics-export-port": free_port()}
    args = [shutil.which("ray") or "ray", "start", "--head", "--block", "--num-cpus", "2",
            "--node-ip-address", "127.0.0.1", "--include-dashboard=false", "--disable-usage-stats",
            "--object-store-memory", str(96 << 20), "--temp-dir", str(folder / "ray")]
    for option, value in ports.items():
        args += [option, str(value)]
    log = open(folder / "head.log", "wb")
    # Ray Client's proxy gives the server it starts for each client 30 s to answer; a loaded
    # 2-core host took longer once ("Initialization failure from server"): give it DEADLINE.
    env = dict(ray_env(token), RAY_CLIENT_SERVER_CHECK_CHANNEL_TIMEOUT_S=str(DEADLINE))
    p = subprocess.Popen(args, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=log,
                         stderr=subprocess.STDOUT, start_new_session=True)
    try:
        address_file = folder / "ray" / "ray_current_cluster"      # written once the head is up
        wait_for(lambda: p.poll() is not None or address_file.exists() and address_file.read_text().strip(),
                 "the Ray head")
        assert p.poll() is None, (folder / "head.log").read_text()
        assert address_file.read_text().strip() == f"127.0.0.1:{port}"
        yield {"address": f"127.0.0.1:{port}", "client": f"ray://127.0.0.1:{ports['--ray-client-server-port']}",
               "env": ray_env(token), "pid": p.pid,
               "proxy_log": folder / "ray" / "session_latest" / "logs" / "ray_client_server.err"}
    finally:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=120)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(p.pid, signal.SIGKILL)         # anything of its group still there
        except ProcessLookupError:
            pass
        p.wait()
        log.close()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def session(tmp_path_factory) -> Path:
    return make_session(tmp_path_factory.mktemp("fleet-join"))


def unshare_works() -> bool:
    r = subprocess.run(["unshare", "-m", "--propagation", "private", "true"], capture_output=True)
    return r.returncode == 0


def run_private(session: Path, hidden: Path, args: list[str], env: dict,
                given_up=lambda: False) -> subprocess.CompletedProcess | None:
    """`molpy fleet run` in a mount namespace of its own, with the session copied into a
    tmpfs mounted at ``hidden`` there only: in the head's (and so the workers') view,
    ``hidden`` stays an empty folder, so a worker that opened the driver's session path
    would find nothing. The driver runs from ``hidden`` too. None (the run killed) once
    ``given_up()`` says the cluster failed it."""
    copy = hidden / "s.session"
    script = (f"mount -t tmpfs -o size=64m molpy-fleet-test {shlex.quote(str(hidden))} && "
              f"cp {shlex.quote(str(session))} {shlex.quote(str(copy))} && cd {shlex.quote(str(hidden))} && "
              f"exec {shlex.quote(sys.executable)} -m molpy fleet run {shlex.quote(str(copy))} "
              + " ".join(shlex.quote(a) for a in args))
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        p = subprocess.Popen(["unshare", "-m", "--propagation", "private", "sh", "-c", script],
                             stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env)
        try:
            wait_for(lambda: p.poll() is not None or given_up(), "molpy fleet run to end")
        finally:
            if p.poll() is None:
                p.kill()
            p.wait()
        if given_up():
            return None
        out.seek(0)
        err.seek(0)
        return subprocess.CompletedProcess(p.args, p.returncode, out.read(), err.read())


PROXY_FAILED = "SpecificServer startup failed"     # Ray Client's proxy lost the server it started for a client


def proxy_failures(head) -> int:
    try:
        return head["proxy_log"].read_text(errors="replace").count(PROXY_FAILED)
    except OSError:
        return 0


@pytest.mark.parametrize("how", ["address", "auto", "client"])
def test_join_a_running_cluster(head, session, tmp_path, how):
    """--address HOST:PORT, --address auto with RAY_ADDRESS, and ray://HOST:PORT (Ray Client,
    as from a machine outside the cluster): the inputs run on the head's
    workers (not on a Ray of the command's own), every result what the guest must print,
    and the session reached them through the object store, never through its path."""
    if not unshare_works():
        pytest.skip("unshare -m (a mount namespace) is not allowed here: no sound check that workers do not "
                    "read the session's path")
    inputs, expect = demo_inputs(20)
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(i) + "\n" for i in inputs))
    out = tmp_path / "out.jsonl"
    hidden = tmp_path / "hidden"
    hidden.mkdir()
    env = dict(head["env"])
    args = [str(src), "--out", str(out)]
    if how in ("address", "client"):
        args += ["--address", head[how]]
    else:
        args += ["--address", "auto"]
        env["RAY_ADDRESS"] = head["address"]
    # Ray Client's proxy starts a server for each client; on a loaded host that process has
    # died at its start (the head's log says PROXY_FAILED, after gRPC's "skipping fork()
    # handlers") and the client then waits for it until its deadline. That is Ray's, not
    # molpy's: such a run is stopped and made once more, and only that once.
    for attempt in range(2):
        before = proxy_failures(head)
        r = run_private(session, hidden, args, env, given_up=lambda: proxy_failures(head) > before)
        if r is not None:
            break
    assert r is not None, f"Ray Client's proxy failed to start its server twice ({PROXY_FAILED})"
    assert r.returncode == 0, r.stderr.decode(errors="replace")[-3000:]
    assert b"Traceback" not in r.stderr
    results = [json.loads(line) for line in out.read_text().splitlines()]
    check(results, expect)
    assert all(r["attempts"] == 1 for r in results)
    assert list(hidden.iterdir()) == []                 # the workers' view of the driver's folder: empty
    assert len({r["worker"] for r in results}) == 2   # --workers: the cluster's 2 CPUs
    stderr = r.stderr.decode().strip().splitlines()
    assert stderr[-1].startswith("molpy fleet: 20 of 20 input(s) run"), stderr


@pytest.mark.parametrize("form", ["{}", "ray://{}", "auto"])
def test_an_address_where_nothing_answers_fails_in_one_line(tmp_path, cli, form):
    """Nothing listens at the port: one line naming the address, status 2, without waiting
    for Ray's own retries (minutes): the line says nothing answered there."""
    src = tmp_path / "in.jsonl"
    src.write_text('{"id": 1, "console": "exit\\n"}\n')
    folder = tmp_path / "s"
    folder.mkdir()
    session = make_session(folder)
    silent = f"127.0.0.1:{free_port()}"
    env = {"RAY_USAGE_STATS_ENABLED": "0"}
    if form == "auto":
        env["RAY_ADDRESS"] = silent
    address = form.format(silent)
    r = cli("fleet", "run", str(session), str(src), "--out", str(tmp_path / "out.jsonl"), "--address", address,
            timeout=DEADLINE, env=env)
    lines = r.stderr.decode().strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1, lines
    assert f"cannot join the Ray cluster at {address}: nothing answers at {silent}" in lines[0], lines
    assert (tmp_path / "out.jsonl").read_bytes() == b""
