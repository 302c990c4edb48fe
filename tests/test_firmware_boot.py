"""Booting a guest the way MOL's newworld firmware does, off an HFS disk served by osi_blk.

``minifw`` (guest/tests/minifw.c) makes the firmware's calls in the firmware's order with
molpy's own code and always runs. The last tests run MOL's shipped firmware itself, read
at run time from MOL's source snapshot when it is on this machine (it is not in CI, and
none of MOL's files is in this repository).
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from molpy.boot import bundled_guest
from molpy.config import BlkdevSpec
from molpy.console import BufferConsole
from molpy.hfsdisk import demo_rom, make_boot_disk, missing_tools
from molpy.machine import Machine, MachineConfig, Stop

# Outside CI these tests need Debian's parted and hfsutils; in CI (.ci/run installs them)
# their absence is a failure, never a silent skip.
pytestmark = pytest.mark.skipif(bool(missing_tools()) and not os.environ.get("CI"),
                                reason="parted/hfsutils are not installed (.ci/run installs them)")

SNAPSHOT = Path("/work/.mirror/threader+Mac-On-Linux_all/repo")
FILE_BUF = 0x01000000               # where minifw reads the ROM file

# A firmware's view of the machine: the block driver's node, /chosen, /rom (our own tree).
TREE = """\
{
    (property name          <str>   "device-tree" )
    (property model         <str>   "PowerMac1,1" )
    {
        (property name      <str>   "chosen" )
        (property bootpath  <str>   "" )
    }
    {
        (property name      <str>   "memory" )
        (property reg       <word>  0x0 0x0 )
    }
    {
        (property name      <str>   "rom" )
    }
    {
        (property name      <str>   "pci" )
        {
            (property name  <str>   "pci-bridge" )
            {
                (unit_string 0 )
                (property name        <str>  "mol-blk" )
                (property device_type <str>  "mol-blk" )
                {
                    (unit_string * )
                    (property name    <str>  "disk" )
                }
            }
        }
    }
}
"""
ROMPATH = {"macos_rompath_": [["System Folder/Mac OS ROM"], ["Systemmapp/Mac OS ROM"]]}


@pytest.fixture(scope="module")
def disks(tmp_path_factory):
    d = tmp_path_factory.mktemp("fwdisks")
    boot = str(d / "boot.img")
    make_boot_disk(boot, 16 << 20)
    plain = d / "plain.img"
    plain.write_bytes(bytes(4 << 20))
    tree = d / "oftree.test"
    tree.write_text(TREE)
    return {"boot": boot, "plain": str(plain), "tree": str(tree)}


def minifw(disks, images, keys=b"disks\nexit 3\n", tree=None, **config):
    conf = MachineConfig(ram_mib=64, bootfile=str(bundled_guest("minifw")),
                         oftree=tree or disks["tree"], blkdevs=[BlkdevSpec(disks[i]) for i in images],
                         **config)
    m = Machine(conf, BufferConsole(keys))
    m.boot()
    return m


def out(m) -> str:
    return bytes(m.frontend.output).decode()


def test_minifw_boots_the_demo_off_the_hfs_disk(disks):
    m = minifw(disks, ["plain", "boot"], resources=ROMPATH)
    try:
        assert m.run(seconds=60) is Stop.EXIT, m.fault and m.fault.report()
        text = out(m)
        tree = next(d for d in m.devices if d.kind == "OFTR").tree
    finally:
        m.close()
    assert m.exit_code == 3                                  # the demo's "exit 3"
    assert "init_video: No video display" in text            # FB_INFO answered 1
    assert "nwrom" not in text                               # PSEUDO_FS open answered -1
    assert "Loading 'Mac OS ROM' (System Folder/Mac OS ROM) from 'molpy boot'" in text
    assert "Boot Disk: /pci/pci-bridge/mol-blk@0/disk@1:2 [HFS]" in text
    assert "bless 0" in text and "Starting ELF boot loader at 400000" in text
    assert "molpy demo guest" in text and "64 MiB RAM" in text
    # BLESS_DISK moved the boot hint to the disk the ROM came from
    assert "disk 0: 8192 sectors (4096 KiB) read-only\n" in text
    assert "disk 1: 32768 sectors (16384 KiB) read-only boot\n" in text
    # what the firmware recorded in the tree
    assert tree.find_path(b"/chosen").prop(b"bootpath") == b"/pci/pci-bridge/mol-blk@0/disk@1:2\0"
    size = os.path.getsize(demo_rom())
    assert tree.find_path(b"/rom/macos").prop(b"AAPL,toolbox-image,lzss") == \
        FILE_BUF.to_bytes(4, "big") + size.to_bytes(4, "big")


def test_without_the_resources_the_volume_is_searched(disks):
    m = minifw(disks, ["boot"])
    try:
        assert m.run(seconds=60) is Stop.EXIT
        text = out(m)
    finally:
        m.close()
    assert "Searching molpy boot for a 'Mac OS ROM' file" in text
    assert "Loading 'Mac OS ROM' (search)" in text and m.exit_code == 3


def test_a_published_nwrom_comes_first(disks):
    m = minifw(disks, ["boot"], pseudofiles=[("nwrom", str(demo_rom()))])
    try:
        assert m.run(seconds=60) is Stop.EXIT
        text = out(m)
    finally:
        m.close()
    assert f"nwrom: {os.path.getsize(demo_rom())} bytes from pseudo:,nwrom" in text
    assert "Boot Disk" not in text and "molpy demo guest" in text


def test_no_bootable_disk_and_no_block_node(disks, tmp_path):
    m = minifw(disks, ["plain"], resources=ROMPATH)
    try:
        assert m.run(seconds=60) is Stop.EXIT
        assert m.exit_code == 3 and "No bootable disk was found!" in out(m)
    finally:
        m.close()
    tree = tmp_path / "no-blk.tree"
    tree.write_text(TREE.replace('"mol-blk"', '"other-blk"'))
    m = minifw(disks, ["boot"], tree=str(tree))
    try:
        assert m.run(seconds=60) is Stop.EXIT
        assert m.exit_code == 2 and "MOLBlockDriver node not found" in out(m)
    finally:
        m.close()


def test_the_booted_guest_resumes_from_a_session(disks, tmp_path):
    """F12 after the boot: tree, NVRAM, blessed disk and the running guest all come back."""
    session = str(tmp_path / "fw.session")
    nvram = str(tmp_path / "nvram.img")
    m = minifw(disks, ["plain", "boot"], keys=b"", resources=ROMPATH, nvram=nvram)
    try:
        for _ in range(200):
            m.run(seconds=0.05)
            if out(m).endswith("molpy> "):
                break
        assert out(m).endswith("molpy> ")
        m.save_session(session)
    finally:
        m.close()
    conf = MachineConfig(ram_mib=64, oftree=disks["tree"], nvram=nvram, session_file=session,
                         session_readonly=True,
                         blkdevs=[BlkdevSpec(disks["plain"]), BlkdevSpec(disks["boot"])])
    r = Machine.from_session(session, conf, BufferConsole(b"disks\nexit 4\n"))
    try:
        assert r.run(seconds=30) is Stop.EXIT
        text = out(r)
        tree = next(d for d in r.devices if d.kind == "OFTR").tree
    finally:
        r.close()
    assert r.exit_code == 4
    assert "disk 1: 32768 sectors (16384 KiB) read-only boot" in text
    assert tree.find_path(b"/chosen").prop(b"bootpath") == b"/pci/pci-bridge/mol-blk@0/disk@1:2\0"


# -- MOL's own firmware (read from MOL's snapshot when this machine has it; CI has not) --

def mol_file(tmp: Path, path: str) -> str:
    data = subprocess.run(["git", "-C", str(SNAPSHOT), "show", f"HEAD:{path}"],
                          capture_output=True, check=True).stdout
    out_path = tmp / Path(path).name
    out_path.write_bytes(data)
    return str(out_path)


@pytest.fixture(scope="module")
def mol(tmp_path_factory):
    if not SNAPSHOT.is_dir():
        pytest.skip("MOL's source snapshot (its firmware, oftree.nw, nvram.dist) is not on this "
                    "machine; CI has none")
    tmp = tmp_path_factory.mktemp("mol")
    return {"firmware": mol_file(tmp, "mol-src/mollib/drivers/openbios"),
            "oftree": mol_file(tmp, "mol-src/mollib/oftrees/oftree.nw"),
            "nvram": mol_file(tmp, "mol-src/mollib/nvram/nvram.dist")}


def run_mol_firmware(mol, disks, images, tmp_path, keys=b"disks\nexit 3\n", until: str | None = None):
    """MOL's firmware on molpy; runs until it stops, or until the console ends with ``until``."""
    nvram = str(tmp_path / "nvram.nw")
    shutil.copy(mol["nvram"], nvram)
    conf = MachineConfig(ram_mib=64, oftree=mol["oftree"], nvram=nvram, boot_type="newworld",
                         blkdevs=[BlkdevSpec(disks[i]) for i in images], resources=ROMPATH,
                         of_image=mol["firmware"])
    m = Machine(conf, BufferConsole(keys))
    m.boot(bootfile=mol["firmware"])
    for _ in range(1200 if until else 1):
        stop = m.run(seconds=0.1 if until else 120)
        if stop is not Stop.TIMEOUT or (until and out(m).endswith(until)):
            break
    return m, stop, nvram


