"""The molrc grammar, construct by construct, errors with their file and line."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from molpy.config import (DEFAULT_MOLRC, BlkdevSpec, ConfigError, data_dir, load_config,
                          parse_size)

SAMPLE = Path(__file__).resolve().parent.parent / "molrc.sample"


def load(text: str, variables: dict | None = None, **kw):
    return load_config(text=text, variables=variables, **kw)


def error(text: str, **kw) -> str:
    with pytest.raises(ConfigError) as e:
        load(text, **kw)
    return str(e.value)


def test_keys_comments_quotes_first_wins():
    c = load("# a comment\nram_size: 32   # trailing\n\nboot_args: \"a # b  c\"\n"
             "cpu: '7400'\nram_size: 128\n")
    assert c.get("ram_size") == "32" and c.get_int("ram_size", 0) == 32
    assert c.get("boot_args") == "a # b  c"
    assert c.get("cpu") == "7400"
    assert c.get("bootfile") is None and c.get("bootfile", "x") == "x"
    assert c.where("ram_size") == "<text>:2"


def test_blkdev_accumulates_with_flags(tmp_path):
    rc = tmp_path / "sub" / "molrc"
    rc.parent.mkdir()
    rc.write_text("blkdev: disk.img\nblkdev: /abs/b.img -rw -boot\nblkdev: c.img -rw -cow -force -whole\n"
                  "blkdev: cd.iso -cd\nblkdev: ~/x.img -ro\n")
    c = load_config(rc)
    a, b, cow, cd, home = c.blkdevs
    assert a == BlkdevSpec(path=str(rc.parent / "disk.img"), readonly=True, source=f"{rc}:1")
    assert (b.path, b.readonly, b.boot, b.cow) == ("/abs/b.img", False, True, False)
    assert (cow.readonly, cow.cow, cow.force, cow.whole) == (False, True, True, True)
    assert (cd.readonly, cd.cd) == (True, True)
    assert home.path == os.path.expanduser("~/x.img") and home.readonly
    assert len(c.get_all("blkdev")) == 5


@pytest.mark.parametrize("line, message", [
    ("blkdev: d.img -rx", "unknown flag '-rx'"),
    ("blkdev: d.img -ro -rw", "-ro and -rw together"),
    ("blkdev: d.img -ro -cow", "-cow needs a writable disk"),
    ("blkdev: -rw", "needs a disk path"),
    ("ram_size: lots", "not a whole number"),
    ("ram_size: 4096", "out of range"),
    ("session_readonly: maybe", "not yes or no"),
    ("this is not a line", "cannot parse"),
    ("boot_args: \"open", "unterminated quote"),
])
def test_bad_values_name_the_line(line, message):
    msg = error(f"cpu: 750\n{line}\n")
    assert msg.startswith("<text>:2: ") and message in msg


def test_variables_from_command_line_keys_and_molpy_data():
    c = load("name: guest\nbootfile: ${DIR}/${name}.elf\nsession_file: ${MOLPY_DATA}/s\n",
             {"DIR": "/opt"}, warn=lambda m: None)
    assert c.get("bootfile") == "/opt/guest.elf"
    assert c.get("session_file") == os.path.join(data_dir(), "s")


def test_command_line_sets_win_over_the_file():
    c = load("ram_size: 32\n", {"ram_size": "48"})
    assert c.get_int("ram_size", 0) == 48


def test_undefined_variable():
    assert error("cpu: 750\nbootfile: ${nope}/x\n") == "<text>:2: ${nope} is not defined"


def test_ifeq_ifneq_else_and_nesting():
    text = """
    mode: fast
    ifeq mode slow fast {
        ram_size: 32
        ifneq mode fast {
            cpu: 7400
        } else {
            cpu: 750
        }
    } else {
        ram_size: 16
    }
    ifeq ${mode} slow {
        boot_args: slow
    }
    """
    c = load(text, warn=lambda m: None)
    assert c.get("ram_size") == "32" and c.get("cpu") == "750" and c.get("boot_args") is None


def test_ifdef_ifndef():
    c = load("ifdef ${X} {\ncpu: 7400\n}\nifndef ${Y} {\nboot_args: no-y\n}\n"
             "ifdef X {\nram_size: 8\n} else {\nram_size: 9\n}\n", {"X": "1"}, warn=lambda m: None)
    assert (c.get("cpu"), c.get("boot_args"), c.get("ram_size")) == ("7400", "no-y", "8")


def test_lines_in_untaken_branches_are_not_evaluated():
    c = load("ifdef ${NOPE} {\nbootfile: ${undefined}\nfail never\n}\ncpu: 750\n")
    assert c.get("bootfile") is None and c.get("cpu") == "750"


@pytest.mark.parametrize("text, message", [
    ("ifeq a b {\ncpu: 750\n", "<text>:1: this block is never closed"),
    ("cpu: 750\n}\n", "<text>:2: '}' without an open block"),
    ("cpu: 750\n} else {\n", "<text>:2: 'else' without an open if-block"),
    ("ifeq a b\n", "<text>:1: 'ifeq' needs '{'"),
])
def test_unbalanced_blocks(text, message):
    assert error(text).startswith(message)


def test_include_relative_missing_and_cycles(tmp_path):
    (tmp_path / "inc").mkdir()
    (tmp_path / "inc" / "disks.rc").write_text("blkdev: d.img -rw\n")
    main = tmp_path / "molrc"
    main.write_text("include inc/disks.rc\nram_size: 8\n")
    c = load_config(main)
    assert c.blkdevs[0].path == str(tmp_path / "inc" / "d.img")

    main.write_text("cpu: 750\ninclude missing.rc\n")
    with pytest.raises(ConfigError, match=r"molrc:2: include .*missing.rc: cannot read: No such file"):
        load_config(main)

    a, b = tmp_path / "a.rc", tmp_path / "b.rc"
    a.write_text("include b.rc\n")
    b.write_text("cpu: 750\ninclude a.rc\n")
    with pytest.raises(ConfigError, match=r"b.rc:2: include cycle: .*a.rc -> .*b.rc -> .*a.rc"):
        load_config(a)
    a.write_text("include a.rc\n")
    with pytest.raises(ConfigError, match="a.rc:1: include cycle"):
        load_config(a)


def test_echo_and_fail():
    said = []
    c = load("name: x\necho hello ${name}\ncpu: 750\n", echo=said.append, warn=lambda m: None)
    assert said == ["hello x"] and c.get("cpu") == "750"
    assert error("cpu: 750\nifeq cpu 750 {\nfail this guest needs a G4\n}\n") == \
        "<text>:3: this guest needs a G4"


def test_unknown_keys_warn_once_and_never_fail():
    warnings = []
    c = load("pci_proxy: yes\npci_proxy: no\nenable_sound: yes\nram_size: 16\n", warn=warnings.append)
    assert warnings == ["<text>:1: key 'pci_proxy' is not used by molpy (ignored)",
                        "<text>:3: key 'enable_sound' is not used by molpy (ignored)"]
    assert c.get_int("ram_size", 0) == 16


@pytest.mark.parametrize("text, size", [("512", 512), ("64K", 64 << 10), ("64M", 64 << 20),
                                        ("2G", 2 << 30), ("1T", 1 << 40), ("64MiB", 64 << 20),
                                        ("64mb", 64 << 20), (" 3 m ", 3 << 20)])
def test_parse_size(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "M", "-1M", "0", "1.5G", "10X", "abc"])
def test_parse_size_refuses(text):
    with pytest.raises(ValueError):
        parse_size(text)


def test_get_int_and_get_bool_errors():
    c = load("session_readonly: yes\nboot_args: x\n")
    assert c.get_bool("session_readonly", False) is True
    assert c.get_bool("missing", True) is True
    with pytest.raises(ConfigError, match=r"<text>:2: boot_args: 'x' is not a whole number"):
        c.get_int("boot_args", 0)
    with pytest.raises(ConfigError, match=r"<text>:2: boot_args: 'x' is not yes or no"):
        c.get_bool("boot_args", False)


def test_checksum_is_stable_and_sensitive():
    a = load("ram_size: 16\nblkdev: /a -rw\n").checksum()
    assert a == load("# same\nram_size: 16\nblkdev: /a -rw\n").checksum()
    assert a != load("ram_size: 32\nblkdev: /a -rw\n").checksum()
    assert a != load("ram_size: 16\nblkdev: /a -ro\n").checksum()


def test_local_molrc_before_the_default(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    c = load_config()
    assert c.path is None and c.get("session_file").endswith("default.session")
    (demo,) = c.blkdevs
    assert demo.path == os.path.join(data_dir(), "demo.img") and not demo.readonly and demo.boot
    (tmp_path / "molrc").write_text("ram_size: 12\n")
    c = load_config()
    assert c.path == "molrc" and c.get("ram_size") == "12"


def test_missing_file():
    with pytest.raises(ConfigError, match=r"nope.rc: cannot read: No such file"):
        load_config("nope.rc")


def test_sample_loads_cleanly():
    warnings = []
    c = load_config(SAMPLE, warn=warnings.append)
    assert warnings == [] and c.get_int("ram_size", 0) == 64
    assert "blkdev" in DEFAULT_MOLRC


values = st.text(st.characters(min_codepoint=33, max_codepoint=126, blacklist_characters="#\"'$"),
                 min_size=1, max_size=30)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.from_regex(r"[a-z][a-z0-9_]{0,10}", fullmatch=True), values, max_size=8))
def test_key_values_round_trip(pairs):
    pairs = {k: v for k, v in pairs.items() if k not in ("ram_size", "session_readonly", "blkdev")
             and k not in ("include", "echo", "fail", "ifeq", "ifneq", "ifdef", "ifndef")}
    c = load("".join(f"{k}: {v}\n" for k, v in pairs.items()), warn=lambda m: None)
    for k, v in pairs.items():
        assert c.get(k) == v
