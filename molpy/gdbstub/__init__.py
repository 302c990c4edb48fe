"""A GDB remote stub for molpy guests (docs/gdb.md).

gdb-multiarch connects over TCP on 127.0.0.1; the stub answers between guest slices,
never from inside a Unicorn hook (docs/exceptions.md says why): breakpoints and
watchpoints are hooks bounded to their addresses that only record the hit and stop the
engine, and ``GdbStub.run`` has ``Machine.run``'s contract, so ``molpy run`` drives a
debugged guest the way it drives any other.
"""

from .server import GdbServer, GdbError
from .stub import GdbStub

__all__ = ["GdbServer", "GdbError", "GdbStub"]
