"""gdb-multiarch against Linux booting on molpy: vmlinux symbols, `bt`, the MMU on.

A real molpy process boots molpy's cached kernel (`molpy linux build`) from a fresh ext2
root (`molpy img linux`'s make_disk) with the stub waiting; a real gdb in batch mode
breaks at start_kernel (reached after head_book3s_32.S turns translation on), then at the
entry of ksys_write, which the first write(2) of /sbin/init reaches: its "# " prompt.
Every wait is on a condition (the stub's line, gdb's exit, the guest's output); no sleeps.
"""

from __future__ import annotations

import os
import re
import select
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from molpy.linux.build import cached_vmlinux
from molpy.linux.rootfs import make_disk

REPO = Path(__file__).resolve().parent.parent
GDB = shutil.which("gdb-multiarch")
VMLINUX = cached_vmlinux()
TIMEOUT = 180
MSR_PR, MSR_IR, MSR_DR = 0x4000, 0x20, 0x10

pytestmark = [
    pytest.mark.skipif(GDB is None, reason="gdb-multiarch is not installed (.ci/run installs it)"),
    pytest.mark.skipif(VMLINUX is None, reason="molpy's Linux kernel is not built: run 'molpy linux build'"),
]


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


class LinuxUnderGdb:
    """``molpy run -f molrc --fresh --gdb 0`` booting Linux; ``port`` once the stub listens."""

    def __init__(self, tmp: Path) -> None:
        disk = tmp / "root.img"
        make_disk(str(disk), 16)
        rc = tmp / "molrc"
        rc.write_text(f"ram_size: 64\nkernel: linux\nblkdev: {disk} -rw -boot\n"
                      f"session_file: {tmp / 'session'}\n")
        self.proc = subprocess.Popen([sys.executable, "-m", "molpy", "run", "-f", str(rc), "--fresh",
                                      "--gdb", "0"], cwd=tmp, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env())
        self.output = b""
        lines = []
        while True:
            line = self.proc.stderr.readline().decode()
            if not line:
                raise AssertionError(f"molpy ended before listening: {lines}")
            lines.append(line)
            m = re.search(r"gdb stub listening on 127\.0\.0\.1:(\d+); waiting", line)
            if m:
                self.port = int(m.group(1))
                return

    def read_until(self, needle: bytes, after: bytes = b"") -> None:
        """Read the console until ``needle`` appears after ``after`` (bounded by TIMEOUT)."""
        deadline = time.monotonic() + TIMEOUT
        fd = self.proc.stdout.fileno()
        while True:
            start = self.output.find(after)
            if start >= 0 and needle in self.output[start + len(after):]:
                return
            left = deadline - time.monotonic()
            assert left > 0, f"no {needle!r} after {after!r}: {self.output[-2000:]!r}"
            if select.select([fd], [], [], left)[0]:
                chunk = os.read(fd, 65536)
                assert chunk, f"molpy ended before {needle!r}: {self.output[-2000:]!r}"
                self.output += chunk

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.communicate(timeout=TIMEOUT)


def gdb(port: int, *commands: str) -> str:
    args = [GDB, "-batch", "-nx", "-ex", f"target remote :{port}"]
    for c in commands:
        args += ["-ex", c]
    p = subprocess.run(args + [str(VMLINUX)], capture_output=True, timeout=TIMEOUT)
    return p.stdout.decode() + p.stderr.decode()


def _msr(out: str, label: str) -> int:
    m = re.search(rf"^{label} = (\d+)$", out, re.M)
    assert m, f"no {label} in {out}"
    return int(m.group(1))


def test_start_kernel_bt_and_a_syscall_break_with_the_mmu_on(tmp_path):
    m = LinuxUnderGdb(tmp_path)
    try:
        out = gdb(m.port,
                  "p/x $pc", "p $msr",                           # $1, $2: the first instruction
                  "break start_kernel", "continue", "bt", "p $msr",          # $3
                  "delete", "break *ksys_write", "continue", "bt",
                  "info registers msr pc", "p $msr",                          # $4
                  "p $r3", "p $r5", "x/s $r4",                              # $5 $6: write(1, "# ", 2)
                  "p/x *(unsigned int *)$r1",                               # $7: the kernel stack
                  "x/2i $pc", "stepi", "p $pc == ksys_write + 4",            # $8
                  "delete", "detach")
        # the boot: MMU off at the entry, physical 0
        assert "$1 = 0x0" in out, out
        assert _msr(out, "\\$2") & (MSR_IR | MSR_DR) == 0, out
        # start_kernel by the vmlinux's symbol, reached with translation on
        assert re.search(r"Breakpoint 1, 0xc[0-9a-f]{7} in start_kernel \(\)", out), out
        assert re.search(r"^#0\s+0xc[0-9a-f]{7} in start_kernel \(\)", out, re.M), out
        msr = _msr(out, "\\$3")
        assert msr & MSR_IR and msr & MSR_DR and not msr & MSR_PR, out
        # ksys_write from the shell's prompt: kernel mode, MMU on, a backtrace through the
        # syscall path read from the kernel stack, the user buffer read through the page table
        assert re.search(r"Breakpoint 2, 0xc[0-9a-f]{7} in ksys_write \(\)", out), out
        assert re.search(r"^#0\s+0xc[0-9a-f]{7} in ksys_write \(\)", out, re.M), out
        assert re.search(r"^#1\s+0xc[0-9a-f]{7} in system_call_exception \(\)", out, re.M), out
        assert re.search(r"^msr\s+0x[0-9a-f]+", out, re.M), out
        msr = _msr(out, "\\$4")
        assert msr & MSR_IR and msr & MSR_DR and not msr & MSR_PR, out
        assert re.search(r"^pc\s+0xc[0-9a-f]{7}\s+0xc[0-9a-f]{7} <ksys_write>$", out, re.M), out
        assert "$5 = 1" in out and "$6 = 2" in out, out
        assert re.search(r'^0x[0-9a-f]+:\s+"# "', out, re.M), out
        assert re.search(r"^\$7 = 0xc[0-9a-f]{7}$", out, re.M), out      # its back chain
        assert re.search(r"^=> 0xc[0-9a-f]{7} <ksys_write>:\s+\w+", out, re.M), out
        assert "$8 = 1" in out, out                  # one step, through the same translation
        # detached: the write goes on and the prompt reaches molpy's console
        m.read_until(b"# ", after=b"Run /sbin/init")
    finally:
        m.close()
