"""One error tree: every failure molpy reports is a molpy.Error; anything else is a bug,
reported as one (traceback in a file), never blamed on the user's files."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import molpy
from molpy.errors import ConfigError, DiskError, Error, GuestError, HostError, SessionError
from test_session import molrc, saved_at_prompt
from test_structure import modules

# Exceptions that are not failures to report: a signal ending molpy (a BaseException, as
# KeyboardInterrupt is), and internal signals: the session writer's to itself, the gdb
# stub's to its loop (resume the guest).
NOT_ERRORS = {"molpy.hostsignals.SignalExit", "molpy.emulation.session_write._Refused",
              "molpy.gdbstub.stub._Resume"}


def exception_classes():
    """Every exception class molpy's modules define, found by reading them (class
    statements), then imported to ask Python what they derive from."""
    for name, path in modules().items():
        if name.endswith("__main__"):
            continue
        tree = ast.parse(path.read_text())
        names = [n.name for n in tree.body if isinstance(n, ast.ClassDef) and n.bases]
        if not names:
            continue
        module = importlib.import_module(name)
        for cls_name in names:
            cls = getattr(module, cls_name)
            if isinstance(cls, type) and issubclass(cls, BaseException) and cls.__module__ == name:
                yield f"{name}.{cls_name}", cls


def test_every_exception_is_in_the_tree():
    found = dict(exception_classes())
    assert len(found) >= 25, sorted(found)          # the scan saw them all (24 before the tree)
    outside = sorted(n for n, c in found.items() if not issubclass(c, Error) and n not in NOT_ERRORS)
    assert not outside, outside


def test_the_branches():
    from molpy.boot import BootError
    from molpy.drivers.block import BlockError, DiskChanged, DiskInUse
    from molpy.drivers.device import DeviceError, StateMismatch
    from molpy.emulation.memory import GuestAccessError
    from molpy.emulation.session import SessionUsed
    from molpy.emulation.state import StateError
    from molpy.engine import EngineError
    from molpy.engine.build import BuildError
    from molpy.files import FileLocked, HostFileError
    from molpy.molrc.errors import ConfigError as MolrcConfigError
    from molpy.osi import OsiError

    assert MolrcConfigError is ConfigError is molpy.ConfigError
    assert molpy.Error is Error and molpy.SessionError is SessionError and molpy.EngineError is EngineError
    for cls, branch in [(DeviceError, ConfigError), (BootError, ConfigError), (BlockError, DiskError),
                        (DiskInUse, DiskError), (DiskChanged, DiskError), (SessionUsed, SessionError),
                        (StateError, SessionError), (StateMismatch, SessionError),
                        (GuestAccessError, GuestError), (OsiError, GuestError),
                        (HostFileError, HostError), (FileLocked, HostError), (BuildError, EngineError),
                        (EngineError, Error)]:
        assert issubclass(cls, branch), (cls, branch)
    # callers that catch the standard kinds still catch them
    assert issubclass(StateError, ValueError) and issubclass(HostFileError, OSError)


def test_the_engine_package_stays_standard_library_only():
    """molpy.engine derives EngineError from the root without importing the rest of molpy,
    and loads alone (setup.py builds the engine before molpy's dependencies exist)."""
    code = textwrap.dedent("""
        import importlib.util, os, sys
        init = os.path.join(sys.argv[1], "molpy", "engine", "__init__.py")
        spec = importlib.util.spec_from_file_location("_alone", init, submodule_search_locations=[os.path.dirname(init)])
        m = importlib.util.module_from_spec(spec); sys.modules["_alone"] = m; spec.loader.exec_module(m)
        import _alone.build
        assert "molpy" not in sys.modules and "unicorn" not in sys.modules, sorted(sys.modules)
        assert issubclass(_alone.build.BuildError, _alone.EngineError)
        import molpy.engine
        heavy = {"unicorn", "molpy.machine", "molpy.drivers.device", "molpy.emulation.session",
                 "molpy.emulation.session_write", "numpy"} & set(sys.modules)
        assert not heavy, heavy
        import molpy.errors
        assert issubclass(molpy.engine.EngineError, molpy.errors.Error)
        print("ok")
    """)
    root = str(Path(molpy.__file__).resolve().parent.parent)
    r = subprocess.run([sys.executable, "-c", code, root], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


INJECT = textwrap.dedent("""
    import sys
    import molpy
    from molpy.drivers import osi_blk

    def restore(cls, ctx, fit):      # a programming error, not the file's
        raise KeyError("bootx")

    osi_blk.OsiBlk.restore = classmethod(restore)
    from molpy.cli import main
    sys.exit(main(sys.argv[1:], process=True))
""")


def test_a_bug_in_restore_is_a_molpy_bug_not_a_damaged_session(tmp_path, molpy_home):
    """The review's case: a KeyError raised by osi_blk's state loading was reported as the
    session file being damaged. It is molpy's bug: one line naming it and the file that
    holds its traceback, status 70, and the session file is left as it was."""
    rc = molrc(tmp_path, readonly=True, cow=True)
    session = saved_at_prompt(rc)
    before = session.read_bytes()
    r = subprocess.run([sys.executable, "-c", INJECT, "run", "-f", str(rc)], input=b"", capture_output=True,
                       timeout=120)
    err = r.stderr.decode()
    assert r.returncode == 70, err
    assert "damaged" not in err and "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("molpy bug:")]
    assert len(lines) == 1 and "KeyError: 'bootx'" in lines[0], err
    path = Path(lines[0].rsplit("(traceback in ", 1)[1].split(";", 1)[0])
    assert path.parent == molpy_home and path.is_file()
    report = path.read_text()
    assert "Traceback (most recent call last)" in report and "def restore" not in report
    assert "in restore" in report and "KeyError: 'bootx'" in report
    assert session.read_bytes() == before


def test_a_damaged_state_still_blames_the_file(tmp_path):
    """The other side: a state that fails its checks is the file's fault ("damaged")."""
    from molpy.console import BufferConsole
    from molpy.drivers import blk_sessions
    from molpy.machine import Machine
    from test_session import machine_config

    rc = molrc(tmp_path, readonly=True, cow=True)
    session = saved_at_prompt(rc)
    conf = machine_config(rc)
    real = blk_sessions.parse_state
    try:
        blk_sessions.parse_state = lambda data, version: real(b"{}", 2)      # a chunk missing its fields
        with pytest.raises(SessionError, match="is damaged"):
            Machine.from_session(str(session), conf, BufferConsole())
    finally:
        blk_sessions.parse_state = real


def test_a_bug_anywhere_in_a_command(tmp_path, molpy_home):
    """Any command: an exception that is not a molpy.Error is a bug, never 'error:'."""
    code = textwrap.dedent("""
        import sys
        import molpy
        from molpy.commands import session
        session.info = lambda args: [][1]
        from molpy.cli import main
        sys.exit(main(sys.argv[1:], process=True))
    """)
    rc = molrc(tmp_path, readonly=True, cow=True)
    s = saved_at_prompt(rc)
    r = subprocess.run([sys.executable, "-c", code, "session", "info", str(s)], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 70 and r.stderr.startswith("molpy bug: IndexError"), r.stderr
    assert r.stderr.count("\n") == 1 and str(molpy_home) in r.stderr


def test_a_resume_under_changed_settings_says_so(tmp_path, cli):
    """The session records the molrc's settings (config_checksum); a resume under other
    settings says so in one line on stderr. The recipe's own changes (session_readonly,
    -cow) and what a resume checks itself (disks, RAM) are not 'changed settings'."""
    saved_rc = molrc(tmp_path, readonly=False, cow=False)
    session = saved_at_prompt(saved_rc)
    rc = molrc(tmp_path, readonly=True, cow=True)
    note = "the molrc's settings changed since the session was saved"
    same = cli("run", "-f", str(rc), "-s", "ram_size=64")
    assert b"resumed session" in same.stdout + same.stderr and note.encode() not in same.stderr, same.stderr
    changed = cli("run", "-f", str(rc), "-s", "tag=2")
    err = changed.stderr.decode()
    assert b"resumed session" in changed.stdout + changed.stderr and err.count(note) == 1, err
    assert [line for line in err.splitlines() if note in line][0].startswith("molpy: note:")
    assert session.exists()
