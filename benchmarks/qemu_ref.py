"""QEMU as the session reference: savevm / loadvm of a PowerMac guest with the same non-zero RAM.

qemu-system-ppc (mac99) is started paused with ``nonzero`` bytes of random data loaded into
its RAM at 16 MiB by the generic loader device, and a qcow2 drive to hold the snapshot. The
monitor commands are timed over QMP, and the whole ``qemu-system-ppc -loadvm`` process is
timed from start until its monitor answers (the machine loaded, ready to run).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import socket
import statistics
import subprocess
import time

QEMU = "qemu-system-ppc"
LOAD_ADDR = 16 << 20


class _Qmp:
    """A minimal QMP client over a Unix socket (one command at a time)."""

    def __init__(self, path: str, proc: subprocess.Popen) -> None:
        deadline = time.monotonic() + 30
        while True:
            try:
                self.sock = socket.socket(socket.AF_UNIX)
                self.sock.connect(path)
                break
            except OSError:
                self.sock.close()
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{QEMU} did not open its monitor (exit {proc.poll()})")
                time.sleep(0.002)
        self.file = self.sock.makefile("rwb")
        json.loads(self.file.readline())                     # greeting
        self.command("qmp_capabilities")

    def command(self, name: str, **args) -> object:
        msg = {"execute": name, "arguments": args} if args else {"execute": name}
        self.file.write(json.dumps(msg).encode() + b"\n")
        self.file.flush()
        while True:
            reply = json.loads(self.file.readline())
            if "error" in reply:
                raise RuntimeError(f"QMP {name}: {reply['error']}")
            if "return" in reply:
                return reply["return"]

    def hmp(self, line: str) -> str:
        out = self.command("human-monitor-command", **{"command-line": line})
        if out.strip():                                      # HMP reports failures as text
            raise RuntimeError(f"QEMU monitor `{line}`: {out.strip()}")
        return out

    def quit(self) -> None:
        try:
            self.command("quit")
        except (OSError, ValueError, RuntimeError):
            pass
        self.sock.close()


def _start(tmp: str, mib: int, name: str, extra: list[str]) -> tuple[subprocess.Popen, _Qmp]:
    sock = os.path.join(tmp, f"{name}.qmp")
    if os.path.exists(sock):
        os.unlink(sock)
    cmd = [QEMU, "-M", "mac99", "-m", str(mib), "-nographic", "-nodefaults", "-S",
           "-drive", f"file={os.path.join(tmp, 'snap.qcow2')},if=none,id=snap,format=qcow2",
           "-qmp", f"unix:{sock},server=on,wait=off", *extra]
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    return proc, _Qmp(sock, proc)


def _stop(proc: subprocess.Popen, qmp: _Qmp) -> None:
    qmp.quit()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def measure(tmp: str, mib: int, nonzero: int, repeats: int = 5) -> dict | None:
    """Seconds for savevm, loadvm (monitor command) and a -loadvm process; None without QEMU."""
    if shutil.which(QEMU) is None or shutil.which("qemu-img") is None:
        return None
    work = os.path.join(tmp, f"qemu{mib}")
    os.makedirs(work, exist_ok=True)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", os.path.join(work, "snap.qcow2"), "64M"],
                   check=True)
    blob = os.path.join(work, "ram.bin")
    rng = random.Random(mib)
    with open(blob, "wb") as f:
        chunk = rng.randbytes(1 << 20)
        for _ in range(nonzero >> 20):
            f.write(chunk)
    proc, qmp = _start(work, mib, "save", ["-device", f"loader,file={blob},addr={LOAD_ADDR:#x},force-raw=on"])
    try:
        saves = []
        for i in range(repeats):
            t = time.perf_counter()
            qmp.hmp(f"savevm s{i}")
            saves.append(time.perf_counter() - t)
        qmp.hmp("savevm s")
    finally:
        _stop(proc, qmp)
    proc, qmp = _start(work, mib, "load", [])
    try:
        qmp.hmp("loadvm s")                                  # warm the page cache
        loads = []
        for _ in range(repeats):
            t = time.perf_counter()
            qmp.hmp("loadvm s")
            loads.append(time.perf_counter() - t)
    finally:
        _stop(proc, qmp)
    processes = []
    for _ in range(repeats):
        t = time.perf_counter()
        proc, qmp = _start(work, mib, "proc", ["-loadvm", "s"])
        qmp.command("query-status")
        processes.append(time.perf_counter() - t)
        _stop(proc, qmp)
    return {"savevm": statistics.median(saves), "loadvm": statistics.median(loads),
            "process": statistics.median(processes)}
