"""molpy's error tree: every failure molpy means to report is a :class:`Error`.

The CLI catches ``Error`` and prints its message as the one line a user sees; anything
else that reaches it is a molpy bug (its traceback goes to a file, see molpy/bugreport.py).
Each domain has a branch here so that a caller can catch a whole domain, and so that
low layers (drivers/, emulation/) can raise them without importing a higher one:

    Error
    ├── ConfigError     what the user configured cannot be used (molrc, a device's file,
    │                   the log file, the ELF to boot, fleet inputs)
    ├── DiskError       a disk or overlay cannot be used as asked (BlockError and kin)
    ├── SessionError    a session file cannot be used, or does not fit this machine
    ├── GuestError      the guest passed something out of range (OSI arguments, addresses);
    │                   devices turn these into error codes for the guest, never into exits
    ├── HostError       a host file molpy refuses (planted links, FIFOs), a lock conflict
    └── EngineError     (molpy.engine) the Unicorn library cannot run a guest exactly

Standard library only and imports nothing: ``molpy.engine`` derives from it before
anything else of molpy is loaded.
"""

from __future__ import annotations


class Error(Exception):
    """A failure molpy reports as one line (``str()``); never a molpy bug."""


class ConfigError(Error):
    """A molrc problem, or a file the molrc names that cannot be used; the message starts
    with ``FILE:LINE:`` when a line is to blame."""


class DiskError(Error):
    """A disk that cannot be used as asked; the message names it and says why."""


class SessionError(Error):
    """A session file that cannot be used; the message names it and says why."""


class GuestError(Error):
    """Something the guest passed that molpy refuses (an address outside RAM ...)."""


class HostError(Error):
    """A host file or resource molpy will not use as it is; the message names it."""
