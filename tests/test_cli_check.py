"""`molpy run --check` of a plain molrc lists what molpy will use; molrc.sample's own disk."""

from __future__ import annotations

import os
from pathlib import Path

from molpy.boot import bundled_guest
from test_terminal import Pty

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "molrc.sample"
F12 = b"\x1b[24~"


def test_check_of_a_plain_molrc_lists_what_molpy_will_use(cli, tmp_path):
    """Found: a plain molrc's --check printed one summary line; README says it lists."""
    disk, cd = tmp_path / "hd.img", tmp_path / "cd.iso"
    disk.write_bytes(bytes(1 << 20))
    cd.write_bytes(bytes(1 << 20))
    (tmp_path / "cow").mkdir()
    guest = bundled_guest("osi_calls")
    (tmp_path / "disks.rc").write_text(f"blkdev: {disk} -rw -cow -boot\nblkdev: {cd} -cd\n")
    rc = tmp_path / "molrc"
    rc.write_text(f"ram_size: 24\nbootfile: {guest}\nboot_args: 5\ncpu: 7400\ncow_dir: {tmp_path / 'cow'}\n"
                  f"session_file: {tmp_path / 's.session'}\nsession_readonly: yes\ninclude disks.rc\n")
    r = cli("run", "-f", str(rc), "--check")
    assert r.returncode == 0 and not r.stderr, r.stderr
    lines = r.stdout.decode().splitlines()
    assert lines == [
        f"molrc: {rc}",
        f"included: {tmp_path / 'disks.rc'}",
        f"RAM: 24 MiB ({rc}:1)",
        f"guest: {guest} (bootfile at {rc}:2)",
        f"boot_args: 5 ({rc}:3)",
        f"CPU: 7400 ({rc}:4)",
        f"disk: {disk} -rw -cow -boot: copy-on-write, boot disk (blkdev at {tmp_path / 'disks.rc'}:1)",
        f"disk: {cd} -cd: read-only, CD-ROM (blkdev at {tmp_path / 'disks.rc'}:2)",
        f"cow_dir: {tmp_path / 'cow'} ({rc}:5)",
        f"session file: {tmp_path / 's.session'} (read-only: it resumes any number of times; none saved "
        f"yet; session_file at {rc}:6)",
        f"{rc}: ok: 24 MiB RAM, 2 disk(s), session {tmp_path / 's.session'}",
    ], lines


def test_check_lists_for_every_kind_of_config(cli, tmp_path, molpy_home):
    """The class: the built-in config, a minimal molrc and one with problems all get the list."""
    r = cli("run", "--check", cwd=tmp_path)                     # no ./molrc: the built-in config
    assert r.returncode == 0, r.stderr
    lines = r.stdout.decode().splitlines()
    assert lines[0] == "molrc: none (the built-in config)" and "guest: the bundled demo guest (molpy default)" in lines
    assert f"disk: {molpy_home / 'demo.img'} -rw -boot: read-write, boot disk (blkdev at <built-in default>:6) " \
           f"(made at the first run: a demo disk)" in lines, lines
    assert not (molpy_home / "demo.img").exists()               # --check makes nothing
    rc = tmp_path / "bare"
    rc.write_text("ram_size: 16\n")
    lines = cli("run", "-f", str(rc), "--check").stdout.decode().splitlines()
    assert lines == [f"molrc: {rc}", f"RAM: 16 MiB ({rc}:1)", "guest: the bundled demo guest (molpy default)",
                     "CPU: 750 (molpy default)", "disks: none",
                     "session file: none (F12 saves nothing; set session_file to save sessions)",
                     f"{rc}: ok: 16 MiB RAM, 0 disk(s), session none"], lines
    rc.write_text(f"ram_size: 16\nblkdev: {tmp_path / 'gone.img'} -rw\n")
    r = cli("run", "-f", str(rc), "--check")
    assert r.returncode == 2 and b"does not exist" in r.stderr
    assert f"disk: {tmp_path / 'gone.img'} -rw: read-write (blkdev at {rc}:2) (missing)" in r.stdout.decode()


def test_the_sample_recipe_leaves_the_built_in_session_alone(cli, tmp_path, molpy_home):
    """Found: molrc.sample shared demo.img with the built-in config, so running the sample
    made plain `molpy run` refuse its own default session until --fresh."""
    t = Pty("run", cwd=tmp_path)                                 # the built-in config: F12 saves
    try:
        t.read_until(b"molpy> ")
        t.send(F12)
        t.read_until(b"session saved to")
        assert t.wait() == 0
    finally:
        t.close()
    session = molpy_home / "default.session"
    demo = (molpy_home / "demo.img").read_bytes()
    r = cli("run", "-f", str(SAMPLE), input=b"exit 5\n", cwd=tmp_path)      # README: molpy run -f molrc.sample
    assert r.returncode == 5 and b"boot count: 1" in r.stdout, r.stderr
    assert (molpy_home / "sample.img").exists() and (molpy_home / "demo.img").read_bytes() == demo
    assert cli("session", "verify", str(session), cwd=tmp_path).returncode == 0
    r = cli("run", input=b"exit 6\n", cwd=tmp_path)             # plain `molpy run` resumes its session
    assert r.returncode == 6 and b"molpy: resumed session" in r.stdout, (r.stdout, r.stderr)


def test_demo_disks_are_made_only_at_their_own_names(cli, tmp_path, molpy_home):
    """Only the two demo names in molpy's data directory are made; any other missing disk is an error."""
    for name in ("other.img", "sample.img.bak"):
        rc = tmp_path / "molrc"
        rc.write_text(f"ram_size: 16\nblkdev: {molpy_home / name} -rw\n")
        r = cli("run", "-f", str(rc), input=b"exit 0\n")
        assert r.returncode == 2 and b"does not exist" in r.stderr, r.stderr
        assert not (molpy_home / name).exists()
    os.makedirs(tmp_path / "elsewhere")
    rc.write_text(f"ram_size: 16\nblkdev: {tmp_path / 'elsewhere' / 'sample.img'} -rw\n")
    r = cli("run", "-f", str(rc), input=b"exit 0\n")
    assert r.returncode == 2 and not (tmp_path / "elsewhere" / "sample.img").exists()
