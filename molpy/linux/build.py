"""``molpy linux build``: Debian's linux-source-6.1 + molpy's patches + config -> a cached vmlinux.

The cache key covers the source tarball (name, size, mtime), every patch, the config
fragment and this builder's format, so a cached vmlinux is reused until one of them
changes. One work tree is kept: a new patch series is applied after the old one is
reversed, so a rebuild recompiles only what changed.

A variant (``VARIANTS``: the QEMU mac99 kernel the benchmarks compare against) is the
same sources with one more fragment applied after molpy.config; it has its own cache key
(the default kernel's key is unchanged) and its own work tree, so building one never
recompiles the other.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tarfile
from pathlib import Path
from typing import Callable

from ..errors import HostError

TARBALL = "/usr/src/linux-source-6.1.tar.xz"
TREE_NAME = "linux-source-6.1"
CROSS = "powerpc-linux-gnu-"
FORMAT = "1"
HOW_TO_GET = "run 'molpy linux build' (about 8 minutes with -j2, once)"
VARIANTS = {"qemu-mac99": "qemu-mac99.config"}    # name -> extra fragment in guest/linux
CONFIG_LINE = re.compile(r"^(CONFIG_[A-Za-z0-9_]+)=(y|n|m|\d+|0x[0-9a-fA-F]+|\".*\")$")


class BuildError(HostError):
    """The kernel cannot be built; the message says what is missing or what failed."""


def source_dir() -> Path:
    """The patch series, config fragment and init.c: guest/linux of the molpy tree (a
    checkout, an editable install), else the copy an installed molpy carries (setup.py)."""
    tree = Path(__file__).resolve().parents[2] / "guest" / "linux"
    return tree if tree.is_dir() else Path(__file__).resolve().parent / "source"


def cache_root() -> Path:
    """$MOLPY_LINUX_CACHE, else $XDG_CACHE_HOME/molpy/linux."""
    explicit = os.environ.get("MOLPY_LINUX_CACHE")
    if explicit:
        return Path(explicit).absolute()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "molpy" / "linux"


def patches(src: Path | None = None) -> list[Path]:
    src = src or source_dir()
    return sorted(src.glob("[0-9][0-9][0-9][0-9]-*.patch"))


def _variant_file(variant: str | None) -> str | None:
    if variant is None:
        return None
    try:
        return VARIANTS[variant]
    except KeyError:
        raise BuildError(f"unknown kernel variant {variant!r} (known: {', '.join(sorted(VARIANTS))})") from None


def fragments(src: Path | None = None, variant: str | None = None) -> list[Path]:
    """The config fragments applied in order: molpy.config, then the variant's."""
    src = src or source_dir()
    extra = _variant_file(variant)
    return [src / "molpy.config"] + ([src / extra] if extra else [])


def config_fragment(src: Path | None = None, name: str = "molpy.config") -> list[tuple[str, str]]:
    """(NAME, value) pairs of one fragment; a malformed line is an error naming it."""
    path = (src or source_dir()) / name
    items = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = CONFIG_LINE.match(line)
        if not m:
            raise BuildError(f"{path}:{n}: not a CONFIG_NAME=value line: {line}")
        items.append((m.group(1), m.group(2)))
    return items


def tarball_id(tarball: str) -> str:
    try:
        st = os.stat(tarball)
    except OSError as e:
        raise BuildError(f"{tarball}: {e.strerror} (install Debian's linux-source-6.1)") from None
    return f"{os.path.basename(tarball)}:{st.st_size}:{int(st.st_mtime)}"


def build_key(tarball: str = TARBALL, src: Path | None = None, variant: str | None = None) -> str:
    """Names one kernel: source, patches, config fragment(s), builder format. A variant
    only adds its name and fragment, so the default kernel's key never depends on it."""
    src = src or source_dir()
    h = hashlib.sha256(f"{FORMAT}\0{tarball_id(tarball)}\0".encode())
    for p in patches(src) + [src / "molpy.config"]:
        h.update(p.name.encode() + b"\0" + p.read_bytes() + b"\0")
    extra = _variant_file(variant)
    if extra:
        h.update(b"variant\0" + variant.encode() + b"\0" + (src / extra).read_bytes() + b"\0")
    return h.hexdigest()[:16]


def cached_vmlinux(tarball: str = TARBALL, variant: str | None = None) -> Path | None:
    """The vmlinux for the current sources (and variant) when it was built, else None."""
    try:
        path = cache_root() / build_key(tarball, variant=variant) / "vmlinux"
    except (BuildError, OSError):
        return None
    return path if path.is_file() else None


def _run(cmd: list[str], cwd: Path, log, what: str) -> None:
    log.write(f"$ {' '.join(cmd)}\n")
    log.flush()
    r = subprocess.run(cmd, cwd=cwd, stdout=log, stderr=subprocess.STDOUT)
    if r.returncode:
        raise BuildError(f"{what} failed (exit {r.returncode}); see {log.name}")