def test_mols_firmware_boots_the_demo(mol, disks, tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="molpy.guest"):
        m, stop, nvram = run_mol_firmware(mol, disks, ["plain", "boot"], tmp_path)
    try:
        assert stop is Stop.EXIT, (stop, m.fault and m.fault.report())
        text = out(m)
    finally:
        m.close()
    log = "\n".join(r.getMessage() for r in caplog.records if r.name == "molpy.guest")
    assert "Mac-on-Linux OpenFirmware 0.9.70" in log and "init_video: No video display" in log
    assert "Boot Disk: /pci/pci-bridge/mol-blk@0/disk@1:2 [HFS]" in log
    assert "Starting ELF boot loader" in log
    assert m.exit_code == 3 and "disk 1: 32768 sectors (16384 KiB) read-only boot" in text
    assert open(nvram, "rb").read() == open(mol["nvram"], "rb").read()   # this path never writes it


def test_mols_firmware_without_a_bootable_disk(mol, disks, tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="molpy.guest"):
        m, stop, _ = run_mol_firmware(mol, disks, ["plain"], tmp_path, keys=b"")
    m.close()
    log = "\n".join(r.getMessage() for r in caplog.records if r.name == "molpy.guest")
    assert "No bootable disk was found!" in log
    assert stop is Stop.EXIT and m.exit_code == 0      # MOL's EXIT: r6 (10 here) is not a status


