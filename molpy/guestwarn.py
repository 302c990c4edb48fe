"""Warnings caused by what a guest does, bounded: a guest may cause millions of them.

The first ``SHOWN`` of each kind go to stderr (through molpy's logger, as any warning);
later ones go only to the guest's log (``molpy.guest``: the capped, rotated log file), and
one line on stderr says that from then on they do. Kinds are fixed strings of molpy's
code, so the table of counts stays small whatever the guest does.
"""

from __future__ import annotations

import logging
import threading

SHOWN = 10

_counts: dict[str, int] = {}
_lock = threading.Lock()
_guest_log = logging.getLogger("molpy.guest")


def warn(logger: logging.Logger, kind: str, message: str, *args: object) -> None:
    """``logger.warning(message, *args)`` for the first SHOWN warnings of ``kind``, then the guest log."""
    with _lock:
        n = _counts.get(kind, 0) + 1
        _counts[kind] = n
    if n <= SHOWN:
        logger.warning(message, *args)
        if n == SHOWN:
            logger.warning("(more %s warnings go to the log only)", kind)
    else:
        _guest_log.warning(message, *args)


def count(kind: str) -> int:
    """How many warnings of ``kind`` this process has had (tests, summaries)."""
    return _counts.get(kind, 0)
