"""benchmarks/run.py touches README.md only when asked, and then only the rows that ran (issue 18 item 12)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.run import update_readme  # noqa: E402

TABLE = """intro
<!-- results -->
Measured ...

| benchmark | molpy | reference | unit | ratio | target | note |
|---|---|---|---|---|---|---|
| a | 1 | 2 | s | 2 | - | x |
| b | 3 | 4 | s | 1.33 | - | y |
<!-- /results -->
after
"""


def test_only_the_rows_that_ran_change(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(TABLE)
    ran = [{"name": "b", "molpy": 5, "reference": 6, "unit": "s", "ratio": 1.2, "target": "-", "note": "z"},
           {"name": "c", "molpy": 7, "reference": 8, "unit": "s", "ratio": 1.14, "target": "-", "note": "new"}]
    assert update_readme(ran, readme)
    text = readme.read_text()
    assert "| a | 1 | 2 | s | 2 | - | x |" in text                 # not run: kept as it was
    assert "| b | 5 | 6 | s | 1.2 | - | z |" in text and "| b | 3 |" not in text
    assert text.index("| c | 7 |") < text.index("<!-- /results -->") and text.endswith("after\n")
    assert text.startswith("intro\n<!-- results -->\nMeasured ...\n")


def test_a_run_without_update_readme_leaves_it_alone(tmp_path):
    before = (REPO / "README.md").read_bytes()
    out = tmp_path / "new" / "folder"
    done = subprocess.run([sys.executable, "-m", "benchmarks.run", "-k", "no-such-benchmark", "--out", str(out)],
                          cwd=REPO, capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert (out / "results.md").exists()                            # the folder was made
    assert (REPO / "README.md").read_bytes() == before
