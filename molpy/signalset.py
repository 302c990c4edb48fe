"""Which signals end or stop molpy, by number: shared by molpy.hostsignals, which handles
them, and the warm server's client (molpy.warm.client), which passes them on to its worker.
Built on ``_signal``: the ``signal`` module's enums cost a start-up as much as the whole of
the client."""

from __future__ import annotations

import _signal

# Signals whose default action ends the process and that arrive from outside.
# SIGPIPE and SIGXFSZ stay ignored (Python's choice: the write fails with EPIPE/EFBIG
# and molpy reports it); faults are handled by molpy.crashnet.
TERMINATING: tuple[int, ...] = tuple(s for s in (
    _signal.SIGHUP, _signal.SIGINT, _signal.SIGQUIT, _signal.SIGTERM, _signal.SIGUSR1, _signal.SIGUSR2,
    _signal.SIGALRM, _signal.SIGVTALRM, _signal.SIGPROF, _signal.SIGXCPU,
    getattr(_signal, "SIGPWR", None), getattr(_signal, "SIGSTKFLT", None), getattr(_signal, "SIGIO", None),
    *range(_signal.SIGRTMIN, _signal.SIGRTMAX + 1)) if s is not None)

# Ctrl-Z and the continue after it: molpy gives the terminal back, then takes it again.
JOB_CONTROL: tuple[int, int] = (_signal.SIGTSTP, _signal.SIGCONT)
