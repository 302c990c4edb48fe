"""HFS boot disks for MOL's firmware: made with parted and hfsutils, read by a guest."""

from __future__ import annotations

import os
import subprocess

import pytest

from guestout import run_to_exit
from molpy.boot import bundled_guest
from molpy.config import BlkdevSpec
from molpy.hfsdisk import demo_rom, make_boot_disk, missing_tools
from molpy.machine import MachineConfig

# Outside CI these tests need Debian's parted and hfsutils; in CI (.ci/run installs them)
# their absence is a failure, never a silent skip.
pytestmark = pytest.mark.skipif(bool(missing_tools()) and not os.environ.get("CI"),
                                reason="parted/hfsutils are not installed (.ci/run installs them)")


def read_disk(disk: str, ram_mib: int = 16) -> tuple[int, list[str]]:
    code, out = run_to_exit(MachineConfig(ram_mib=ram_mib, bootfile=str(bundled_guest("hfscheck")), boot_args="0",
                                          blkdevs=[BlkdevSpec(disk)]))
    return code, out.splitlines()


def test_the_guest_finds_the_map_the_volume_and_the_rom(tmp_path):
    disk = str(tmp_path / "boot.img")
    make_boot_disk(disk, 16 << 20, volume="Test Volume")
    code, out = read_disk(disk)
    assert code == 0, out
    assert out[0] == "ddm block size 512 blocks 32768"
    parts = [line.split() for line in out if line.startswith("part ")]
    assert parts[0][:3] == ["part", "1", "Apple_partition_map"]
    hfs = next(p for p in parts if p[2] == "Apple_HFS")
    assert int(hfs[4]) == 2048 and int(hfs[4]) + int(hfs[5]) == 32768     # 1 MiB to the end
    volume = next(line for line in out if line.startswith("volume "))
    assert volume.startswith("volume Test Volume blessed ")
    blessed = int(volume.split()[-1])
    assert f"dir 2 {blessed} System Folder" in out                 # the blessed folder
    rom_size = os.path.getsize(demo_rom())
    assert f"file {blessed} tbxi chrp {rom_size} Mac OS ROM" in out
    assert f"file {blessed} zsys MACS 0 System" in out
    assert f"file {blessed} FNDR MACS 0 Finder" in out
    assert out[-1] == "rom ELF 400000"                             # linked at 4 MiB


def test_the_rom_on_the_volume_is_the_elf(tmp_path):
    disk = str(tmp_path / "boot.img")
    rom = str(bundled_guest("osi_probe"))
    make_boot_disk(disk, 8 << 20, rom=rom)
    home = tmp_path / "home"
    home.mkdir()
    env = dict(os.environ, HOME=str(home))
    subprocess.run(["hmount", disk, "1"], env=env, check=True, capture_output=True)
    out = tmp_path / "rom.out"
    subprocess.run(["hcopy", "-r", ":System Folder:Mac OS ROM", str(out)], env=env, check=True)
    subprocess.run(["humount"], env=env, check=True)
    assert out.read_bytes() == open(rom, "rb").read()
    code, lines = read_disk(disk)
    assert code == 0 and lines[-1] == "rom ELF 10000"


def test_a_plain_disk_is_not_bootable(tmp_path):
    disk = tmp_path / "plain.img"
    disk.write_bytes(bytes(1 << 20))
    code, out = read_disk(str(disk))
    assert code == 1 and out[-1] == "no Apple partition map (block 0 is not ER)"


def test_img_hfs_command(tmp_path, cli):
    disk = tmp_path / "cli.img"
    r = cli("img", "hfs", str(disk), "--size", "8M")
    assert r.returncode == 0, r.stderr
    assert disk.stat().st_size == 8 << 20
    before = disk.read_bytes()
    r = cli("img", "hfs", str(disk))                    # never over an existing file
    assert r.returncode == 2 and b"already exists" in r.stderr and disk.read_bytes() == before
    r = cli("img", "hfs", str(tmp_path / "x.img"), "--rom", str(disk))
    assert r.returncode == 2 and b"not a 32-bit big-endian PowerPC ELF" in r.stderr
    assert not (tmp_path / "x.img").exists()
    r = cli("img", "hfs", str(tmp_path / "y.img"), "--size", "1M")
    assert r.returncode == 2 and b"4 MiB to 2 GiB" in r.stderr
    r = cli("img", "hfs", str(tmp_path / "z.img"), "--name", "a:b")
    assert r.returncode == 2 and b"without ':'" in r.stderr
    r = cli("img", "hfs", str(tmp_path / "w.img"), env={"PATH": str(tmp_path)})
    assert r.returncode == 2 and b"needs Debian's parted and hfsutils" in r.stderr
    assert not (tmp_path / "w.img").exists()


def test_demo_of_runs_as_molpy_boots_it():
    """The 4 MiB demo also boots without a firmware: its RAM size comes from BOOT_HELPER."""
    code, out = run_to_exit(MachineConfig(ram_mib=24, bootfile=str(demo_rom())), b"mem\nexit 5\n")
    assert "molpy demo guest" in out and "24 MiB RAM" in out and "RAM: 24 MiB" in out
    assert code == 5
