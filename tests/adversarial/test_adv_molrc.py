"""Crafted molrc files against the molrc reader: huge lines, ``${`` storms, includes of
special files, deep and cyclic includes.

Each attack runs ``molpy run -f MOLRC --check`` as a real process with a 1 GiB address
space limit and a time limit: it must end with one error line (exit status 2) or be
accepted, never hang, never exhaust memory, never give a traceback. Before the bounds
(commit b74584b) each class below failed: a 10 MB line or a line of 500,000 ``${`` did
not finish, ``include /dev/zero`` or a 2 GiB file exhausted memory, a FIFO blocked for
ever, an include fan-out never ended.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import tally
from molpy.molrc.bounds import (MAX_EXPANSION_WORK, MAX_FILE_BYTES, MAX_FILES, MAX_INCLUDES_OPEN,
                                MAX_LINE_CHARS, MAX_TOTAL_BYTES, MAX_WORD_CHARS)

ADDRESS_SPACE = 1 << 30
TIME_LIMIT = 60


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))


def check(rc: Path, stdin=subprocess.DEVNULL) -> subprocess.CompletedProcess:
    """``molpy run -f RC --check`` as a bounded process; a hang fails the test."""
    try:
        return subprocess.run([sys.executable, "-m", "molpy", "run", "-f", str(rc), "--check"],
                              stdin=stdin, capture_output=True, timeout=TIME_LIMIT, preexec_fn=_limit_memory)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{rc.name}: molpy did not finish in {TIME_LIMIT} s")


def refused(r: subprocess.CompletedProcess, *parts: str) -> None:
    err = r.stderr.decode("utf-8", "replace")
    assert r.returncode == 2 and "Traceback" not in err, err[-2000:]
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("molpy: error: ") and len(lines[0]) < 400, err[-2000:]
    for part in parts:
        assert part in lines[0], lines[0]


def accepted(r: subprocess.CompletedProcess) -> None:
    err = r.stderr.decode("utf-8", "replace")
    assert r.returncode == 0 and "Traceback" not in err, err[-2000:]
    assert all(len(line) < 400 for line in r.stdout.decode().splitlines())


def test_huge_lines(tmp_path):
    rc = tmp_path / "molrc"
    rc.write_bytes(b"blkdev: /" + b"a" * (10 << 20) + b" -rw\n")              # a 10 MB blkdev line
    refused(check(rc), f"larger than {MAX_FILE_BYTES >> 20} MiB")
    rc.write_bytes(b"ram_size: 16\nblkdev: /" + b"a" * 1_000_000 + b"\n")     # 1 MB, under the file limit
    refused(check(rc), f"molrc:2: a line longer than {MAX_LINE_CHARS} characters")
    rc.write_bytes(b"ram_size: 16\nboot_args:" + b" x" * 500_000 + b"\n")    # 500,000 words
    refused(check(rc), f"molrc:2: a line longer than {MAX_LINE_CHARS} characters")
    rc.write_bytes(b"k: x \\\n" * 100_000)                                   # 100,000 continued lines
    refused(check(rc), "molrc:1: a line longer than")
    rc.write_bytes(b"netdev: eth0" + b" x" * 30_000 + b"\n")                 # under the limit: read
    accepted(check(rc))
    rc.write_bytes(b"blkdev: /" + b"y" * MAX_WORD_CHARS + b"\n")
    refused(check(rc), "a word of")
    tally("molrc attacks: huge lines and words (10 MB, 1 MB, continued, long words)", 6)


def test_dollar_brace_storms(tmp_path):
    rc = tmp_path / "molrc"
    rc.write_bytes(b"k: " + b"${" * 500_000 + b"\n")                          # 1 MB of '${'
    refused(check(rc), "a line longer than")
    rc.write_bytes(b"netdev: " + b"${ ${x${" * 6_000 + b"\n")                  # 18,000 words: literals
    accepted(check(rc))
    rc.write_bytes(b"boot_args: " + b"${" * 30_000 + b"\n")                    # one word of 60,000
    refused(check(rc), f"a word expands to more than {MAX_WORD_CHARS} characters")
    rc.write_bytes(b"k: " + b"${" * 2000 + b"}\n")                            # one name of 4,000 characters
    accepted(check(rc))
    # each definition doubles the last: 2**40 characters if nothing stopped it
    rc.write_text("a0: xxxxxxxx\n" + "".join(f"a{i}: ${{a{i - 1}}}${{a{i - 1}}}\n" for i in range(1, 41)))
    refused(check(rc), f"a word expands to more than {MAX_WORD_CHARS} characters")
    # literals stored unexpanded, expanded 10 levels deep when used: 2**10 copies
    rc.write_text("".join(f"b{i}: ${{b{i + 1}}} ${{b{i + 1}}}\n" for i in range(12)) + "b12: leaf\nuse: ${b0}\n")
    refused(check(rc), "a word expands to more than")
    # many definitions of a multi-instance key, each a 4,000-character expansion
    rc.write_text("big: " + "z" * 4000 + "\n" + "netdev: ${big}\n" * (MAX_EXPANSION_WORK // 4000 + 10))
    refused(check(rc), f"expansion does more than {MAX_EXPANSION_WORK >> 20} MiB")
    tally("molrc attacks: ${ storms and expansion blow-ups", 7)


@pytest.fixture
def specials(tmp_path) -> dict[str, str]:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    (tmp_path / "folder").mkdir()
    sparse = tmp_path / "sparse.rc"
    with open(sparse, "wb") as f:
        f.truncate(2 << 30)                                                    # 2 GiB of holes
    return {"/dev/zero": "a character device", "/dev/urandom": "a character device", str(fifo): "a FIFO",
            str(tmp_path / "folder"): "a directory", str(sparse): "larger than 1 MiB",
            "/dev/stdin": "a FIFO", "/proc/self/mem": "cannot read"}


def test_includes_of_special_files(tmp_path, specials):
    rc = tmp_path / "molrc"
    tried = 0
    for path, why in specials.items():
        rc.write_text(f"ram_size: 16\ninclude {path}\n")
        with subprocess.Popen(["sleep", str(TIME_LIMIT)], stdout=subprocess.PIPE) as feeder:  # stdin: a pipe
            refused(check(rc, stdin=feeder.stdout), f"molrc:2: include {path}: cannot read", why)
            feeder.kill()
        tried += 1
    for path, why in specials.items():                                       # the main molrc too
        if path in ("/dev/stdin", "/proc/self/mem"):
            continue
        refused(check(Path(path)), f"{path}: cannot read", why)
        tried += 1
    tally("molrc attacks: special files included or read (devices, FIFO, folder, 2 GiB)", tried)


def test_deep_and_cyclic_includes(tmp_path):
    for i in range(MAX_INCLUDES_OPEN + 2):                                    # a chain one too deep
        (tmp_path / f"c{i}.rc").write_text(f"include c{i + 1}.rc\n")
    (tmp_path / f"c{MAX_INCLUDES_OPEN + 2}.rc").write_text("ram_size: 16\n")
    refused(check(tmp_path / "c1.rc"), f"includes nested more than {MAX_INCLUDES_OPEN} deep")
    accepted(check(tmp_path / "c2.rc"))                                       # 7 deep: MOL's limit
    (tmp_path / "self.rc").write_text("include self.rc\n")
    refused(check(tmp_path / "self.rc"), "self.rc:1: include cycle")
    (tmp_path / "x.rc").write_text("include y.rc\n")
    (tmp_path / "y.rc").write_text("ram_size: 16\ninclude x.rc\n")
    refused(check(tmp_path / "x.rc"), "y.rc:2: include cycle")
    for i in range(6):                                                        # 30**6 includes if unbounded
        (tmp_path / f"fan{i}.rc").write_text(f"include fan{i + 1}.rc\n" * 30)
    (tmp_path / "fan6.rc").write_text("netdev: x\n")
    refused(check(tmp_path / "fan0.rc"), f"more than {MAX_FILES} files read")
    (tmp_path / "big.rc").write_text("netdev: x\n" * (MAX_FILE_BYTES // 10 - 1))   # just under 1 MiB
    (tmp_path / "many.rc").write_text("include big.rc\n" * (MAX_TOTAL_BYTES // MAX_FILE_BYTES + 1))
    refused(check(tmp_path / "many.rc"), f"more than {MAX_TOTAL_BYTES >> 20} MiB of molrc text")
    tally("molrc attacks: deep, cyclic and fan-out includes", 6)
