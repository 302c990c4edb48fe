"""QEMU's PowerMac (mac99) running the same kernel tree and userland as molpy's Linux
benchmark: Debian's linux-source-6.1 with guest/linux's patches, configured with
molpy.config plus qemu-mac99.config (the ``qemu-mac99`` variant of molpy/linux/build.py:
a separate vmlinux, so the kernel molpy's tests boot does not change), and molpy's shell
as /init in an initramfs (molpy/linux/rootfs.py ``make_initramfs``).

Timed as whole ``qemu-system-ppc`` processes on a pty, as bench_linux times ``molpy run``:
a fresh boot (OpenBIOS, then the kernel) to the shell's ``# ``; then ``savevm`` over QMP
at the prompt into a qcow2 drive; then ``qemu-system-ppc ... -loadvm`` from its start,
with a newline typed at once, until the shell's fresh ``# ``.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess

from benchmarks.pty_proc import PtyProcess
from benchmarks.qemu_ref import QEMU, _Qmp

VARIANT = "qemu-mac99"
RAM_MIB = 64
BOOT_ARGS = "console=ttyPZ0"
SNAPSHOT = "linux"


class Blocked(RuntimeError):
    """QEMU could not be measured; the message says why (and what was run)."""


def command(work: str, vmlinux: str, initrd: str, extra: list[str] = ()) -> list[str]:
    """The qemu-system-ppc command line (the same for the boot and the -loadvm). ``-vga none``:
    mac99's default VGA wants a VGA BIOS ROM that Debian's qemu-system-ppc does not carry
    (without it: 'failed to find romfile "vgabios-stdvga.bin"', exit 1)."""
    return [QEMU, "-M", "mac99", "-m", str(RAM_MIB), "-nographic", "-vga", "none", "-kernel", vmlinux, "-initrd", initrd,
            "-append", BOOT_ARGS,
            "-drive", f"file={os.path.join(work, 'snap.qcow2')},if=none,id=snap,format=qcow2",
            "-qmp", f"unix:{os.path.join(work, 'qmp.sock')},server=on,wait=off", *extra]


def _quit(p: PtyProcess, work: str) -> None:
    qmp = _Qmp(os.path.join(work, "qmp.sock"), p.proc)
    qmp.quit()
    p.finish()


def _boot(work: str, vmlinux: str, initrd: str, save: bool = False) -> float:
    p = PtyProcess(command(work, vmlinux, initrd), None, work, "qemu-system-ppc (boot)")
    try:
        took = p.until(b"Run /init", b"\n# ")
        if save:
            qmp = _Qmp(os.path.join(work, "qmp.sock"), p.proc)
            qmp.hmp(f"savevm {SNAPSHOT}")
            qmp.quit()
            p.finish()
        else:
            _quit(p, work)
        return took
    finally:
        p.kill()


def _loadvm(work: str, vmlinux: str, initrd: str) -> float:
    p = PtyProcess(command(work, vmlinux, initrd, ["-loadvm", SNAPSHOT]), None, work,
                   "qemu-system-ppc -loadvm")
    try:
        p.send(b"\n")
        took = p.until(b"\n# ")
        _quit(p, work)
        return took
    finally:
        p.kill()


def measure(tmp: str, boots: int = 3, loads: int = 5) -> dict:
    """Medians of QEMU's fresh boot and -loadvm to the prompt (seconds); Blocked says why not."""
    from molpy.linux.build import cached_vmlinux
    from molpy.linux.rootfs import make_initramfs

    if shutil.which(QEMU) is None or shutil.which("qemu-img") is None:
        raise Blocked(f"{QEMU} or qemu-img not installed")
    vmlinux = cached_vmlinux(variant=VARIANT)
    if vmlinux is None:
        raise Blocked(f"the {VARIANT} kernel is not built (python -m benchmarks.qemu_linux build)")
    work = os.path.join(tmp, "qemu-linux")
    os.makedirs(work, exist_ok=True)
    initrd = os.path.join(work, "initramfs.cpio")
    make_initramfs(initrd)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", os.path.join(work, "snap.qcow2"), "64M"],
                   check=True)
    try:
        _boot(work, str(vmlinux), initrd, save=True)                   # untimed: warms the caches
        fresh = statistics.median(_boot(work, str(vmlinux), initrd) for _ in range(boots))
        _loadvm(work, str(vmlinux), initrd)                            # untimed
        loadvm = statistics.median(_loadvm(work, str(vmlinux), initrd) for _ in range(loads))
    except RuntimeError as e:
        raise Blocked(f"{' '.join(command(work, str(vmlinux), initrd))}: {e}") from None
    return {"fresh": fresh, "loadvm": loadvm}


def main(argv: list[str] | None = None) -> int:
    """``python -m benchmarks.qemu_linux build``: build (or find) the variant's vmlinux."""
    import argparse
    import sys

    from molpy.linux import build

    ap = argparse.ArgumentParser(description="build the qemu-mac99 variant of molpy's kernel (cached)")
    ap.add_argument("action", choices=["build"])
    ap.add_argument("-j", "--jobs", type=int, default=2)
    args = ap.parse_args(argv)
    try:
        print(build.build(lambda line: print(f"qemu-mac99 kernel: {line}", file=sys.stderr, flush=True),
                          jobs=max(1, args.jobs), variant=VARIANT))
    except build.BuildError as e:
        print(f"qemu-mac99 kernel: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
