"""The exact engine's cost: guest compute on molpy's patched Unicorn against bare stock Unicorn.

Stock Unicorn runs in a child process (``MOLPY_ENGINE=stock``: the binding loads its own
library there); molpy and bare runs on the exact engine run in this one. Two guests from
bench.elf: ``spin`` (no memory access) and ``mem`` (4 loads and 4 stores in 8
instructions: the accesses the patch changes the check after).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys

from molpy.machine import MachineConfig

from .bench_core import RAM_MIB, _bare
from .guest_run import timed_run

LOOPS = {"spin": (100, 3), "mem": (40, 9)}      # millions of iterations, instructions per iteration
ROUNDS = 7                                      # interleaved: stock, bare exact, molpy, again

_CHILD = """
import json, statistics, sys
from benchmarks.bench_core import _bare
from molpy import engine
path, exact = engine.loaded_library()
assert not exact, path
args, repeats = sys.argv[1], int(sys.argv[2])
print(json.dumps(statistics.median(_bare(args, hooked=False) for _ in range(repeats))))
"""


def _stock(args: str, repeats: int = 1) -> float:
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {k: v for k, v in os.environ.items() if k != "LIBUNICORN_PATH"}
    env.update(MOLPY_ENGINE="stock", PYTHONPATH=os.pathsep.join([root, *sys.path]))
    out = subprocess.run([sys.executable, "-c", _CHILD, args, str(repeats)], env=env, cwd=root,
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out)


def run() -> list[dict]:
    rows = []
    for name, (millions, per) in LOOPS.items():
        args = f"{name} {millions}"
        insns = millions * 1e6 * per
        times: dict[str, list[float]] = {"stock": [], "bare": [], "molpy": []}
        for _ in range(ROUNDS):           # interleaved, so that a busy moment costs all three alike
            times["stock"].append(_stock(args))
            times["bare"].append(_bare(args, hooked=False))
            times["molpy"].append(timed_run(MachineConfig(ram_mib=RAM_MIB), args))
        stock, exact_bare, molpy_t = (statistics.median(times[k]) for k in ("stock", "bare", "molpy"))
        what = "spin loop" if name == "spin" else "load/store loop"
        rows.append({"name": f"guest compute on the exact engine ({what})", "molpy": insns / molpy_t / 1e6,
                     "reference": insns / stock / 1e6, "unit": "MIPS", "ratio": stock / molpy_t,
                     "target": ">= 0.95", "note": f"reference: bare stock Unicorn 2.1.4 (its own library, "
                     f"child process), no hooks, one emu_start; medians of {ROUNDS} interleaved runs"})
        rows.append({"name": f"the patch alone, bare Unicorn ({what})", "molpy": insns / exact_bare / 1e6,
                     "reference": insns / stock / 1e6, "unit": "MIPS", "ratio": stock / exact_bare,
                     "target": "-", "note": "bare exact engine against bare stock, same guest and loop"})
    return rows