def test_mols_firmware_session_resumes_into_the_guest(mol, disks, tmp_path):
    """F12 at the booted demo: MMU state, firmware memory, tree and NVRAM come back."""
    session = str(tmp_path / "mol.session")
    m, stop, nvram = run_mol_firmware(mol, disks, ["plain", "boot"], tmp_path, keys=b"echo up\n",
                                      until="up\nmolpy> ")
    try:
        assert out(m).endswith("up\nmolpy> "), (stop, out(m)[-300:])
        msr = m.get_state().msr
        bootpath = next(d for d in m.devices if d.kind == "OFTR").tree.find_path(b"/chosen").prop(b"bootpath")
        m.save_session(session)
    finally:
        m.close()
    assert msr & 0x30 == 0x30                          # the client runs with the MMU on
    conf = MachineConfig(ram_mib=64, oftree=mol["oftree"], nvram=nvram, boot_type="newworld",
                         session_file=session, session_readonly=True, resources=ROMPATH,
                         blkdevs=[BlkdevSpec(disks["plain"]), BlkdevSpec(disks["boot"])])
    r = Machine.from_session(session, conf, BufferConsole(b"disks\nexit 6\n"))
    try:
        assert r.run(seconds=60) is Stop.EXIT, r.fault and r.fault.report()
        text = out(r)
        tree = next(d for d in r.devices if d.kind == "OFTR").tree
    finally:
        r.close()
    assert r.exit_code == 6 and "disk 1: 32768 sectors (16384 KiB) read-only boot" in text
    # what the firmware set (disk@0:0 here, though it booted disk 1) is still there
    assert tree.find_path(b"/chosen").prop(b"bootpath") == bootpath == b"/pci/pci-bridge/mol-blk@0/disk@0:0\0"


