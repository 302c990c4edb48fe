"""The engine molpy runs on: Unicorn built from its released source with molpy's exact-stops patch.

Stock Unicorn 2.1.4 re-runs a load or store after a stop requested from another thread
(docs/engine.md), so molpy loads its own build of the library instead. The Python binding
loads the library from the folder named by ``LIBUNICORN_PATH`` before its own copy:
:func:`select` points it at molpy's build before anything imports unicorn, and
:func:`require_exact` refuses an engine without the patch when a machine is made.

Standard library only: ``setup.py`` and ``molpy engine build`` use it without molpy's
dependencies, and ``import molpy`` pays for a few stat calls.
"""

from __future__ import annotations

import hashlib
import os
import stat
import sys

UNICORN_VERSION = "2.1.4"
# sha256 of unicorn-2.1.4.tar.gz, the sdist Unicorn released (the source this patch is for).
SDIST_SHA256 = "00567a70e323f749b419cd86bee4f9115beab7ebba32194581c090cbb7c59cff"
PATCH_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "exact-stops.patch")
LIBRARY = "libunicorn.so.2"
# Part of the cache key: a change of flags is a different library.
CMAKE_FLAGS = ("-DCMAKE_BUILD_TYPE=Release", "-DUNICORN_ARCH=ppc", "-DUNICORN_BUILD_TESTS=off",
               "-DUNICORN_INSTALL=off", "-DUNICORN_LEGACY_STATIC_ARCHIVE=off")
MARKER = "uc_molpy_exact_stops"
# Set to "stock" to run on whatever Unicorn the binding loads: only to show the defect.
OVERRIDE = "MOLPY_ENGINE"
HOW_TO_GET = "run 'molpy engine build' (about a minute, once; needs a C compiler and cmake)"


if __name__ == "molpy.engine":
    from molpy.errors import Error as _Root   # imports nothing: molpy's tree, at no cost
else:                                         # setup.py loads this package alone, before molpy exists
    _Root = Exception


class EngineError(_Root):
    """The loaded Unicorn is not one molpy can run a guest on exactly."""


def cache_root() -> str:
    """Where built engines live: $MOLPY_ENGINE_CACHE, else $XDG_CACHE_HOME/molpy/engine."""
    explicit = os.environ.get("MOLPY_ENGINE_CACHE")
    if explicit:
        return os.path.abspath(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "molpy", "engine")


def build_key() -> str:
    """Names one engine: Unicorn's version, its sdist, the patch text and the build flags."""
    h = hashlib.sha256()
    with open(PATCH_FILE, "rb") as f:
        h.update(f.read())
    h.update("\0".join((UNICORN_VERSION, SDIST_SHA256, *CMAKE_FLAGS)).encode())
    return f"unicorn-{UNICORN_VERSION}-exact-{h.hexdigest()[:16]}"


def engine_dir() -> str:
    return os.path.join(cache_root(), build_key())


def _trusted(path: str) -> bool:
    """A library molpy will load: a regular file in a folder, both ours and not writable by others."""
    euid = os.geteuid()
    for p, want in ((os.path.dirname(path), stat.S_ISDIR), (path, stat.S_ISREG)):
        try:
            st = os.lstat(p)
        except OSError:
            return False
        if not want(st.st_mode) or st.st_uid != euid or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            return False
    return True


def built() -> str | None:
    """The folder holding this molpy's engine, if it has been built and can be trusted."""
    folder = engine_dir()
    return folder if _trusted(os.path.join(folder, LIBRARY)) else None


chosen: str | None = None     # the LIBUNICORN_PATH select() set (not the user's)


def select() -> None:
    """Point the binding at molpy's engine, unless unicorn is already loaded or the user chose a library."""
    if "unicorn" in sys.modules or "LIBUNICORN_PATH" in os.environ or os.environ.get(OVERRIDE) == "stock":
        return
    global chosen
    folder = built()
    if folder is not None:
        os.environ["LIBUNICORN_PATH"] = folder
        chosen = folder


def loaded_library() -> tuple[str, bool]:
    """(path, exact) of the Unicorn library the binding loaded."""
    from unicorn.unicorn_py3 import unicorn as binding

    lib = binding.uclib
    return lib._name, hasattr(lib, MARKER)


def require_exact() -> None:
    """Refuse to run a guest on an engine whose stops are not exact."""
    path, exact = loaded_library()
    if exact or os.environ.get(OVERRIDE) == "stock":
        return
    chosen = os.environ.get("LIBUNICORN_PATH")
    folder = built()
    if folder is not None and not chosen:
        how = (f"unicorn was imported before molpy, which then could not choose its engine: import molpy "
               f"first, or set LIBUNICORN_PATH={folder}")
    else:
        how = HOW_TO_GET
    via = f" (LIBUNICORN_PATH={chosen})" if chosen and chosen != folder else ""
    raise EngineError(f"the Unicorn library loaded{via}, {path}, lacks molpy's exact-stops patch "
                      f"(stock Unicorn {UNICORN_VERSION} runs a load or store twice after a stop); {how}")
