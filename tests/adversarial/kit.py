"""What the adversarial tests share: a demo machine with a -cow disk, saved and resumed."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

from molpy.config import load_config
from molpy.console import BufferConsole
from molpy.drivers.demo_disk import make_demo_disk
from molpy.machine import Machine, MachineConfig, Stop
from test_session import saved_at_prompt   # tests/ is on sys.path (its conftest)


def sha(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def demo_rc(tmp: Path, extra: str = "", disk_flags: str = "-rw -cow -boot", ram_mib: int = 16,
            session: bool = False) -> tuple[Path, Path]:
    """A molrc in ``tmp`` for the demo guest with a 2 MiB demo disk (and ``tmp/s.session``)."""
    disk = tmp / "disk.img"
    if not disk.exists():
        make_demo_disk(disk, 2 << 20)
    if session:
        extra = f"session_file: {tmp / 's.session'}\nsession_readonly: yes\n{extra}"
    rc = tmp / "molrc"
    (tmp / "cow").mkdir(exist_ok=True)            # molpy creates no cow_dir a molrc names
    rc.write_text(f"ram_size: {ram_mib}\ncow_dir: {tmp / 'cow'}\nblkdev: {disk} {disk_flags}\n{extra}")
    return rc, disk


def saved_session(tmp: Path, ram_mib: int = 16) -> tuple[Path, Path, MachineConfig]:
    """The demo guest booted to its prompt and saved; returns (molrc, disk, read-only config)."""
    rc, disk = demo_rc(tmp, ram_mib=ram_mib, session=True)
    saved_at_prompt(rc)
    return rc, disk, MachineConfig.from_config(load_config(rc))


def resumes(conf: MachineConfig, code: int = 4) -> None:
    """The session resumes (read-only) and the guest runs: it exits with ``code``."""
    m = Machine.from_session(conf.session_file, dataclasses.replace(conf, session_readonly=True),
                             BufferConsole(b"exit %d\n" % code))
    try:
        assert m.run(seconds=10) is Stop.EXIT and m.exit_code == code
    finally:
        m.close()