def test_molpy_run_boots_of_image_and_shows_the_guest_log_with_v(disks, tmp_path):
    """`molpy run` boots MOL's ``of_image`` key (here minifw, our own firmware-like guest),
    and with -v shows what a guest prints through LOG_PUTC (where MOL's firmware talks)."""
    import sys

    def run(rc, *extra):
        return subprocess.run([sys.executable, "-m", "molpy", "run", "-f", str(rc), "--log",
                               str(tmp_path / "log"), *extra], input=b"exit 5\n", capture_output=True,
                              timeout=120)

    rc = tmp_path / "molrc"
    rc.write_text(f"ram_size: 64\nof_image: {bundled_guest('minifw')}\noftree: {disks['tree']}\n"
                  f"blkdev: {disks['boot']}\nmacos_rompath_: \"System Folder/Mac OS ROM\"\n")
    r = run(rc)
    assert r.returncode == 5, r.stderr.decode()
    assert b"Loading 'Mac OS ROM' (System Folder/Mac OS ROM)" in r.stdout and b"molpy demo guest" in r.stdout
    assert b"warning" not in r.stderr, r.stderr.decode()      # every key of this molrc is served
    rc.write_text(f"ram_size: 16\nbootfile: {bundled_guest('osi_calls')}\n")
    for verbose in (True, False):
        r = run(rc, *(["-v"] if verbose else []))
        assert (b"log: hello log 42" in r.stderr) == verbose, r.stderr.decode()
    assert "hello log 42" in (tmp_path / "log").read_text()


@pytest.fixture(scope="module")
def mol_install(tmp_path_factory):
    """MOL's lib and etc trees as MOL installed them (mollib/, Doc/config/), from the snapshot."""
    if not SNAPSHOT.is_dir():
        pytest.skip("MOL's source snapshot is not on this machine; CI has none")
    root = tmp_path_factory.mktemp("mol-install")
    names = subprocess.run(["git", "-C", str(SNAPSHOT), "ls-tree", "-r", "--name-only", "HEAD",
                            "mol-src/mollib", "mol-src/Doc/config"], capture_output=True, check=True,
                           text=True).stdout.split()
    for name in (n for n in names if "/.svn/" not in n):
        dest = root / name.removeprefix("mol-src/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(subprocess.run(["git", "-C", str(SNAPSHOT), "show", f"HEAD:{name}"],
                                        capture_output=True, check=True).stdout)
    (root / "var").mkdir()
    shutil.copy(root / "mollib" / "nvram" / "nvram.dist", root / "var" / "nvram.nw")
    return root


def test_molpy_run_with_mols_installation_boots_the_demo(mol_install, disks):
    """Issue 14's user story on the command line: MOL's config tree, firmware, device tree
    and NVRAM as MOL installed them; the firmware boots molpy's demo off the HFS disk."""
    import sys

    r = subprocess.run([sys.executable, "-m", "molpy", "run", "--mol-lib", str(mol_install / "mollib"),
                        "--mol-etc", str(mol_install / "Doc" / "config"), "-s", f"var={mol_install / 'var'}",
                        "-s", f"blkdev={disks['boot']} -rw", "-v", "--log", str(mol_install / "log")],
                       input=b"disks\nexit 3\n", capture_output=True, timeout=120)
    err = r.stderr.decode()
    assert r.returncode == 3, err
    assert "log: >> Mac-on-Linux OpenFirmware 0.9.70" in err and "Starting ELF boot loader" in err
    assert "disks left out as MOL did: /dev/cdrom" in err              # MOL's default disks
    out = r.stdout.decode()
    assert "molpy demo guest" in out and "read-write boot" in out
