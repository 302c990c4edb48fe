"""Linux on molpy, whole `molpy run` processes on a pty (issue 20, item 5): a fresh boot
of molpy's kernel to the shell's prompt against a resume of a read-only session (+ -cow)
to the same prompt. Python's bytecode cache is on, as for a user (guest_run.process_env).

Against QEMU (qemu_linux.py): the same kernel tree built for QEMU's mac99 and the same
shell as an initramfs, ``qemu-system-ppc -M mac99 -kernel`` booted to the prompt, and the
whole ``-loadvm`` process of a savevm made there until the shell answers a newline; molpy's
resume is timed the same way (to the shell's answer to a newline typed as molpy resumes).

Each resume and fresh boot is measured twice: every ``molpy run`` starting on its own, and
with molpy's warm server running (``molpy server start``: the run is handed to a loaded
molpy, molpy.warm), which leaves Python's own start-up and the client's handful of imports.

Needs the kernel `molpy linux build` made; without it this benchmark has no rows and
says so. Without QEMU or the qemu-mac99 kernel the QEMU rows say why they are not measured.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time

from benchmarks import qemu_linux
from benchmarks.guest_run import process_env, timed_run
from benchmarks.pty_proc import PtyProcess
from molpy.machine import MachineConfig

F12 = b"\x1b[24~"


class _Run(PtyProcess):
    """One ``molpy run`` on a pty."""

    def __init__(self, args: list[str], env: dict, cwd: str) -> None:
        super().__init__([sys.executable, "-m", "molpy", "run", *args], env, cwd, "molpy run")


def _fresh(rc: str, env: dict, tmp: str) -> float:
    r = _Run(["-f", rc, "--fresh"], env, tmp)
    took = r.until(b"Run /sbin/init", b"\n# ")
    r.finish(b"exit 0\n")
    return took


def _resumed(rc: str, env: dict, tmp: str) -> float:
    r = _Run(["-f", rc], env, tmp)
    took = r.until(b"resumed session", b"# ")
    assert r.finish(b"exit 0\n") == 0, r.output[-400:]
    return took


def _resumed_answering(rc: str, env: dict, tmp: str) -> float:
    """Seconds from the start to the shell's answer to a newline typed once molpy says it
    resumed (molpy flushes what was typed before it owns the terminal). molpy shows the
    screen's last line, the old prompt, first; the shell's answer is the next ``# ``."""
    r = _Run(["-f", rc], env, tmp)
    r.until(b"resumed session")
    r.send(b"\n")
    took = r.until(b"# ", b"# ", pos=r.output.find(b"resumed session"))
    assert r.finish(b"exit 0\n") == 0, r.output[-400:]
    return took


def _spin_in_shell(rc: str, env: dict, tmp: str) -> float:
    r = _Run(["-f", rc], env, tmp)
    r.until(b"resumed session", b"# ")
    took = r.command(b"spin %d" % SPIN_MILLIONS)
    assert r.finish(b"exit 0\n") == 0, r.output[-400:]
    return took


