"""An installed molpy carries its kernel sources (issue 20, item 1): the patch series, the
config fragment and init.c are package data, so `molpy linux build` and `molpy img linux`
work outside a source tree, and name the same kernel as the tree does."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

PROBE = """
import json
from molpy.linux import build
print(json.dumps({"src": str(build.source_dir()), "patches": [p.name for p in build.patches()],
                  "files": sorted(str(p.relative_to(build.source_dir())) for p in build.source_dir().rglob("*")
                                  if p.is_file())}))
"""


def test_the_package_carries_the_kernel_sources(tmp_path):
    lib = tmp_path / "lib"
    env = dict(os.environ, MOLPY_SKIP_ENGINE_BUILD="1")
    r = subprocess.run([sys.executable, "setup.py", "-q", "build_py", "--build-lib", str(lib)], cwd=REPO,
                       env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=tmp_path, capture_output=True, text=True,
                         env=dict(os.environ, PYTHONPATH=str(lib)))
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    assert got["src"] == str(lib / "molpy" / "linux" / "source")
    tree = REPO / "guest" / "linux"
    assert got["patches"] == sorted(p.name for p in tree.glob("*.patch"))
    assert got["files"] == sorted(str(p.relative_to(tree)) for p in tree.rglob("*") if p.is_file()
                                  and p.suffix in (".patch", ".config", ".c"))
    for name in got["files"]:
        assert (lib / "molpy" / "linux" / "source" / name).read_bytes() == (tree / name).read_bytes()
