"""Shared fixtures: an isolated molpy data directory and a CLI runner for real processes."""

from __future__ import annotations

from pathlib import Path

import pytest

import molpy  # noqa: F401  (first: it chooses the Unicorn library before anything loads one)
from clirun import run_cli

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def molpy_home(tmp_path_factory, monkeypatch) -> Path:
    """Every test gets its own molpy data directory (demo disk, default session, log)."""
    home = tmp_path_factory.mktemp("molpy-home")
    monkeypatch.setenv("MOLPY_HOME", str(home))
    return home


@pytest.fixture
def closing():
    """``closing(make, *args)`` makes something with a ``close()`` and closes it after the test."""
    made: list = []

    def use(make, *args, **kwargs):
        thing = make(*args, **kwargs)
        made.append(thing)
        return thing

    yield use
    for thing in reversed(made):
        thing.close()


@pytest.fixture
def cli():
    return run_cli
