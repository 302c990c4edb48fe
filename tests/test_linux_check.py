"""``molpy run --check`` validates kernel:, initrd: and dtb: as a Linux boot reads them
(issue 20, item 3), and a run refuses a FIFO or folder there before it opens anything.

A PowerPC ELF stands in for a kernel here (the demo guest: the checks are the boot's own,
molpy/linux/boot.py plan_kernel), so these tests need no kernel build."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from molpy.boot import demo_guest
from molpy.linux.boot import make_fdt


def _rc(tmp: Path, lines: str) -> Path:
    rc = tmp / "molrc"
    rc.write_text(f"ram_size: 16\nsession_file: {tmp / 's.session'}\n{lines}")
    return rc


def _kernel(tmp: Path) -> Path:
    path = tmp / "vmlinux"
    shutil.copyfile(demo_guest(), path)
    return path


def _one_error(r, *words: str) -> None:
    err = r.stderr.decode()
    assert r.returncode == 2 and "Traceback" not in err, err
    for w in words:
        assert w in err, err


def test_a_kernel_that_reads_as_a_boot_reads_it_passes(tmp_path, cli):
    k = _kernel(tmp_path)
    initrd = tmp_path / "initrd"
    initrd.write_bytes(b"\x00" * 4096)
    dtb = tmp_path / "tree.dtb"
    dtb.write_bytes(make_fdt(16 << 20, "console=hvc0", None, None))
    r = cli("run", "--check", "-f", str(_rc(tmp_path, f"kernel: {k}\ninitrd: {initrd}\ndtb: {dtb}\n")))
    assert r.returncode == 0, r.stderr.decode()


@pytest.mark.parametrize("case", ["missing", "not-elf", "host-elf", "initrd-too-big", "dtb-no-magic",
                                  "initrd-without-kernel", "kernel-not-built"])
def test_a_bad_kernel_setting_is_named_in_one_line(tmp_path, cli, case, monkeypatch):
    k = _kernel(tmp_path)
    big = tmp_path / "big.initrd"
    with open(big, "wb") as f:
        f.truncate(32 << 20)                          # more than the 16 MiB of RAM
    bad_dtb = tmp_path / "bad.dtb"
    bad_dtb.write_bytes(b"not a tree")
    text = tmp_path / "notes.txt"
    text.write_text("hello\n")
    lines, words = {
        "missing": (f"kernel: {tmp_path / 'nope'}\n", ["nope", "no such file"]),
        "not-elf": (f"kernel: {text}\n", ["kernel", "not an ELF"]),
        "host-elf": (f"kernel: {os.path.realpath(shutil.which('true'))}\n", ["not a 32-bit big-endian PowerPC"]),
        "initrd-too-big": (f"kernel: {k}\ninitrd: {big}\n", ["big.initrd", "do not fit in RAM"]),
        "dtb-no-magic": (f"kernel: {k}\ndtb: {bad_dtb}\n", ["bad.dtb", "not a flattened device tree"]),
        "initrd-without-kernel": (f"initrd: {big}\n", ["initrd", "no kernel: boots it"]),
        "kernel-not-built": ("kernel: linux\n", ["kernel: linux: not built yet"]),
    }[case]
    env = {"MOLPY_LINUX_CACHE": str(tmp_path / "no-cache")} if case == "kernel-not-built" else None
    _one_error(cli("run", "--check", "-f", str(_rc(tmp_path, lines)), env=env), *words)


@pytest.mark.parametrize("key", ["kernel", "initrd", "dtb"])
@pytest.mark.parametrize("kind", ["fifo", "folder"])
def test_a_special_file_as_a_linux_input_is_refused_before_it_is_opened(tmp_path, cli, key, kind):
    """A run (not only --check): a FIFO nobody writes would block the boot's read forever."""
    special = tmp_path / "special"
    os.mkfifo(special) if kind == "fifo" else special.mkdir()
    lines = f"{key}: {special}\n" + ("" if key == "kernel" else f"kernel: {_kernel(tmp_path)}\n")
    r = cli("run", "--fresh", "-f", str(_rc(tmp_path, lines)), input=b"")
    _one_error(r, key, "special is", "a FIFO" if kind == "fifo" else "a directory")