def _python(env: dict, code: str) -> float:
    """Seconds of a Python process that runs ``code`` and exits (``import unicorn``: what
    every ``molpy run`` on its own pays before it reads its molrc)."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], env=env, check=True)
    return time.perf_counter() - start


def _server(action: str, env: dict, tmp: str) -> None:
    subprocess.run([sys.executable, "-m", "molpy", "server", action], env=env, cwd=tmp, check=True,
                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _warm(rc: str, env: dict, tmp: str) -> dict:
    """The same runs with the warm server up; its own start is not timed."""
    _server("start", env, tmp)
    try:
        _resumed(rc, env, tmp)                              # untimed
        return {"answering": statistics.median(_resumed_answering(rc, env, tmp) for _ in range(7)),
                "resumed": statistics.median(_resumed(rc, env, tmp) for _ in range(7)),
                "fresh": statistics.median(_fresh(rc, env, tmp) for _ in range(3))}
    finally:
        _server("stop", env, tmp)


def _warm_rows(warm: dict, python: float, qemu: dict | None, blocked: str | None) -> list[dict]:
    why = f"NOT MEASURED: {blocked}" if blocked else ""
    return [{"name": "Linux, warm server: `molpy run` resumed until the shell answers, against `qemu-system-ppc -M mac99 -loadvm`",
             "molpy": warm["answering"], "reference": qemu["loadvm"] if qemu else None, "unit": "s",
             "ratio": qemu["loadvm"] / warm["answering"] if qemu else None, "target": ">= 2 (<= 0.5x)",
             "note": why or f"as the row without the server, with `molpy server start` done first; of molpy's time "
                            f"{python:.3f} s is Python's own start (`python -c pass`)"},
            {"name": "Linux, warm server: `molpy run` resumed to the shell's prompt (read-only session, -cow)",
             "molpy": warm["resumed"], "reference": warm["fresh"], "unit": "s",
             "ratio": warm["fresh"] / warm["resumed"], "target": ">= 8 (and <= 0.25 s)",
             "note": "reference: the same command booting the kernel fresh (--fresh), also with the server up"}]


def _qemu_rows(answering: float, fresh: float, floor: float, qemu: dict | None, blocked: str | None) -> list[dict]:
    why = f"NOT MEASURED: {blocked}" if blocked else ""
    return [{"name": "Linux: `molpy run` resumed until the shell answers, against `qemu-system-ppc -M mac99 -loadvm`",
             "molpy": answering, "reference": qemu["loadvm"] if qemu else None, "unit": "s",
             "ratio": qemu["loadvm"] / answering if qemu else None, "target": ">= 2 (<= 0.5x)",
             "note": why or "both whole processes from their start until the shell's `# ` answers a newline; "
                            "QEMU: savevm at the prompt in a qcow2, the same kernel tree for mac99, the shell as "
                            f"an initramfs, {qemu_linux.RAM_MIB} MiB"},
            {"name": "Linux: the floor under every `molpy run`: `python -c 'import unicorn'`, against the same -loadvm",
             "molpy": floor, "reference": qemu["loadvm"] if qemu else None, "unit": "s",
             "ratio": qemu["loadvm"] / floor if qemu else None, "target": "-",
             "note": why or "a whole process that starts Python, loads Unicorn and exits; where this ratio is "
                            "below 2, the resume target above is out of reach of any molpy process starting on its own "
                            "(the warm server's rows below hand the run to a loaded molpy)"},
            {"name": "Linux: fresh boot to the prompt, `molpy run --fresh` against `qemu-system-ppc -M mac99 -kernel`",
             "molpy": fresh, "reference": qemu["fresh"] if qemu else None, "unit": "s",
             "ratio": qemu["fresh"] / fresh if qemu else None, "target": "-",
             "note": why or "QEMU: OpenBIOS, then the kernel, root an initramfs; molpy: no firmware, root "
                            "ext2 on osi_blk"}]


SPIN_MILLIONS = 300      # iterations of a 3-instruction loop, about a second here


def run() -> list[dict]:
    from molpy.linux.build import cached_vmlinux
    from molpy.linux.rootfs import make_disk

    if cached_vmlinux() is None:
        print("bench_linux: molpy's kernel is not built ('molpy linux build'); no rows", file=sys.stderr)
        return []
    with tempfile.TemporaryDirectory(prefix="molpy-bench-linux-") as tmp:
        disk = os.path.join(tmp, "root.img")
        make_disk(disk, 16)
        home = os.path.join(tmp, "home")
        os.makedirs(home)
        env = process_env(MOLPY_HOME=home)
        session = os.path.join(tmp, "linux.session")
        rc = os.path.join(tmp, "molrc")
        with open(rc, "w") as f:
            f.write(f"ram_size: 64\nkernel: linux\nblkdev: {disk} -rw -boot\nsession_file: {session}\n")
        r = _Run(["-f", rc, "--fresh"], env, tmp)           # untimed: bytecode compiled and cached
        r.until(b"Run /sbin/init", b"\n# ")
        assert r.finish(F12) == 0, r.output[-400:]
        with open(rc, "w") as f:                            # the recipe: read-only session, -cow
            f.write(f"ram_size: 64\nkernel: linux\nblkdev: {disk} -rw -boot -cow\nsession_file: {session}\n"
                    f"session_readonly: yes\ncow_dir: {tmp}\n")
        _resumed(rc, env, tmp)                              # untimed
        resumed = statistics.median(_resumed(rc, env, tmp) for _ in range(5))
        answering = statistics.median(_resumed_answering(rc, env, tmp) for _ in range(5))
        fresh = statistics.median(_fresh(rc, env, tmp) for _ in range(3))
        shell = statistics.median(_spin_in_shell(rc, env, tmp) for _ in range(3))
        warm = _warm(rc, env, tmp)
        _python(env, "import unicorn")                      # untimed
        floor = statistics.median(_python(env, "import unicorn") for _ in range(7))
        python = statistics.median(_python(env, "pass") for _ in range(7))
        timed_run(MachineConfig(), "spin 10")                # warm
        bare = statistics.median(timed_run(MachineConfig(), f"spin {SPIN_MILLIONS}") for _ in range(3))
        try:
            qemu, blocked = qemu_linux.measure(tmp), None
        except qemu_linux.Blocked as e:
            qemu, blocked = None, str(e)
            print(f"bench_linux: QEMU not measured: {blocked}", file=sys.stderr)
    return _qemu_rows(answering, fresh, floor, qemu, blocked) + _warm_rows(warm, python, qemu, blocked) + [{"name": "Linux: `molpy run` resumed to the shell's prompt (read-only session, -cow)",
             "molpy": resumed, "reference": fresh, "unit": "s", "ratio": fresh / resumed,
             "target": ">= 8 (and <= 0.25 s)",
             "note": "reference: the same command booting the kernel fresh (--fresh) to the prompt; "
                     "64 MiB RAM, ext2 root on osi_blk"},
            {"name": f"Linux: a CPU-bound loop in the shell (spin {SPIN_MILLIONS}: {3 * SPIN_MILLIONS}M instructions)",
             "molpy": shell, "reference": bare, "unit": "s", "ratio": bare / shell, "target": ">= 0.8",
             "note": "reference: the same loop bare-metal on molpy (the bench guest, no kernel); the "
                     "shell's figure is from typing the command to the prompt"}]
