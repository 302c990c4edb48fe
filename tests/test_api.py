"""The public Python API, as README's "Use from Python" shows it (run exactly as written)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def readme_example() -> str:
    text = (REPO / "README.md").read_text()
    section = text.split("## Use from Python", 1)[1].split("\n## ", 1)[0]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_readme_example_runs_as_written(tmp_path):
    r = subprocess.run([sys.executable, "-c", readme_example()], cwd=tmp_path, capture_output=True,
                       timeout=120, env=dict(os.environ))
    assert r.returncode == 0, r.stderr.decode()
    assert (tmp_path / "demo.session").is_file()


def test_the_api_names_and_a_light_import():
    code = ("import sys, molpy; heavy = {'unicorn', 'numpy', 'capstone', 'elftools', 'rich'} & set(sys.modules); "
            "assert not heavy, heavy; "
            "from molpy import Machine, MachineConfig, load_config, Stop, BufferConsole, SessionError; "
            "print(molpy.__version__)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr.decode()


def test_the_source_tree_imports_under_a_regular_install(tmp_path):
    """Running from the repository root (tests, benchmarks) with molpy installed as a regular
    package imports the checkout's molpy/, whose drivers/ and emulation/ lie beside it."""
    code = "import molpy.emulation.session, molpy.drivers.osi_blk as o; print(o.__file__)"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    r = subprocess.run([sys.executable, "-S", "-c", "import sys; sys.path.insert(0, ''); " + code], cwd=REPO,
                       capture_output=True, timeout=60, env=env)
    assert r.returncode == 0, r.stderr.decode()
    assert r.stdout.decode().strip() == str(REPO / "drivers" / "osi_blk.py")
