"""Disk formats (issue 18 item 15): a container image given as a blkdev is refused, naming
its format and -raw; a raw disk layout (APM, HFS) attaches and is named; ``img info`` names
what it found. Every file here is made by the tool that owns its format: qemu-img, molpy
itself, parted/hfsutils."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from molpy.config import BlkdevSpec
from molpy.console import BufferConsole
from molpy.drivers import formats
from molpy.drivers.block import BlockError
from molpy.drivers.demo_disk import make_demo_disk
from molpy.drivers.disks import open_blkdev
from molpy.drivers.overlays import overlay_name
from molpy.drivers.raw import create_image
from molpy.hfsdisk import make_boot_disk, missing_tools
from molpy.machine import Machine, MachineConfig, Stop

QEMU_IMG = shutil.which("qemu-img")
needs_qemu_img = pytest.mark.skipif(QEMU_IMG is None, reason="qemu-img is not installed")
MiB = 1 << 20


def qemu_img(path: Path, fmt: str, *options: str) -> Path:
    args = [QEMU_IMG, "create", "-q", "-f", fmt, *(("-o", ",".join(options)) if options else ()),
            str(path), "4M"]
    subprocess.run(args, check=True, capture_output=True, timeout=60)
    return path


def molpy_overlay(tmp: Path, cli) -> Path:
    """The overlay a real -cow run leaves behind, with one sector written."""
    disk = tmp / "base.img"
    create_image(str(disk), 4 * MiB)
    (tmp / "cow").mkdir()
    rc = tmp / "cow.molrc"
    rc.write_text(f"ram_size: 16\ncow_dir: {tmp / 'cow'}\nblkdev: {disk} -rw -cow\n")
    r = cli("run", "-f", str(rc), input=b"write 0 3 changed\nexit 0\n")
    assert r.returncode == 0, r.stderr
    return tmp / "cow" / overlay_name(str(disk))


def molpy_session(tmp: Path, cli) -> Path:
    """A session molpy saved of the demo guest at its prompt."""
    disk = tmp / "sdisk.img"
    make_demo_disk(disk, 4 * MiB)
    session = tmp / "saved.session"
    m = Machine(MachineConfig(ram_mib=16, blkdevs=[BlkdevSpec(path=str(disk), readonly=False)],
                              session_file=str(session)), BufferConsole())
    try:
        m.boot()
        assert m.run(seconds=0.3) is Stop.TIMEOUT
        m.save_session()
    finally:
        m.close()
    return session


def raw_image(tmp: Path, cli) -> Path:
    r = cli("img", "create", str(tmp / "plain.img"), "4M")
    assert r.returncode == 0, r.stderr
    return tmp / "plain.img"


def demo_disk(tmp: Path, cli) -> Path:
    make_demo_disk(tmp / "demo.img", 4 * MiB)
    return tmp / "demo.img"


def hfs_volume(tmp: Path, cli) -> Path:
    path = raw_image(tmp, cli)
    subprocess.run(["hformat", "-l", "plain volume", str(path)], check=True, capture_output=True,
                   timeout=60, env={**os.environ, "HOME": str(tmp)})    # hfsutils keeps ~/.hcwd
    return path


def apm_hfs_boot_disk(tmp: Path, cli) -> Path:
    make_boot_disk(str(tmp / "boot.img"), 8 * MiB)
    return tmp / "boot.img"


def vmdk_flat_extent(tmp: Path, cli) -> Path:
    qemu_img(tmp / "flat.vmdk", "vmdk", "subformat=monolithicFlat")
    return tmp / "flat-flat.vmdk"


def qemu(fmt: str, *options: str):
    return lambda tmp, cli: qemu_img(tmp / f"image.{fmt}", fmt, *options)


no_hfs_tools = pytest.mark.skipif(bool(missing_tools()), reason="parted/hfsutils are not installed")
no_hformat = pytest.mark.skipif(shutil.which("hformat") is None, reason="hfsutils is not installed")

# (id, maker, the probe's name, is it a container, words of its description)
FORMATS = [
    pytest.param(qemu("qcow2"), "qcow2", True, "qcow2 image (QEMU, version 3)", id="qcow2",
                 marks=needs_qemu_img),
    pytest.param(qemu("qcow2", "compat=0.10"), "qcow2", True, "version 2", id="qcow2-v2",
                 marks=needs_qemu_img),
    pytest.param(qemu("qcow"), "qcow", True, "qcow image", id="qcow", marks=needs_qemu_img),
    pytest.param(qemu("qed"), "qed", True, "QED image", id="qed", marks=needs_qemu_img),
    pytest.param(qemu("vmdk"), "vmdk", True, "VMDK sparse image", id="vmdk", marks=needs_qemu_img),
    pytest.param(qemu("vmdk", "subformat=monolithicFlat"), "vmdk", True, "VMDK descriptor",
                 id="vmdk-descriptor", marks=needs_qemu_img),
    pytest.param(qemu("vdi"), "vdi", True, "VDI image", id="vdi", marks=needs_qemu_img),
    pytest.param(qemu("vhdx"), "vhdx", True, "VHDX image", id="vhdx", marks=needs_qemu_img),
    pytest.param(qemu("vpc"), "vpc", True, "VHD image", id="vpc", marks=needs_qemu_img),
    pytest.param(qemu("parallels"), "parallels", True, "Parallels image", id="parallels",
                 marks=needs_qemu_img),
    pytest.param(molpy_overlay, "molpy-overlay", True, "molpy overlay", id="molpy-overlay"),
    pytest.param(molpy_session, "molpy-session", True, "molpy session file", id="molpy-session"),
    pytest.param(raw_image, "raw", False, "raw disk image", id="raw"),
    pytest.param(demo_disk, "raw", False, "raw disk image", id="demo-disk"),
    pytest.param(qemu("raw"), "raw", False, "raw disk image", id="qemu-raw", marks=needs_qemu_img),
    pytest.param(vmdk_flat_extent, "raw", False, "raw disk image", id="vmdk-flat-extent",
                 marks=needs_qemu_img),
    pytest.param(hfs_volume, "hfs", False, "raw HFS volume", id="hfs", marks=no_hformat),
    pytest.param(apm_hfs_boot_disk, "apm", False, "Apple partition map", id="apm-hfs-boot-disk",
                 marks=no_hfs_tools),
]


def molrc(tmp: Path, disk: Path, flags: str) -> Path:
    rc = tmp / "probe.molrc"
    rc.write_text(f"ram_size: 16\ncow_dir: {tmp}\nblkdev: {disk} {flags}\n")
    return rc


def one_line(r) -> str:
    err = r.stderr.decode()
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("make, name, container, words", FORMATS)
def test_every_format_is_named_and_only_containers_are_refused(make, name, container, words,
                                                               tmp_path, cli):
    disk = make(tmp_path, cli)
    found = formats.probe_path(str(disk))
    assert (found.name, found.container) == (name, container) and words in found.description

    r = cli("img", "info", str(disk))
    assert r.returncode == 0 and f"format:    {name}: ".encode() in r.stdout, r.stdout
    assert (b"not a raw disk" in r.stdout) == container

    before = disk.read_bytes()
    rc = molrc(tmp_path, disk, "-rw")
    check = cli("run", "-f", str(rc), "--check")
    if not container:
        assert check.returncode == 0, check.stderr
        return
    run = cli("run", "-f", str(rc), input=b"write 0 0 oops\nexit 0\n")
    for r in (check, run):
        err = one_line(r)
        assert r.returncode == 2 and str(disk) in err and words in err and "add -raw" in err, err
    with pytest.raises(BlockError, match="add -raw"):          # the library's open refuses too
        open_blkdev(BlkdevSpec(path=str(disk), readonly=False, source="test"), str(tmp_path))
    assert disk.read_bytes() == before
    assert cli("run", "-f", str(molrc(tmp_path, disk, "-rw -raw")), "--check").returncode == 0


@pytest.mark.parametrize("make", [pytest.param(p.values[0], marks=p.marks, id=p.id)
                                  for p in FORMATS if not p.values[2]])
def test_raw_layouts_attach_and_the_guest_reads_them(make, tmp_path, cli):
    disk = make(tmp_path, cli)
    first = disk.read_bytes()[:16]
    r = cli("run", "-f", str(molrc(tmp_path, disk, "-ro")), input=b"read 0 0\nexit 0\n")
    assert r.returncode == 0, r.stderr
    assert " ".join(f"{b:02x}" for b in first).encode() in r.stdout


@needs_qemu_img
def test_raw_flag_serves_a_qcow2_as_its_bytes(tmp_path, cli):
    disk = qemu_img(tmp_path / "q.qcow2", "qcow2")
    r = cli("run", "-f", str(molrc(tmp_path, disk, "-ro -raw")), input=b"read 0 0\nexit 0\n")
    assert r.returncode == 0 and b"000: 51 46 49 fb" in r.stdout, r.stderr


@needs_qemu_img
def test_a_cow_line_on_a_container_is_refused_before_any_overlay(tmp_path, cli):
    disk = qemu_img(tmp_path / "q.qcow2", "qcow2")
    (tmp_path / "cow").mkdir()
    rc = tmp_path / "cow.molrc"
    rc.write_text(f"ram_size: 16\ncow_dir: {tmp_path / 'cow'}\nblkdev: {disk} -rw -cow\n")
    r = cli("run", "-f", str(rc), input=b"exit 0\n")
    assert r.returncode == 2 and "qcow2" in one_line(r)
    assert not list((tmp_path / "cow").iterdir())
    with pytest.raises(BlockError, match="qcow2"):
        open_blkdev(BlkdevSpec(path=str(disk), readonly=False, cow=True, source="test"),
                    str(tmp_path / "cow"))
    assert not list((tmp_path / "cow").iterdir())


def test_the_probe_reads_one_block_whatever_the_size(tmp_path, monkeypatch):
    disk = tmp_path / "big.img"
    create_image(str(disk), 16 << 30)                       # sparse 16 GiB
    reads = []
    real = os.pread

    def pread(fd, n, offset):
        reads.append((n, offset))
        return real(fd, n, offset)

    monkeypatch.setattr(formats.os, "pread", pread)
    assert formats.probe_path(str(disk)) is formats.RAW
    assert reads == [(formats.PROBE_BYTES, 0)]


def test_a_short_or_unreadable_file_is_raw_or_unknown(tmp_path):
    assert formats.probe_bytes(b"") is formats.RAW
    assert formats.probe_bytes(b"QFI") is formats.RAW
    assert formats.probe_bytes(b"QFI\xfb").name == "qcow2"        # a truncated header is still one
    os.mkfifo(tmp_path / "fifo")
    assert formats.probe_path(str(tmp_path / "fifo")) is None      # never read, never blocks
    assert formats.probe_path(str(tmp_path / "absent")) is None


def test_molpys_own_magics_are_the_probes():
    from molpy.drivers.cow import MAGIC as COW
    from molpy.drivers.digest_cache import CACHE_MAGIC
    from molpy.emulation.session import MAGIC as SESSION

    for magic, name in ((COW, "molpy-overlay"), (SESSION, "molpy-session"),
                        (CACHE_MAGIC, "molpy-digests")):
        assert formats.probe_bytes(magic + bytes(4088)).name == name
