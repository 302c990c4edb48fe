"""The ``molpy`` command end to end, as real processes with stdin as a pipe."""

from __future__ import annotations

from molpy.boot import bundled_guest


def test_demo_guest_in_pipe_mode(cli, tmp_path):
    r = cli("run", input=b"echo hi there\nmem\nexit 7\n", cwd=tmp_path)
    out = r.stdout.decode()
    assert r.returncode == 7, r.stderr
    assert "molpy demo guest" in out and "64 MiB RAM" in out
    assert "molpy> echo hi there\nhi there\n" in out
    assert "RAM: 64 MiB" in out
    assert b"Traceback" not in r.stderr


def test_end_of_input_quits(cli, tmp_path):
    r = cli("run", input=b"echo last\n", cwd=tmp_path)
    assert r.returncode == 0
    assert b"last\n" in r.stdout and b"input ended" in r.stderr


def test_molrc_names_guest_ram_and_args(cli, tmp_path):
    rc = tmp_path / "my.molrc"
    rc.write_text(f"ram_size: 24\nbootfile: {bundled_guest('osi_calls')}\nboot_args: 5\n")
    r = cli("run", "-f", str(rc), input=b"q\n")
    assert r.returncode == 5, r.stderr
    assert f"args=[5] r3={24 << 20}" in r.stdout.decode()


def test_local_molrc_and_set_variables(cli, tmp_path):
    (tmp_path / "molrc").write_text("ram_size: ${RAM}\nboot_args: ${ARGS}\n")
    r = cli("run", "-s", "RAM=12", "-s", "ARGS=hello", input=b"exit\n", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert b"12 MiB RAM" in r.stdout and b"boot_args: hello" in r.stdout


def test_guest_fault_report_and_status_3(cli, tmp_path):
    rc = tmp_path / "molrc"
    rc.write_text(f"bootfile: {bundled_guest('fault')}\nboot_args: fpoff\n")
    r = cli("run", "-f", str(rc))
    err = r.stderr.decode()
    assert r.returncode == 3
    assert "guest fault: FP used while disabled" in err and "fadd" in err and "r31" in err
    assert "Traceback" not in err


def test_config_errors_are_one_line_with_file_and_line(cli, tmp_path):
    rc = tmp_path / "bad.molrc"
    rc.write_text("ram_size: 16\nblkdev: x.img -bogus\n")
    r = cli("run", "-f", str(rc))
    assert r.returncode == 2
    assert r.stderr.decode().strip() == f"molpy: error: {rc}:2: blkdev: unknown flag '-bogus' " \
        "(known: -ro -rw -force -cdrom -cd -cdboot -boot -boot1 -whole -removable -drvdisk -ignore -cow)"
    r = cli("run", "-f", str(tmp_path / "missing"))
    assert r.returncode == 2 and b"cannot read" in r.stderr and b"Traceback" not in r.stderr
    r = cli("run", "-s", "novalue")
    assert r.returncode == 2 and b"-s expects KEY=VALUE" in r.stderr


def test_unknown_keys_warn_and_run(cli, tmp_path):
    (tmp_path / "molrc").write_text("pci_proxy: yes\nram_size: 8\n")
    r = cli("run", input=b"exit 1\n", cwd=tmp_path)
    assert r.returncode == 1
    assert b"molpy: warning: keys molpy does not know (ignored): pci_proxy (molrc:1)" in r.stderr


def test_help_and_usage(cli):
    r = cli("--help")
    assert r.returncode == 0 and b"run" in r.stdout
    r = cli("run", "--help")
    assert r.returncode == 0 and b"Ctrl-]" in r.stdout and b"--config" in r.stdout
    r = cli()
    assert r.returncode == 2 and b"usage" in r.stderr
    r = cli("frobnicate")
    assert r.returncode == 2 and b"invalid choice" in r.stderr


def test_check_a_molrc_without_running(cli, tmp_path):
    disk = tmp_path / "d.img"
    disk.write_bytes(bytes(4096))
    rc = tmp_path / "molrc"
    rc.write_text(f"ram_size: 32\nblkdev: {disk} -rw\n")
    r = cli("run", "-f", str(rc), "--check")
    assert r.returncode == 0 and b"ok: 32 MiB RAM, 1 disk(s)" in r.stdout and not r.stderr
    disk.unlink()
    r = cli("run", "-f", str(rc), "--check")
    assert r.returncode == 2 and r.stderr.count(b"\n") == 1 and b"does not exist" in r.stderr