def _prepare_tree(work: Path, tarball: str, series: list[Path], say, log) -> Path:
    """The work tree with exactly ``series`` applied (old series reversed first)."""
    tree = work / TREE_NAME
    stamp = work / "applied.json"
    applied_dir = work / "applied"
    state = None
    if stamp.is_file() and tree.is_dir():
        try:
            state = json.loads(stamp.read_text())
        except ValueError:
            state = None
    if state is None or state.get("tarball") != tarball_id(tarball):
        say(f"extracting {tarball} (about a minute)")
        for stale in (tree, applied_dir):      # not the whole folder: the open build.log is in it
            shutil.rmtree(stale, ignore_errors=True)
        stamp.unlink(missing_ok=True)
        work.mkdir(parents=True, exist_ok=True)
        with tarfile.open(tarball) as t:
            t.extractall(work, filter="tar") if hasattr(tarfile, "data_filter") else t.extractall(work)
        if not tree.is_dir():
            raise BuildError(f"{tarball}: no {TREE_NAME}/ inside")
        state = {"tarball": tarball_id(tarball), "patches": []}
        applied_dir.mkdir()
        stamp.write_text(json.dumps(state))
    old = [applied_dir / name for name in state["patches"]]
    if [p.read_bytes() for p in old] == [p.read_bytes() for p in series]:
        return tree
    for p in reversed(old):
        say(f"reversing {p.name}")
        _run(["patch", "-p1", "-R", "-s", "-i", str(p)], tree, log, f"reversing {p.name}")
        p.unlink()
        state["patches"].remove(p.name)
        stamp.write_text(json.dumps(state))
    for p in series:
        say(f"applying {p.name}")
        _run(["patch", "-p1", "-s", "--no-backup-if-mismatch", "-i", str(p)], tree, log,
             f"applying {p.name}")
        shutil.copyfile(p, applied_dir / p.name)
        state["patches"].append(p.name)
        stamp.write_text(json.dumps(state))
    return tree


def _configure(tree: Path, fragment: list[tuple[str, str]], make: list[str], log) -> None:
    _run(make + ["allnoconfig"], tree, log, "make allnoconfig")
    args = []
    for name, value in fragment:
        key = name[len("CONFIG_"):]
        if value == "y":
            args += ["-e", key]
        elif value == "n":
            args += ["-d", key]
        elif value == "m":
            args += ["-m", key]
        elif value.startswith('"'):
            args += ["--set-str", key, value[1:-1]]
        else:
            args += ["--set-val", key, value]
    _run(["scripts/config", "--file", ".config", "-k"] + args, tree, log, "scripts/config")
    _run(make + ["olddefconfig"], tree, log, "make olddefconfig")
    got = {}
    for line in (tree / ".config").read_text().splitlines():
        m = re.match(r"^(CONFIG_\w+)=(.*)$", line)
        if m:
            got[m.group(1)] = m.group(2)
        m = re.match(r"^# (CONFIG_\w+) is not set$", line)
        if m:
            got[m.group(1)] = "n"
    wrong = [f"{n}={v} (got {got.get(n, 'n')})" for n, v in fragment if got.get(n, "n") != v]
    if wrong:
        raise BuildError("the kernel's Kconfig refused: " + ", ".join(wrong))


def build(say: Callable[[str], None], *, tarball: str = TARBALL, jobs: int = 2,
          force: bool = False, variant: str | None = None) -> Path:
    """Build (or find in the cache) molpy's vmlinux, or a variant's; returns its path."""
    src = source_dir()
    for f in fragments(src, variant):
        if not f.is_file():
            raise BuildError(f"{src}: no {f.name} (this molpy carries no kernel sources: install it from its source tree)")
    for tool in (CROSS + "gcc", "make", "patch", "flex", "bison", "bc"):
        if shutil.which(tool) is None:
            raise BuildError(f"{tool} not found (needs gcc-powerpc-linux-gnu, make, patch, flex, bison, bc)")
    key = build_key(tarball, src, variant)
    out = cache_root() / key
    vmlinux = out / "vmlinux"
    if vmlinux.is_file() and not force:
        say(f"cached: {vmlinux}")
        return vmlinux
    series = patches(src)
    fragment = list(dict(item for f in fragments(src, variant)     # a later fragment's value wins
                         for item in config_fragment(src, f.name)).items())
    work = cache_root() / ("work" if variant is None else f"work-{variant}")
    work.mkdir(parents=True, exist_ok=True)
    log_path = work / "build.log"
    make = ["make", "ARCH=powerpc", f"CROSS_COMPILE={CROSS}", f"-j{jobs}"]
    with open(log_path, "w") as log:
        tree = _prepare_tree(work, tarball, series, say, log)
        say("configuring (allnoconfig + " + " + ".join(f.name for f in fragments(src, variant)) + ")")
        _configure(tree, fragment, make, log)
        say(f"compiling with -j{jobs} (a first build takes about 8 minutes; log: {log_path})")
        log.write(f"$ {' '.join(make + ['vmlinux'])}\n")
        log.flush()
        proc = subprocess.Popen(make + ["vmlinux"], cwd=tree, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, errors="replace")
        n = 0
        assert proc.stdout is not None
        for line in proc.stdout:
            log.write(line)
            if line.lstrip().startswith(("CC ", "AS ", "LD ")):
                n += 1
                if n % 100 == 0:
                    say(f"  {n} files compiled ({line.strip()})")
        if proc.wait():
            raise BuildError(f"make vmlinux failed (exit {proc.returncode}); see {log_path}")
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / "vmlinux.tmp"
    shutil.copyfile(tree / "vmlinux", tmp)
    shutil.copyfile(tree / ".config", out / "config")
    os.replace(tmp, vmlinux)
    say(f"built: {vmlinux}")
    return vmlinux
