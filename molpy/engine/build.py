"""Build molpy's engine: Unicorn's released sdist, checked, patched, built for PowerPC only.

Standard library only (``setup.py`` runs it before molpy's dependencies exist). The
result goes to the cache folder :func:`molpy.engine.engine_dir` names, made atomically
(a build killed half way leaves nothing that would be loaded) under a lock (two builds
at once wait for each other).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from typing import Callable, Iterator

from . import CMAKE_FLAGS, EngineError, LIBRARY, PATCH_FILE, SDIST_SHA256, UNICORN_VERSION, build_key, built, cache_root, engine_dir

SDIST_NAME = f"unicorn-{UNICORN_VERSION}.tar.gz"
_PERCENT = re.compile(rb"^\[\s*(\d+)%\]")


class BuildError(EngineError):
    """The engine could not be built; the message says which step and why."""


Report = Callable[[str], None]


def build(report: Report = lambda line: None, *, sdist: str | None = None, force: bool = False) -> str:
    """Build the engine unless it is cached; returns its folder. ``sdist``: a local copy of
    Unicorn's sdist to use instead of downloading it (it is checked the same way)."""
    if not force and built():
        return engine_dir()
    for tool in ("cmake", "patch", "cc"):
        if shutil.which(tool) is None:
            raise BuildError(f"'{tool}' is not installed (Debian: apt-get install cmake patch build-essential)")
    root = cache_root()
    os.makedirs(root, mode=0o700, exist_ok=True)
    with _locked(os.path.join(root, ".lock")):
        if not force and built():                  # another build finished while we waited
            return engine_dir()
        with tempfile.TemporaryDirectory(prefix="build-", dir=root) as work:
            tarball = sdist or _download(work, report)
            _check_sdist(tarball)
            src = _unpack(tarball, work, report)
            _apply_patch(src, report)
            library = _compile(src, os.path.join(work, "build"), report)
            _install(library, work, report)
    return engine_dir()


@contextlib.contextmanager
def _locked(path: str) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _download(work: str, report: Report) -> str:
    """Unicorn's sdist through pip, so that the user's index configuration applies."""
    report(f"downloading Unicorn {UNICORN_VERSION}'s source (sdist) with pip")
    cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-binary", ":all:", "--no-deps",
           "--dest", work, f"unicorn=={UNICORN_VERSION}"]
    done = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    path = os.path.join(work, SDIST_NAME)
    if done.returncode != 0 or not os.path.isfile(path):
        tail = done.stdout.decode(errors="replace").strip().splitlines()[-3:]
        raise BuildError(f"pip could not download {SDIST_NAME}: {' / '.join(tail) or 'no output'}")
    return path


def _check_sdist(path: str) -> None:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    if h.hexdigest() != SDIST_SHA256:
        raise BuildError(f"{path} is not Unicorn {UNICORN_VERSION}'s released sdist "
                         f"(sha256 {h.hexdigest()}, expected {SDIST_SHA256})")


def _unpack(tarball: str, work: str, report: Report) -> str:
    report("unpacking")
    with tarfile.open(tarball) as tar:
        tar.extractall(work, filter="data")
    src = os.path.join(work, f"unicorn-{UNICORN_VERSION}", "src")
    if not os.path.isfile(os.path.join(src, "CMakeLists.txt")):
        raise BuildError(f"{SDIST_NAME} has no src/CMakeLists.txt")
    return src


def _apply_patch(src: str, report: Report) -> None:
    report(f"applying {os.path.basename(PATCH_FILE)}")
    with open(PATCH_FILE, "rb") as patch:
        done = subprocess.run(["patch", "-p1", "--batch", "--forward", "--silent"], cwd=src, stdin=patch,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        raise BuildError(f"the patch does not apply: {done.stdout.decode(errors='replace').strip()}")


def _compile(src: str, out: str, report: Report) -> str:
    jobs = str(max(1, len(os.sched_getaffinity(0))))
    report("configuring (cmake, PowerPC only)")
    _run(["cmake", "-S", src, "-B", out, *CMAKE_FLAGS], "cmake configure")
    report(f"compiling with {jobs} jobs")
    proc = subprocess.Popen(["cmake", "--build", out, "--target", "unicorn", "-j", jobs],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    tail: list[bytes] = []
    last = -10
    assert proc.stdout is not None
    for line in proc.stdout:
        tail = (tail + [line])[-20:]
        m = _PERCENT.match(line)
        if m and int(m.group(1)) >= last + 10:
            last = int(m.group(1))
            report(f"compiling: {last}%")
    if proc.wait() != 0:
        raise BuildError("compiling Unicorn failed:\n" + b"".join(tail).decode(errors="replace"))
    library = os.path.join(out, LIBRARY)
    if not os.path.isfile(library):
        raise BuildError(f"the build made no {LIBRARY}")
    return library


def _run(cmd: list[str], what: str) -> None:
    done = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        tail = done.stdout.decode(errors="replace").strip().splitlines()[-10:]
        raise BuildError(f"{what} failed:\n" + "\n".join(tail))


def _install(library: str, work: str, report: Report) -> None:
    """Into a new folder, renamed into place: a reader sees no engine or a whole one."""
    stage = tempfile.mkdtemp(prefix="stage-", dir=os.path.dirname(work))
    try:
        shutil.copyfile(library, os.path.join(stage, LIBRARY))
        os.chmod(os.path.join(stage, LIBRARY), 0o755)
        info = {"unicorn": UNICORN_VERSION, "sdist_sha256": SDIST_SHA256, "key": build_key(),
                "cmake_flags": list(CMAKE_FLAGS), "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        with open(os.path.join(stage, "BUILDINFO.json"), "w") as f:
            json.dump(info, f, indent=1)
        final = engine_dir()
        if os.path.lexists(final):                 # force: replace the old build
            old = final + ".old"
            shutil.rmtree(old, ignore_errors=True)
            os.rename(final, old)
            shutil.rmtree(old, ignore_errors=True)
        os.rename(stage, final)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    report(f"engine ready: {final}")
