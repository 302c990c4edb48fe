"""molpy's engine (docs/engine.md): the exact build is what molpy loads, and a stock Unicorn
is refused in one line that says how to get the fixed one."""

from __future__ import annotations

import os
import subprocess
import sys

from pathlib import Path

from molpy import engine

REPO = Path(__file__).resolve().parent.parent


def _without_engine(tmp_path) -> dict:
    """An environment where molpy finds no engine of its own: the stock library loads."""
    env = {k: v for k, v in os.environ.items() if k not in ("LIBUNICORN_PATH", engine.OVERRIDE)}
    env["MOLPY_ENGINE_CACHE"] = str(tmp_path / "no-engine")
    return env


def test_molpy_loads_its_exact_engine():
    path, exact = engine.loaded_library()
    assert exact and os.path.dirname(path) == engine.built()


def test_a_stock_unicorn_is_refused_in_one_line(tmp_path):
    done = subprocess.run([sys.executable, "-m", "molpy", "run"], input=b"exit 3\n", capture_output=True,
                          env=_without_engine(tmp_path), timeout=60)
    lines = done.stderr.decode().strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert "exact-stops patch" in lines[0] and "molpy engine build" in lines[0]
    assert b"molpy demo guest" not in done.stdout               # no guest instruction ran


def test_engine_info_says_whether_stops_are_exact(tmp_path, cli):
    ok = cli("engine", "info")
    assert ok.returncode == 0 and b"exact:    yes" in ok.stdout
    stock = subprocess.run([sys.executable, "-m", "molpy", "engine", "info"], capture_output=True,
                           env=_without_engine(tmp_path), timeout=60)
    assert stock.returncode == 1 and b"exact:    no" in stock.stdout and b"not built" in stock.stdout


def test_unicorn_imported_before_molpy_is_named_as_the_cause():
    code = ("import unicorn, molpy\nfrom molpy.machine import Machine\n"
            "try:\n    Machine()\nexcept molpy.engine.EngineError as e:\n    print(e)\n")
    env = {k: v for k, v in os.environ.items() if k != "LIBUNICORN_PATH"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO,
                          timeout=60)
    assert "imported before molpy" in done.stdout and engine.built() in done.stdout, done.stdout + done.stderr


def test_a_bad_sdist_is_refused_before_anything_is_built(tmp_path, cli):
    bad = tmp_path / "unicorn-2.1.4.tar.gz"
    bad.write_bytes(b"not Unicorn")
    env = {"MOLPY_ENGINE_CACHE": str(tmp_path / "cache")}
    done = cli("engine", "build", "--sdist", str(bad), env=env)
    assert done.returncode == 2 and b"sha256" in done.stderr and b"Traceback" not in done.stderr
    assert not (tmp_path / "cache" / engine.build_key()).exists()
    missing = cli("engine", "build", "--sdist", str(tmp_path / "absent.tar.gz"), env=env)
    assert missing.returncode == 2 and b"no such file" in missing.stderr


def test_an_engine_others_can_write_is_not_loaded(tmp_path, monkeypatch):
    import shutil

    cache = tmp_path / "cache"
    shutil.copytree(engine.built(), cache / engine.build_key())
    monkeypatch.setenv("MOLPY_ENGINE_CACHE", str(cache))
    assert engine.built() == str(cache / engine.build_key())
    (cache / engine.build_key()).chmod(0o777)
    assert engine.built() is None                     # a folder anyone may write into
    (cache / engine.build_key()).chmod(0o700)
    (cache / engine.build_key() / engine.LIBRARY).chmod(0o666)
    assert engine.built() is None                     # a library anyone may rewrite
