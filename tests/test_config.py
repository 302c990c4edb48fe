"""The molrc grammar, rule by rule, each with the result MOL's parser (res_manager.c) gives;
errors with their file and line; and generated tests of the tokenizer, the expander,
line continuation and if-blocks against small models of MOL's rules."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from molpy.config import (DEFAULT_MOLRC, BlkdevSpec, ConfigError, data_dir, load_config,
                          parse_size)
from molpy.machine import MachineConfig
from molpy.molrc.bounds import MAX_EXPANSION_NESTING, MAX_LINE_CHARS, MAX_WORD_CHARS
from molpy.molrc.expand import Expander
from molpy.molrc.source import logical_lines
from molpy.molrc.words import split_words

SAMPLE = Path(__file__).resolve().parent.parent / "molrc.sample"


def load(text: str, variables=None, **kw):
    kw.setdefault("warn", lambda m: None)
    return load_config(text=text, variables=variables, **kw)


def words(text: str, key: str = "k") -> list[list[str]]:
    return load(text).resources.get(key)


def error(text: str, **kw) -> str:
    with pytest.raises(ConfigError) as e:
        load(text, **kw)
    return str(e.value)


# -- words --

@pytest.mark.parametrize("line, expected", [
    ("k: a b\tc,d, e", ["a", "b", "c", "d", "e"]),             # whitespace and commas
    ('k: "/path with space/cd.iso" -cd', ["/path with space/cd.iso", "-cd"]),
    ('k: "yaboot" /path', ["yaboot", "/path"]),
    ('k: a"b c"d', ["a", "b c", "d"]),                          # the quotes separate words
    ("k: 'it''s'", ["it", "s"]),
    ('k: "a \'b\' # c"', ["a 'b' # c"]),                        # the other quote and '#' kept
    ("k: 'say \"hi\"'", ['say "hi"']),
    ('k: "" x \'\'', ["x"]),                                    # an empty quote is no word
    ('k: "open to the end # not a comment', ["open to the end # not a comment"]),
    ("k: a # b c", ["a"]),
    ("k: a#b", ["a"]),                                          # '#' ends the line anywhere outside quotes
    ("k: a\rb", ["a", "b"]),                                     # '\r' separates
    ("k: a\x0bb\x0c", ["a\x0bb\x0c"]),                           # other control characters do not
    ("k:", []),                                                 # a key with no value
    ("k:   # only a comment", []),
])
def test_words(line, expected):
    assert words(line + "\n") == [expected]


def test_key_forms():
    c = load('@pseudofile: "x" /y\n"quoted key:" v\nk:\n', warn=lambda m: None)
    assert c.resources["@pseudofile"] == [["x", "/y"]]
    assert c.resources["quoted key"] == [["v"]]
    assert c.get("k") == "" and c.resources["k"] == [[]]


@pytest.mark.parametrize("line", ["k:v", "k : v", "k", ": v", "ifneq{", "}else{"])
def test_not_a_key_line(line):
    assert error(f"a: 1\n{line}\n").startswith("<text>:2: cannot parse ")


def test_continued_lines():
    c = load("k: a \\\n  b \\\n c\nn: 1\n# comment \\\nlost: yes\nlast: x\\")
    assert c.resources["k"] == [["a", "b", "c"]]
    assert "lost" not in c.resources                 # a comment continues too
    assert c.resources["last"] == [["x\\"]]          # no newline after it: a plain backslash
    assert c.where("n") == "<text>:4"
    assert error("a: 1\nk \\\nb: c\n").startswith("<text>:2: cannot parse 'k'")


def test_crlf_lines():
    assert words("k: a b\r\nm: c\r\n") == [["a", "b"]]


# -- definitions --

def test_first_definition_wins_multi_keys_accumulate():
    c = load("k: 1\nk: 2\nblkdev: /a\nblkdev: /b -rw\nnetdev: eth0\nnetdev: tun0\n"
             "@pseudofile: a /x\n@pseudofile: b /y\nmacos_rompath_: p\nmacos_rompath_: q\n")
    assert c.resources["k"] == [["1"]]
    assert c.resources["blkdev"] == [["/a"], ["/b", "-rw"]]
    assert c.resources["netdev"] == [["eth0"], ["tun0"]]
    assert [d[0] for d in c.resources["@pseudofile"]] == ["a", "b"]
    assert c.get_all("macos_rompath_") == ["p", "q"]


def test_a_dropped_definition_is_not_expanded():
    big = "x" * (MAX_WORD_CHARS // 2)
    c = load(f"b: {big}\nk: 1\nk: ${{b}}${{b}}${{b}}\n")      # would be too long, but k is taken
    assert c.get("k") == "1"
    assert "expands to more than" in error(f"b: {big}\nk: ${{b}}${{b}}${{b}}\n")


def test_command_line_settings_come_first():
    c = load("ram_size: 32\nblkdev: /f\n", [("ram_size", "48"), ("ram_size", "40"), ("blkdev", "/a"),
                                           ("blkdev", '"/b c" -rw')])
    assert c.get_int("ram_size", 0) == 40 and c.where("ram_size") == "command line"   # the last -s wins
    assert c.resources["blkdev"] == [["/b c", "-rw"], ["/a"], ["/f"]]                 # each -s in front


def test_command_line_keys_are_one_word():
    with pytest.raises(ConfigError, match="a key is one word"):
        load("", [("a b", "1")])
    c = load("", [("include", "x"), ("k", "")])               # not keywords; an empty value
    assert c.resources["include"] == [["x"]] and c.resources["k"] == [[]]


# -- ${} --

def test_expansion_of_any_resource():
    c = load("name: guest\nbootfile: ${DIR}/${name}.elf\nsession_file: ${MOLPY_DATA}/s\n"
             "two: a b\none: ${two}\nkey_${name}: yes\n", {"DIR": "/opt"})
    assert c.get("bootfile") == "/opt/guest.elf"
    assert c.get("session_file") == os.path.join(data_dir(), "s")
    assert c.resources["one"] == [["a b"]]                    # one word, the words joined by a space
    assert c.get("key_guest") == "yes"


def test_undefined_stays_literal():
    c = load("a: ${nope}/x\nempty:\nb: ${empty}\nc: ${a\nd: ${x${y}}\n")
    assert c.get("a") == "${nope}/x"
    assert c.get("b") == "${empty}"                           # defined with no value: as undefined
    assert c.get("c") == "${a"
    assert c.get("d") == "${x${y}}"


def test_stored_literals_expand_when_used():
    c = load("later: ${v}\nv: 1\nuse: ${later}\nself: ${self}\nuse_self: ${self}\n")
    assert c.get("later") == "${v}" and c.get("use") == "1"
    assert c.get("use_self") == "${self}"


def test_expansion_nesting_is_mols():
    # each v_i is stored as the literal ${v_(i+1)}; using v_0 expands them 10 levels deep
    n = MAX_EXPANSION_NESTING + 3
    text = "".join(f"v{i}: ${{v{i + 1}}}\n" for i in range(n)) + f"v{n}: end\nuse: ${{v0}}\n"
    assert load(text).get("use") == f"${{v{MAX_EXPANSION_NESTING}}}"   # the 10th level is left as it is
    text = "".join(f"v{i}: ${{v{i + 1}}}\n" for i in range(5)) + "v5: end\nuse: ${v0}\n"
    assert load(text).get("use") == "end"


# -- if-blocks --

@pytest.mark.parametrize("cond, taken", [
    ("ifdef ${X}", True), ("ifdef ${NOPE}", False), ("ifdef ${EMPTY}", False), ("ifdef ${DOLLAR}", False),
    ("ifdef X", True), ("ifdef NOPE", True),                 # a plain word is always "defined"
    ("ifdef", True),                                         # the "{" is the word it tests
    ("ifndef ${X}", False), ("ifndef ${NOPE}", True), ("ifempty ${EMPTY}", True), ("ifempty ${X}", False),
    ("ifeq ${X} 1", True), ("ifeq ${X} 0 1 2", True), ("ifeq ${X} 0,1", True), ("ifeq ${X} 2", False),
    ("ifeq X 1", False),                                     # WORD is a word, not a name to look up
    ("ifeq ${X} ${ONE}", True), ("ifeq {", True), ("ifeq x", False),
    ("ifneq ${X} 2", True), ("ifneq ${X} 2 1", False),
])
def test_conditions(cond, taken):
    text = f"X: 1\nONE: 1\nEMPTY:\nDOLLAR: $x\n{cond} {{\nk: yes\n}} else {{\nk: no\n}}\n"
    assert load(text).get("k") == ("yes" if taken else "no")


def test_ifeq_compares_the_brace_too():
    assert load("X: {\nifeq ${X} {\nk: yes\n}\n").get("k") == "yes"


def test_nesting_else_and_untaken_branches():
    text = """
    mode: fast
    ifeq ${mode} slow fast {
        ram_size: 32
        ifneq ${mode} fast {
            cpu: 7400
        } else {
            cpu: 750
        }
    } else {
        ram_size: 16
        ifeq ${mode} fast {        # inside a branch not taken: does not count
            boot_args: never
        } else {
            boot_args: never either
        }
    }
    ifeq ${mode} slow
        boot_args: slow            # the '{' is not needed
    }
    ifdef ${NOPE} {
        this line is not read
        include /nonexistent/never.rc
        fail never
    }
    """
    c = load(text)
    assert (c.get("ram_size"), c.get("cpu"), c.get("boot_args")) == ("32", "750", None)


def test_every_else_switches_branches():
    c = load("ifeq a a {\nk: 1\n} else {\nk: 2\n} else {\nm: 3\n}\n")
    assert c.get("k") == "1" and c.get("m") == "3"            # MOL: a second else switches back
    assert load("ifeq a b {\n} elsewhere {\nk: 1\n}\n").get("k") == "1"     # any word starting with else
    assert load("E: else\nifeq a b {\n} ${E} {\nk: 1\n}\n").get("k") == "1"


@pytest.mark.parametrize("text, message", [
    ("ifeq a b {\ncpu: 750\n", "<text>:1: this block is never closed"),
    ("a: 1\nifdef x {\nifdef ${y} {\n}\n", "<text>:2: this block is never closed"),
    ("cpu: 750\n}\n", "<text>:2: '}' without an open block"),
    ("cpu: 750\n} else {\n", "<text>:2: '} else {' without an open block"),
])
def test_unbalanced_blocks(text, message):
    assert error(text).startswith(message)


def test_blocks_belong_to_their_file(tmp_path):
    (tmp_path / "open.rc").write_text("ifdef x {\n")
    (tmp_path / "molrc").write_text("include open.rc\n}\n")
    with pytest.raises(ConfigError, match=r"open.rc:1: this block is never closed"):
        load_config(tmp_path / "molrc")


# -- include, echo, fail --

def test_include_relative_missing_and_cycles(tmp_path):
    (tmp_path / "inc").mkdir()
    (tmp_path / "inc" / "disks.rc").write_text("blkdev: d.img -rw\n")
    main = tmp_path / "molrc"
    main.write_text("include inc/disks.rc ignored-word\nram_size: 8\ninclude\n")
    c = load_config(main)
    assert c.blkdevs[0].path == str(tmp_path / "inc" / "d.img")
    assert c.files == [str(main), str(tmp_path / "inc" / "disks.rc")]

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


def test_include_nesting_is_mols(tmp_path):
    def chain(n: int) -> Path:
        for i in range(n + 1):
            (tmp_path / f"f{i}.rc").write_text(f"include f{i + 1}.rc\n" if i < n else "deepest: yes\n")
        return tmp_path / "f0.rc"
    assert load_config(chain(7)).get("deepest") == "yes"      # 7 includes open at once: MOL's limit
    with pytest.raises(ConfigError, match=r"f7.rc:1: includes nested more than 7 deep"):
        load_config(chain(8))


def test_echo_and_fail():
    said = []
    c = load("name: x\necho hello,  ${name} \"a  b\"\necho\ncpu: 750\n", echo=said.append)
    assert said == ["hello x a  b", ""] and c.get("cpu") == "750"
    assert error("cpu: 750\nifeq ${cpu} 750 {\nfail this guest needs a G4\n}\n") == \
        "<text>:3: this guest needs a G4"


# -- disks --

def test_blkdev_flags_mean_what_they_meant_in_mol(tmp_path):
    rc = tmp_path / "sub" / "molrc"
    rc.parent.mkdir()
    rc.write_text("blkdev: disk.img\nblkdev: /abs/b.img -rw -boot\nblkdev: c.img -rw -cow -force -whole\n"
                  "blkdev: cd.iso -cd\nblkdev: ~/x.img -ro\nblkdev: cd2.iso -cdrom ${cdboot}\n"
                  "blkdev: r.img -removable -rw\nblkdev: drv.img \"-ro -drvdisk\"\nblkdev: gone.img -ignore -rw\n")
    c = load_config(rc, warn=lambda m: None)
    plain, b, cow, cd, home, cd2, rem, drv = c.blkdevs
    assert plain == BlkdevSpec(path=str(rc.parent / "disk.img"), readonly=True, source=f"{rc}:1")
    assert (b.path, b.readonly, b.boot, b.cow) == ("/abs/b.img", False, True, False)
    assert (cow.readonly, cow.cow, cow.force, cow.whole) == (False, True, True, True)
    assert (cd.readonly, cd.cd, cd.whole, cd.removable) == (True, True, True, True)
    assert home.path == os.path.expanduser("~/x.img") and home.readonly
    assert (cd2.cd, cd2.flags) == (True, ("-cdrom",))          # the unexpanded ${cdboot} is skipped
    assert (rem.removable, rem.readonly) == (True, False)
    assert (drv.drvdisk, drv.removable, drv.readonly, drv.flags) == (True, True, True, ("-ro", "-drvdisk"))
    assert "gone.img (-ignore" in c.skipped_disks[0]
    assert len(c.get_all("blkdev")) == 9


def test_boot1_takes_the_boot_flag_from_the_others():
    c = load("blkdev: /a -boot\nblkdev: /b -boot1\nblkdev: /c -cdboot -cd\n")
    assert [(s.boot, s.boot1) for s in c.blkdevs] == [(False, False), (True, True), (True, True)]


def test_which_disk_keys_each_boot_type_reads():
    text = "blkdev_mol: /drv -ro -drvdisk\nblkdev: /a\nboot_type: {}\n"
    assert [s.path for s in load(text.format("newworld")).blkdevs] == ["/drv", "/a"]
    assert [s.path for s in load(text.format("osx")).blkdevs] == ["/drv", "/a"]
    assert [s.path for s in load(text.format("linux")).blkdevs] == ["/a"]
    assert load(text.format("elf")).blkdevs == []
    assert [s.key for s in load("blkdev_mol: /drv\nblkdev: /a\n").blkdevs] == ["blkdev_mol", "blkdev"]


def test_disks_in_the_users_own_molrc_are_never_left_out():
    c = load("blkdev: /nonexistent/disk.img -rw\n")
    assert [s.path for s in c.blkdevs] == ["/nonexistent/disk.img"] and not c.skipped_disks


@pytest.mark.parametrize("line, message", [
    ("blkdev: d.img -rx", "unknown flag '-rx' (known: -ro -rw -force -cdrom -cd -cdboot -boot -boot1 "
                          "-whole -removable -drvdisk -ignore -cow -raw)"),
    ("blkdev: d.img -cwo", "unknown flag '-cwo'"),
    ("blkdev: d.img -r", "unknown flag '-r'"),                 # MOL took prefixes; molpy does not
    ("blkdev: d.img other.img", "unknown flag 'other.img'"),
    ("blkdev: d.img -ro -rw", "-ro and -rw together"),
    ("blkdev: d.img -ro -cow", "-cow needs a writable disk"),
    ("blkdev: d.img -cd -cow", "-cow needs a writable disk"),
    ("blkdev: -rw", "needs a disk path"),
    ("blkdev:", "needs a disk path"),
    ("blkdev: ${nodisk} -rw", "holds an undefined ${...} variable"),
    ("blkdev_mol: d.img -bogus", "blkdev_mol: unknown flag '-bogus'"),
])
def test_bad_disks_name_the_line(line, message):
    msg = error(f"cpu: 750\n{line}\n")
    assert msg.startswith("<text>:2: ") and message in msg


# -- the values molpy serves --

def machine(text: str, variables=None) -> MachineConfig:
    return MachineConfig.from_config(load(text, variables))


@pytest.mark.parametrize("line, message", [
    ("ram_size: lots", "ram_size: 'lots' is not a whole number"),
    ("ram_size: 64 M", "is not a whole number"),
    ("ram_size: 4096", "out of range"),
    ("ram_size: -5", "out of range"),
    ("session_readonly: maybe", "not yes or no"),
    ("cpu: g5", "cpu: 'g5' is a 64-bit PowerPC"),
    ("cpu: 970", "cpu: '970' is a 64-bit PowerPC"),
    ("cpu: e500", "cpu: 'e500' is an embedded PowerPC"),
    ("cpu: e500v2_v22", "is an embedded PowerPC"),
    ("cpu: 405ep", "is an embedded PowerPC"),
    ("cpu: 8xx", "cpu: '8xx' is not a PowerPC model molpy knows"),
    ("cpu: pentium", "is not a PowerPC model molpy knows"),
    ("boot_type: macos9", "boot_type: 'macos9' is not a boot type (MOL's are newworld, osx, oldworld, linux, elf)"),
    ("session: one", "session: 'one' is not a session number"),
    ("pseudofile: lonely", "pseudofile needs a name and a host path"),
])
def test_bad_values_name_the_line(line, message):
    with pytest.raises(ConfigError) as e:
        machine(f"boot_args: x\n{line}\n")
    assert str(e.value).startswith("<text>:2: ") and message in str(e.value), str(e.value)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("cpu", ["750", "g3", "g4", "7400", "604", "603", "750cx_v2_2", "7448_v2_1", "e600"])
def test_classic_cpus_are_accepted(cpu):
    assert machine(f"cpu: {cpu}\n").cpu == cpu


def test_numbers_as_mol_reads_them():
    assert machine("ram_size: 0x30\n").ram_mib == 48
    assert machine("ram_size: 010\n").ram_mib == 10            # decimal, leading zero and all
    assert machine("session: 3\n").session_id == 3


def test_machine_config_reads_mols_keys(tmp_path):
    rc = tmp_path / "molrc"
    rc.write_text('of_image: fw/openbios\noftree: trees/nw\nnvram: /var/n\nboot_type: osx\nsession: 1\n'
                  'pseudofile: "yaboot" y1\npseudofile: "yaboot" y2\npseudofile_: "yaboot" y3\n'
                  '@pseudofile: "yaboot" y4\n@pseudofile: "logo" /l\nbootfile: guest.elf\n'
                  'session_file: s.session\ncow_dir: cow\n')
    m = MachineConfig.from_config(load_config(rc, warn=lambda m: None))
    assert (m.of_image, m.oftree, m.nvram) == (str(tmp_path / "fw/openbios"), str(tmp_path / "trees/nw"), "/var/n")
    assert (m.boot_type, m.session_id) == ("osx", 1)
    assert m.pseudofiles == [("yaboot", str(tmp_path / "y1")), ("yaboot-1", str(tmp_path / "y2")),
                             ("yaboot-2", str(tmp_path / "y3")), ("logo", "/l")]      # MOL's pseudofs naming
    assert (m.bootfile, m.session_file, m.cow_dir) == (str(tmp_path / "guest.elf"), str(tmp_path / "s.session"),
                                                      str(tmp_path / "cow"))
    assert m.resources["pseudofile"] == [["yaboot", "y1"], ["yaboot", "y2"]]
    assert m.resources["MOLPY_DATA"] == [[data_dir()]]


def test_boot_method_wins_over_boot_type():
    assert machine("boot_type: newworld\nboot_method: elf\n").boot_type == "elf"


# -- unused keys: one line per group --

def test_unused_keys_one_line_per_group():
    warnings = []
    c = load("pci_proxy_device: 0001\nresolution: 640\ndepth: 32\nnetdev: eth0\nnetdev: tun0\n"
             "ram_sise: 16\nname: v\nuse: ${name}\nram_size: 16\n", warn=warnings.append)
    assert warnings == ["not served by molpy (SCSI, USB and PCI devices): pci_proxy_device",
                        "not served by molpy (video): resolution, depth",
                        "not served by molpy (network): netdev",
                        "keys molpy does not know (ignored): ram_sise (<text>:6), use (<text>:8)"]
    assert c.get_int("ram_size", 0) == 16                     # name is a variable (used by ${name})


def test_unused_listing_is_bounded():
    warnings = []
    load("".join(f"k{i}: {i}\n" for i in range(100)), warn=warnings.append)
    assert len(warnings) == 1 and "(100 keys)" in warnings[0] and len(warnings[0]) < 200


def test_sample_loads_cleanly():
    warnings = []
    c = load_config(SAMPLE, warn=warnings.append)
    assert warnings == [] and c.get_int("ram_size", 0) == 64
    assert "blkdev" in DEFAULT_MOLRC


# -- files --

def test_errors_name_the_file_and_line(tmp_path):
    rc = tmp_path / "molrc"
    rc.write_text("ram_size: 16\n\n# x\nbad line here\n")
    with pytest.raises(ConfigError, match=rf"^{rc}:4: cannot parse 'bad'"):
        load_config(rc)


@pytest.mark.parametrize("data, message", [
    (b"a: 1\nb: \x00\n", "molrc:2: a NUL byte"),
    (b"k: " + b"x" * (MAX_WORD_CHARS + 1) + b"\n", "molrc:1: a word of 4097 characters (the limit is 4096)"),
    (b"k: " + b"x " * MAX_LINE_CHARS + b"\n", f"molrc:1: a line longer than {MAX_LINE_CHARS} characters"),
    (b"a: 1\n" + b"k: x \\\n" * MAX_LINE_CHARS, f"molrc:2: a line longer than {MAX_LINE_CHARS} characters"),
])
def test_bounded_input(tmp_path, data, message):
    rc = tmp_path / "molrc"
    rc.write_bytes(data)
    with pytest.raises(ConfigError) as e:
        load_config(rc)
    assert str(e.value).endswith(message) or message in str(e.value), str(e.value)


def test_undecodable_bytes_are_not_a_crash(tmp_path):
    rc = tmp_path / "molrc"
    rc.write_bytes(b"boot_args: caf\xe9\n\xff\xfe: x\n")
    c = load_config(rc, warn=lambda m: None)
    assert c.get("boot_args") == "caf\ufffd"


def test_missing_file():
    with pytest.raises(ConfigError, match=r"nope.rc: cannot read: No such file"):
        load_config("nope.rc")


def test_local_molrc_before_the_default(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    c = load_config()
    assert c.path is None and c.get("session_file").endswith("default.session")
    (demo,) = c.blkdevs
    assert demo.path == os.path.join(data_dir(), "demo.img") and not demo.readonly and demo.boot
    (tmp_path / "molrc").write_text("ram_size: 12\n")
    c = load_config()
    assert c.path == "molrc" and c.get("ram_size") == "12"


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


# -- generated: molpy against small models of MOL's rules --

def mol_split(line: str) -> list[str]:
    """Model: MOL's pass over a line, one character at a time. Outside quotes a quote
    character opens a quote, a separator or '#' ends the word ('#' the line too); inside
    quotes everything up to the same quote character belongs to the word; the quote
    characters belong to no word. Words are the non-empty runs left."""
    result, word, quote = [], "", None
    for ch in line:
        if quote:
            if ch == quote:
                quote = None
                result.append(word)
                word = ""
            else:
                word += ch
        elif ch in "\"'":
            quote = ch
            result.append(word)
            word = ""
        elif ch in "\t\n\r, ":
            result.append(word)
            word = ""
        elif ch == "#":
            break
        else:
            word += ch
    if quote is None or word:
        result.append(word)
    return [w for w in result if w]


line_text = st.text(alphabet=list("ab \t,\r\"'#$\\{}x"), max_size=40)


@settings(max_examples=500, deadline=None)
@given(line_text)
def test_split_words_matches_the_model(line):
    assert split_words(line) == mol_split(line)


class TooLong(Exception):
    pass


def mol_expand(src: str, table: dict[str, list[str]], limit: int, nesting: int = 0) -> str:
    """Model: MOL's expansion, written plainly; TooLong once any part of the result is
    longer than ``limit`` (the result is at least as long as each of its parts)."""
    out = ""
    while nesting < MAX_EXPANSION_NESTING:
        s = src.find("${")
        if s < 0:
            break
        e = src.find("}", s)
        if e < 0:
            break
        out += src[:s]
        name = src[s + 2:e]
        src = src[e + 1:]
        value = table.get(name)
        if not value:
            out += "${" + name + "}"
        else:
            out += " ".join(mol_expand(w, table, limit, nesting + 1) for w in value)
        if len(out) > limit:
            raise TooLong
    out += src
    if len(out) > limit:
        raise TooLong
    return out


names = st.sampled_from(["a", "b", "c", "", "a}"])
fragments = st.one_of(st.sampled_from(["${a}", "${b}", "${c}", "${", "}", "$", "{", "x", " ", "${${a}}"]),
                      names.map(lambda n: "${" + n + "}"))
texts = st.lists(fragments, max_size=8).map("".join)


@settings(max_examples=500, deadline=None)
@given(st.dictionaries(names, st.lists(texts.filter(bool), max_size=3), max_size=4), texts,
       st.sampled_from([64, 2000]))
def test_expansion_matches_the_model(table, src, limit):
    expander = Expander(lambda name: table.get(name), max_word=limit)
    try:
        expected = mol_expand(src, table, limit)
    except TooLong:
        with pytest.raises(ConfigError, match=f"w: a word expands to more than {limit} characters"):
            expander.expand(src, "w")
    else:
        assert expander.expand(src, "w") == expected


def mol_lines(text: str) -> list[tuple[int, str]]:
    """Model: MOL reads a line with its newline; while the character before that newline
    is a backslash, the backslash becomes a space and the next line replaces the newline."""
    pieces = text.split("\n")
    physical = [p + "\n" for p in pieces[:-1]] + ([pieces[-1]] if pieces[-1] else [])
    result, i = [], 0
    while i < len(physical):
        start, buf = i + 1, physical[i]
        while buf.endswith("\\\n"):
            buf = buf[:-2] + " "
            i += 1
            if i < len(physical):
                buf += physical[i]
        result.append((start, buf[:-1] if buf.endswith("\n") else buf))
        i += 1
    return result


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet=list("a \\\n#\r"), max_size=40))
def test_continuation_matches_the_model(text):
    got = [(n, line) for n, line in logical_lines(text, "f") if line]
    want = [(n, line) for n, line in mol_lines(text) if line]
    assert got == want


# if-blocks: a random structure of conditions, evaluated by plain recursion
conds = st.booleans().map(lambda t: "ifeq a a {" if t else "ifeq a b {")


@st.composite
def blocks(draw, depth=0):
    items = []
    for _ in range(draw(st.integers(0, 3))):
        if depth < 3 and draw(st.booleans()):
            taken = draw(st.booleans())
            then = draw(blocks(depth + 1))
            other = draw(blocks(depth + 1)) if draw(st.booleans()) else None
            items.append(("if", taken, then, other))
        else:
            items.append(("def",))
    return items


def render(items, lines, defined, active, counter):
    for item in items:
        if item[0] == "def":
            counter[0] += 1
            lines.append(f"blkdev: /d{counter[0]}")
            if active:
                defined.append(f"/d{counter[0]}")
            continue
        _, taken, then, other = item
        lines.append("ifeq a a {" if taken else "ifeq a b {")
        render(then, lines, defined, active and taken, counter)
        if other is not None:
            lines.append("} else {")
            render(other, lines, defined, active and not taken, counter)
        lines.append("}")


@settings(max_examples=300, deadline=None)
@given(blocks())
def test_if_blocks_match_structured_evaluation(items):
    lines, defined = [], []
    render(items, lines, defined, True, [0])
    c = load("\n".join(lines) + "\n")
    assert [s.path for s in c.blkdevs] == defined


# -- MOL's partition rule for whole disks (/dev/sdX without -whole) --

def test_mac_volumes_are_found_by_their_signatures(tmp_path):
    from molpy.molrc.disks import mac_volumes, probe_volume

    def volume(name: str, size: int, block0: bytes = b"", header: bytes = b"", at124: bytes = b"") -> None:
        with open(tmp_path / name, "wb") as f:
            f.truncate(size)
            f.write(block0)
            f.seek(1024)
            f.write(header)
            f.seek(1024 + 124)
            f.write(at124)
    volume("sda1", 32 << 20, header=b"H+")                  # HFS+
    volume("sda2", 32 << 20, block0=b"ER")                  # a partition map: not a volume
    volume("sda3", 32 << 20, header=b"\xef\x53")            # something else
    volume("sda4", 1 << 20, header=b"BD")                   # HFS, small: a boot-strap partition?
    volume("sda5", 32 << 20, header=b"BD", at124=b"H+")      # HFS+ wrapped in HFS
    volume("sda6", 1 << 20, header=b"HX")                   # HFSX: no size rule
    volume("sda7", 100)                                      # too short to read
    kinds = [probe_volume(str(tmp_path / f"sda{i}"))[0] for i in range(1, 8)]
    assert kinds == ["hfs+", "partitioned", "unknown", "hfs", "hfs+", "hfsx", None]
    disk = str(tmp_path / "sda")
    assert mac_volumes(disk, writable=True) == [f"{disk}1", f"{disk}5", f"{disk}6"]
    assert mac_volumes(disk, writable=False) == [f"{disk}1", f"{disk}4", f"{disk}5", f"{disk}6"]
    os.mkfifo(tmp_path / "sda8")                              # never opened as a disk, never blocks
    assert probe_volume(str(tmp_path / "sda8")) == (None, 0)


def test_a_bad_cpu_is_one_line_at_check(cli, tmp_path):
    rc = tmp_path / "molrc"
    rc.write_text("ram_size: 16\ncpu: g5\n")
    r = cli("run", "-f", str(rc), "--check")
    assert r.returncode == 2 and r.stderr.decode().strip() == (
        f"molpy: error: {rc}:2: cpu: 'g5' is a 64-bit PowerPC, which molpy does not emulate; use 750 (G3, "
        f"the default), 7400 (G4), 604, 603 or another classic 32-bit PowerPC")
    r = cli("run", "-f", str(rc))
    assert r.returncode == 2 and b"Traceback" not in r.stderr and b"64-bit PowerPC" in r.stderr


def test_control_characters_in_messages_are_escaped(cli, tmp_path):
    rc = tmp_path / "molrc"
    rc.write_bytes(b"ram_size: 16\nblkdev: /no\x1cdisk\x1b[2J -rw\nk\xc2\x85ey: 1\n")   # U+0085 (a line break to str.splitlines)
    r = cli("run", "-f", str(rc), "--check")
    err, out = r.stderr.decode(), r.stdout.decode()
    assert r.returncode == 2 and err == "molpy: error: disk /no\\x1cdisk\\x1b[2J does not exist " \
        f"(blkdev at {rc}:2)\n"
    lines = out.split("\n")                                 # (the list of what molpy would use, escaped too)
    assert lines[-2:] == [f"note: keys molpy does not know (ignored): k\\x85ey ({rc}:3)", ""], out
    assert f"disk: /no\\x1cdisk\\x1b[2J -rw: read-write (blkdev at {rc}:2) (missing)" in lines, out
    assert not any(c < " " and c != "\n" or "\x7f" <= c <= "\x9f" for c in out), out
