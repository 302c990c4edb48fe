"""A direct-store segment (SR[T] = 1) never aborts the host (issue 18 item 9): stock Unicorn calls
abort() for any load or store there (it does not track the access type); molpy's engine takes
the DSI a 750 takes, with DSISR's direct-store bit (this guest has no DSI handler, so molpy's
fault report names the access and the DSI)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

GUEST = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
from exactgen import BODY, SC, d_form, li32, pack, x_form, DUMP
from molpy.boot import bundled_guest
from molpy.console import BufferConsole
from molpy.machine import Machine, MachineConfig
sr, store = int(sys.argv[2], 16), sys.argv[3] == "store"
words = li32(3, sr) + [(31 << 26) | (3 << 21) | (0 << 16) | (210 << 1),    # mtsr 0, r3
                       0x4C00012C]                                         # isync
words += li32(4, 0x40000) + [d_form(36 if store else 32, 5, 4, 0)]         # stw/lwz r5, 0(r4)
m = Machine(MachineConfig(ram_mib=1, bootfile=str(bundled_guest("exact"))), BufferConsole())
m.boot()
code = pack(words)
m.memory.view[BODY:BODY + len(code)] = code
m.memory.view[0x3008:0x300C] = (0x3010).to_bytes(4, "big")                 # MSR: FP, ME, DR
m.memory.view[0x3004:0x3008] = (0x7FFFFFFF).to_bytes(4, "big")
m.cpu.code_changed(0, 1 << 20)
stop = m.run(seconds=20)
print(json.dumps({"stop": stop.value, "report": m.fault.report() if m.fault else "",
                  "dar": m.cpuenv.load().spr(19), "dsisr": m.cpuenv.spr(18), "access": BODY + 4 * (len(words) - 1)}))
"""


@pytest.mark.parametrize("store", [False, True], ids=["load", "store"])
@pytest.mark.parametrize("sr", ["80000000", "a0000123", "c0ffffff"])
def test_a_direct_store_access_is_a_dsi_not_an_abort(sr, store):
    done = subprocess.run([sys.executable, "-c", GUEST, str(REPO / "tests"), sr, "store" if store else "load"],
                          capture_output=True, text=True, timeout=60, cwd=REPO)
    assert done.returncode == 0, f"status {done.returncode}: {done.stderr[-500:]}"
    got = json.loads(done.stdout)
    assert got["stop"] == "fault" and "data storage (DSI)" in got["report"], got
    assert f"pc  {got['access']:#010x}" in got["report"], got["report"]
    assert (got["dar"], got["dsisr"]) == (0x40000, 0x06000000 if store else 0x04000000), got
