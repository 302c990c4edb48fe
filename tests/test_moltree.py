"""A MOL installation's config tree (--mol-lib/--mol-etc), read as MOL read it.

Two trees: molpy's own (tests/data/moltree, written from MOL's rules, with disk images
made here), checked against what MOL's parser gives for every session and boot type,
and MOL's real files, read at test time from MOL's source snapshot when it is present.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from molpy.boot import demo_guest
from molpy.config import ConfigError, load_config
from molpy.machine import MachineConfig
from molpy.molrc.keys import GROUPS

TREE = Path(__file__).resolve().parent / "data" / "moltree"
MOL_SNAPSHOT = Path(os.environ.get("MOLPY_MOL_SNAPSHOT", "/work/.mirror/threader+Mac-On-Linux_all/repo"))
DISKS = ["images/drv.img", "images/drvX.img", "disks/hd.img", "disks/cd image.iso", "disks/alt.img",
         "disks/x.img", "disks/linux.img"]


@pytest.fixture
def tree(tmp_path) -> tuple[Path, Path]:
    """The test tree, copied, with its disk images (64 KiB each) and a firmware ELF."""
    shutil.copytree(TREE, tmp_path / "mol")
    lib, etc = tmp_path / "mol" / "lib", tmp_path / "mol" / "etc"
    for disk in DISKS:
        (lib / disk).parent.mkdir(parents=True, exist_ok=True)
        (lib / disk).write_bytes(bytes(64 << 10))
    (lib / "fw").mkdir()
    shutil.copy(demo_guest(), lib / "fw" / "firmware.elf")
    return lib, etc


def read(tree, *sets: str, warn=None) -> tuple:
    lib, etc = tree
    warnings = []
    config = load_config(variables=[tuple(s.split("=", 1)) for s in sets], mol_lib=str(lib), mol_etc=str(etc),
                         warn=warn or warnings.append)
    return config, MachineConfig.from_config(config), warnings


def disks(mconf, lib) -> list[tuple[str, str, bool]]:
    return [(os.path.relpath(s.path, lib), " ".join(s.flags), s.boot) for s in mconf.blkdevs]


CLASSIC = [("images/drv.img", "-ro -drvdisk", False), ("disks/hd.img", "-rw -boot", True),
           ("disks/cd image.iso", "-cd", False)]
X = [("images/drvX.img", "-ro -drvdisk", False), ("disks/x.img", "-rw -boot", True)]
LINUX = [("disks/linux.img", "-rw", False)]


@pytest.mark.parametrize("sets, session, boot_type, ram, expected_disks", [
    ((), 0, "newworld", 48, CLASSIC),
    (("session=0",), 0, "newworld", 48, CLASSIC),
    (("session=1",), 1, "osx", 128, X),
    (("session=2",), 2, "oldworld", 32, CLASSIC),              # ow.rc is read first: its ram_size wins
    (("session=3",), 3, "linux", 64, LINUX),
    (("session=4",), 4, "newworld", 48,                         # -boot1 takes the boot flag from hd.img
     [*CLASSIC[:1], ("disks/hd.img", "-rw -boot", False), CLASSIC[2], ("disks/alt.img", "-rw -boot1", True)]),
    (("session=5",), 5, "osx", 128, X),
    (("session=05",), 5, "osx", 128, X),                         # a number, as MOL's -5
    (("boot_type=newworld",), 0, "newworld", 48, CLASSIC),
    (("boot_type=osx",), 1, "osx", 128, X),
    (("boot_type=oldworld",), 2, "oldworld", 32, CLASSIC),
    (("boot_type=linux",), 3, "linux", 64, LINUX),
    (("altconfig=1",), 4, "newworld", 48,
     [*CLASSIC[:1], ("disks/hd.img", "-rw -boot", False), CLASSIC[2], ("disks/alt.img", "-rw -boot1", True)]),
    (("boot_type=osx", "altconfig=yes"), 5, "osx", 128, X),
    (("boot_type=linux", "session=0"), 0, "linux", 64, LINUX),  # the command line wins over session.map
])
def test_sessions_and_boot_types(tree, sets, session, boot_type, ram, expected_disks):
    lib, etc = tree
    config, m, warnings = read(tree, *sets)
    assert (m.session_id, m.boot_type, m.ram_mib) == (session, boot_type, ram)
    assert disks(m, lib) == expected_disks
    left_out = "".join(w for w in warnings if w.startswith("disks left out as MOL did: "))
    if boot_type == "linux":
        assert m.of_image == str(lib / "fw" / "firmware.elf") and m.oftree == str(lib / "trees" / "linux.tree")
        if not os.path.exists("/dev/hda"):
            assert left_out == f"disks left out as MOL did: /dev/hda (not on this machine, {etc}/linux.rc:3)"
        assert m.pseudofiles == [("yaboot.conf", str(lib / "conf/yaboot.conf")), ("logo", str(lib / "graphics/logo.raw"))]
    elif boot_type == "osx":
        assert m.of_image is None and m.nvram == "/var/lib/mol/nvram.x" and not left_out
    else:
        assert left_out == ("disks left out as MOL did: /nonexistent/molpy-test/hda "
                            f"(not on this machine, {etc}/classic.rc:7)")
        assert m.nvram == f"/var/lib/mol/nvram.{session}"
        assert m.oftree == str(lib / "trees" / ("ow.tree" if boot_type == "oldworld" else "nw.tree"))
        assert m.pseudofiles == [("boot.conf", str(lib / "conf/boot.conf")),
                                 ("boot.conf-1", str(lib / "conf/other.conf")),
                                 ("logo", str(lib / "graphics/logo.raw")), ("yaboot.conf", str(lib / "conf/at.conf"))]
    # one line per group of keys molpy does not serve, never one per key
    groups = [w for w in warnings if w.startswith("not served by molpy")]
    assert len(groups) == len(set(w.split(":")[0] for w in groups)) and len(warnings) <= len(GROUPS) + 2


def test_mols_predefined_variables_and_file_order(tree):
    lib, etc = tree
    config, m, _ = read(tree)
    r = config.resources
    # molrc.sys is read before ${molrc} is defined, so it stays literal there
    assert r["sys_saw"] == [[str(lib), str(etc), str(lib / "bin"), "linux", "${molrc}"]]
    assert r["molrc"] == [[str(etc)]] and r["data"] == [[str(lib)]] and r["var"] == [["/var/lib/mol"]]
    assert config.files == [str(lib / "config/molrc.sys"), str(etc / "session.map"), str(etc / "classic.rc"),
                            str(etc / "common.rc"), str(lib / "config/molrc.post")]
    assert r["session"][0] == ["0"] and config.where("session") == f"{etc}/session.map:5"
    # the grammar's corners, as MOL's parser reads them
    assert r["greeting"] == [["hello", "world"]]
    assert r["quoted"] == [["a", "b c", "d", 'e "f" # g']]
    assert r["no_value"] == [[]] and r["@at_key"] == [["at sign"]]
    assert r["literal"] == [["${nothing}/x"]]
    assert r["later"] == [["${defined_later}"]] and r["uses_later"] == [["yes"]]
    assert r["netdev"] == [["eth0", "-sheep"], ["tun0", "-tun"]]
    assert r["blkdev_mol"] == [["images/drv.img", "-ro -drvdisk"]]   # ${mbflags} is one word
    assert r["ram_size"] == [["48"]]
    assert m.resources == r


def test_command_line_paths_are_relative_to_the_current_folder(tree, tmp_path, monkeypatch):
    lib, _ = tree
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mine.img").write_bytes(bytes(4096))
    _, m, _ = read(tree, "blkdev=mine.img -rw", "session_file=s.session")
    assert (m.blkdevs[1].path, m.blkdevs[1].source) == (str(tmp_path / "mine.img"), "command line")
    assert m.session_file == str(tmp_path / "s.session")


def test_a_disk_named_on_the_command_line_is_never_left_out(tree, cli):
    lib, etc = tree
    _, m, warnings = read(tree, "blkdev=/nonexistent/mine.img -rw")
    assert "/nonexistent/mine.img" in [s.path for s in m.blkdevs]
    assert "/nonexistent/mine.img" not in " ".join(warnings)
    r = cli("run", "--mol-lib", str(lib), "--mol-etc", str(etc), "-s", "blkdev=/nonexistent/mine.img -rw", "--check")
    assert r.returncode == 2 and r.stderr.decode().strip().endswith(
        "disk /nonexistent/mine.img does not exist (blkdev at command line)"), r.stderr


def test_session_must_be_defined(tree):
    lib, etc = tree
    post = lib / "config" / "molrc.post"
    post.write_text(post.read_text().replace("session:\t0\n", ""))
    (etc / "session.map").write_text("# nothing\n")
    with pytest.raises(ConfigError, match=r"session is not defined after .*molrc.post \(MOL needs a session number"):
        read(tree)
    assert read(tree, "session=2")[1].session_id == 2
    with pytest.raises(ConfigError, match=r"^command line: session: 'two' is not a session number"):
        read(tree, "session=two")


def test_parse_errors_name_file_and_line(tree):
    lib, etc = tree
    with open(etc / "common.rc", "a") as f:
        f.write("this is wrong\n")
    with pytest.raises(ConfigError, match=rf"^{etc}/common.rc:\d+: cannot parse 'this'"):
        read(tree)


def test_bad_folders(tree, tmp_path):
    lib, etc = tree
    with pytest.raises(ConfigError, match="--mol-lib /nonexistent: not a folder"):
        load_config(mol_lib="/nonexistent", mol_etc=str(etc))
    with pytest.raises(ConfigError, match="needs both --mol-lib"):
        load_config(mol_lib=str(lib))
    with pytest.raises(ConfigError, match="not both"):
        load_config(tmp_path / "molrc", mol_lib=str(lib), mol_etc=str(etc))


def test_check_lists_what_molpy_will_use(tree, cli):
    lib, etc = tree
    r = cli("run", "--mol-lib", str(lib), "--mol-etc", str(etc), "--check")
    out = r.stdout.decode()
    assert r.returncode == 0 and not r.stderr, r.stderr
    lines = out.splitlines()
    assert f"MOL installation: lib {lib}, etc {etc}, data {lib}" in lines
    assert "session 0, boot type newworld" in lines
    assert f"RAM: 48 MiB ({etc}/classic.rc:3)" in lines
    assert (f"disk: {lib}/images/drv.img -ro -drvdisk: read-only, removable, MOL's driver disk "
            f"(blkdev_mol at {lib}/config/molrc.post:9)") in lines
    assert f"disk: {lib}/disks/hd.img -rw -boot: read-write, boot disk (blkdev at {etc}/classic.rc:6)" in lines
    assert f"disk: {lib}/disks/cd image.iso -cd: read-only, CD-ROM (blkdev at {etc}/classic.rc:8)" in lines
    assert f"firmware: {lib}/fw/firmware.elf (of_image)" in lines
    assert f"nvram: /var/lib/mol/nvram.0{'' if os.path.exists('/var/lib/mol/nvram.0') else ' (missing)'}" in lines
    assert any(line.startswith("disks left out as MOL did: /nonexistent/molpy-test/hda") for line in lines)
    assert "not served by molpy (video): resolution" in lines
    assert "not served by molpy (mouse and keyboard): mouse_dpi" in lines
    assert "not served by molpy (network): netdev" in lines
    assert lines[-1] == f"{etc}: ok: 48 MiB RAM, 3 disk(s), session none"


def test_run_serves_the_trees_disks_with_mols_flags(tree, cli):
    lib, etc = tree
    r = cli("run", "--mol-lib", str(lib), "--mol-etc", str(etc), "-s", "bootfile=" + str(demo_guest()),
            input=b"disks\nexit 0\n")
    out = r.stdout.decode()
    assert r.returncode == 0, r.stderr
    assert "disk 0: 128 sectors (64 KiB) read-only\n" in out              # MOL's driver disk, -ro -drvdisk
    assert "disk 1: 128 sectors (64 KiB) read-write boot\n" in out         # -rw -boot
    assert "disk 2: 128 sectors (64 KiB) read-only cdrom\n" in out         # -cd
    assert "disk 3" not in out
    err = r.stderr.decode()
    assert "molpy: warning: disks left out as MOL did: /nonexistent/molpy-test/hda" in err
    assert "Traceback" not in err


# -- MOL's own files, read from MOL's source snapshot at test time --

MOL_FILES = {"lib/config/molrc.sys": "mol-src/mollib/config/molrc.sys",
             "lib/config/molrc.post": "mol-src/mollib/config/molrc.post",
             **{f"etc/{name}": f"mol-src/Doc/config/{name}" for name in
                ("session.map", "molrc.macos", "molrc.osx", "molrc.linux", "molrc.ow", "molrc.video",
                 "molrc.input", "molrc.net", "molrc.sound")}}


@pytest.fixture(scope="module")
def mol_tree(tmp_path_factory) -> tuple[Path, Path]:
    if not (MOL_SNAPSHOT / "HEAD").exists() or shutil.which("git") is None:
        pytest.skip(f"MOL's source snapshot is not at {MOL_SNAPSHOT} (set MOLPY_MOL_SNAPSHOT to a "
                    f"Mac-On-Linux git directory): MOL's own files cannot be read")
    root = tmp_path_factory.mktemp("mol-real")
    for dest, src in MOL_FILES.items():
        data = subprocess.run(["git", "--git-dir", str(MOL_SNAPSHOT), "show", f"HEAD:{src}"],
                              capture_output=True, check=True).stdout
        (root / dest).parent.mkdir(parents=True, exist_ok=True)
        (root / dest).write_bytes(data)
    return root / "lib", root / "etc"


# MOL's session.map: session -> boot type; with a boot type given, the session it sets
MOL_SESSION_TYPES = {0: "newworld", 1: "osx", 2: "oldworld", 3: "linux", 4: "newworld", 5: "osx"}
MOL_TYPE_SESSION = {"newworld": 0, "osx": 1, "oldworld": 2, "linux": 3}
MOL_RAM = {"newworld": 48, "oldworld": 48, "osx": 128, "linux": 64}


@pytest.mark.parametrize("session", [None, 0, 1, 2, 3, 4, 5])
@pytest.mark.parametrize("boot_type", [None, "newworld", "osx", "oldworld", "linux"])
def test_mols_own_files_load(mol_tree, session, boot_type):
    sets = ([f"session={session}"] if session is not None else []) + ([f"boot_type={boot_type}"] if boot_type else [])
    config, m, warnings = read(mol_tree, *sets)
    want_type = boot_type or MOL_SESSION_TYPES[session or 0]
    assert m.boot_type == want_type
    assert m.session_id == (session if session is not None else MOL_TYPE_SESSION[want_type])
    assert m.ram_mib == MOL_RAM[want_type]
    lib, etc = mol_tree
    considered = {s.split(" (")[0] for s in config.skipped_disks} | {s.path for s in m.blkdevs}
    if want_type == "linux":
        assert "/BK/debian" in considered and m.of_image == str(lib / "drivers/openbios")
        assert ("yaboot", "/BK/yaboot-1.3.7/second/yaboot") in m.pseudofiles
    else:
        assert "/dev/cdrom" in considered
        assert str(lib / ("images/moldiskX.dmg" if want_type == "osx" else "images/moldisk.dmg")) in considered
    groups = [w.split(":")[0] for w in warnings if w.startswith("not served by molpy")]
    assert len(groups) == len(set(groups)) and not any(w.startswith("keys molpy does not know") for w in warnings)
