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
        "(known: -ro -rw -force -cdrom -cd -cdboot -boot -boot1 -whole -removable -drvdisk -ignore -cow -raw)"
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


def test_check_lists_every_problem_a_run_would_meet(cli, tmp_path):
    disk = tmp_path / "d.img"
    disk.write_bytes(bytes(1 << 20))
    folder = tmp_path / "a-dir"
    folder.mkdir()
    not_elf = tmp_path / "notes.txt"
    not_elf.write_text("hello\n")
    cases = {f"bootfile: {folder}": "bootfile", "bootfile: /dev/null": "bootfile /dev/null is a character device",
             f"bootfile: {not_elf}": "not an ELF file", f"blkdev: {folder} -rw": "is a directory, not a disk image",
             f"blkdev: {disk} -rw\nblkdev: {disk} -ro": "is listed twice",
             f"cow_dir: {tmp_path / 'nope'}\nblkdev: {disk} -cow": "cow_dir",
             f"session_file: {folder}": "is a directory, not a session file"}
    for line, needle in cases.items():                  # one at a time: one line each, run and --check
        rc = tmp_path / "molrc"
        rc.write_text(f"ram_size: 16\n{line}\n")
        for extra in (("--check",), ()):
            r = cli("run", "-f", str(rc), *extra, input=b"exit 5\n", cwd=tmp_path)
            err = r.stderr.decode()
            if not extra and "bootfile" in line and "/dev/null" not in line and str(folder) not in line:
                assert r.returncode == 2 and "not an ELF file" in err, err   # run reads the ELF as it boots
                continue
            assert r.returncode == 2 and err.count("\n") == 1 and needle in err, (line, extra, err)
            assert "does not exist" not in err or "cow_dir" in needle, err
    rc.write_text("ram_size: 16\n" + "\n".join(cases) + "\n")    # all at once: --check lists them all
    r = cli("run", "-f", str(rc), "--check", cwd=tmp_path)
    lines = r.stderr.decode().splitlines()
    assert r.returncode == 2 and len(lines) >= 6 and all(x.startswith("molpy: error: ") for x in lines), lines
    r = cli("run", "-f", str(rc), cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.count(b"\n") == 1 and b"more: 'molpy run --check' lists them" in r.stderr
    assert not (tmp_path / "nope").exists()


def test_check_finds_a_session_that_no_longer_matches_its_disk(cli, tmp_path):
    from test_session import molrc, saved_at_prompt

    rc = molrc(tmp_path, readonly=True, cow=True)
    saved_at_prompt(rc)
    r = cli("run", "-f", str(rc), "--check")
    assert r.returncode == 0, r.stderr
    disk = tmp_path / "disk.img"
    with open(disk, "r+b") as f:
        f.write(b"changed")
    r = cli("run", "-f", str(rc), "--check")
    assert r.returncode == 2 and b"session_file" in r.stderr and b"disk.img" in r.stderr, r.stderr
    disk.unlink()
    r = cli("session", "verify", str(tmp_path / "s.session"), "-f", str(rc))
    assert r.returncode == 1 and b"is missing" in r.stdout and not disk.exists(), r.stdout


def test_a_missing_cow_dir_is_refused_not_created(cli, tmp_path):
    disk = tmp_path / "d.img"
    disk.write_bytes(bytes(1 << 20))
    rc = tmp_path / "molrc"
    rc.write_text(f"ram_size: 16\ncow_dir: {tmp_path / 'typo' / 'cow'}\nblkdev: {disk} -cow\n")
    r = cli("run", "-f", str(rc), input=b"exit 0\n")
    assert r.returncode == 2 and r.stderr.count(b"\n") == 1 and b"cow_dir" in r.stderr and b"does not exist" in r.stderr
    assert not (tmp_path / "typo").exists()
    (tmp_path / "typo").mkdir()
    rc.write_text(f"ram_size: 16\ncow_dir: {tmp_path / 'typo'}\nblkdev: {disk} -cow\n")
    r = cli("run", "-f", str(rc), input=b"exit 6\n")
    assert r.returncode == 6, r.stderr


def test_output_closed_before_a_command_writes(tmp_path):
    """`molpy session info FILE | head -4` and the like: no traceback, the pipe's status."""
    import os
    import subprocess
    import sys

    from test_session import molrc, saved_at_prompt

    session = saved_at_prompt(molrc(tmp_path, readonly=True, cow=False))
    for args in (("session", "info", str(session)), ("--help",), ("run", "--help")):
        r, w = os.pipe()
        os.close(r)                                   # the reader is gone before molpy writes
        proc = subprocess.run([sys.executable, "-m", "molpy", *args], stdout=w, stderr=subprocess.PIPE,
                              timeout=30)
        os.close(w)
        assert proc.returncode == 141 and proc.stderr == b"", (args, proc.returncode, proc.stderr)


def test_commands_started_with_closed_standard_files(tmp_path):
    """stdout closed: the next file molpy opens must not become the guest's output."""
    import subprocess
    import sys

    disk = tmp_path / "d.img"
    disk.write_bytes(bytes(1 << 20))
    rc = tmp_path / "molrc"
    rc.write_text(f"ram_size: 16\nblkdev: {disk} -rw\n")
    proc = subprocess.run(f"{sys.executable} -m molpy run -f {rc} >&-", shell=True, input=b"help\nexit 4\n",
                          stderr=subprocess.PIPE, timeout=30)
    assert proc.returncode == 4, proc.stderr
    assert disk.read_bytes() == bytes(1 << 20)


def test_settings_a_resumed_session_cannot_honour_are_named(cli, tmp_path):
    from test_session import molrc, saved_at_prompt

    rc = molrc(tmp_path, readonly=True, cow=True)             # ram_size: 32
    saved_at_prompt(rc)
    r = cli("run", "-f", str(rc), "-s", "ram_size=128", "-s", "boot_args=hello", input=b"mem\nexit 3\n")
    out = r.stdout.decode()
    assert r.returncode == 3, r.stderr
    assert "molpy: not used by the resumed session: -s ram_size=128 (the session has 32 MiB of RAM), " \
           "-s boot_args=hello (the guest is already running); --fresh boots with them\n" in out, out
    assert "RAM: 32 MiB" in out
    r = cli("run", "-f", str(rc), "-s", "ram_size=32", input=b"exit 3\n")
    assert r.returncode == 3 and b"not used" not in r.stdout
