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


def test_a_variant_has_its_own_key_and_leaves_the_default_kernels_alone(tmp_path):
    """The QEMU mac99 variant (benchmarks) is keyed by its own fragment too; editing that
    fragment changes its key and never the default kernel's, so the tests' kernel is not
    rebuilt for a benchmark's sake. An unknown variant is refused in one line."""
    import shutil

    import pytest

    from molpy.linux import build

    src = tmp_path / "src"
    shutil.copytree(REPO / "guest" / "linux", src)
    tarball = str(tmp_path / "linux-source.tar.xz")
    Path(tarball).write_bytes(b"not a real tarball; the key reads only its name, size and date")
    (name, fragment), = build.VARIANTS.items()
    default, variant = build.build_key(tarball, src), build.build_key(tarball, src, name)
    assert default != variant
    (src / fragment).write_text((src / fragment).read_text() + "CONFIG_PRINTK_TIME=y\n")
    assert build.build_key(tarball, src) == default
    assert build.build_key(tarball, src, name) not in (variant, default)
    with pytest.raises(build.BuildError, match="unknown kernel variant 'nope'"):
        build.build_key(tarball, src, "nope")
