"""The adversarial suite: guest, files and host try to break molpy.

It runs with the normal tests. ``MOLPY_ADVERSARIAL=long`` raises every count to the
figures reported in README's "Reliability" table (at least 10,000 OSI calls, 1,000
mutants of each file kind, 100 kills of each kind). Every test adds what it tried and
what was lost to a tally printed at the end of the run.
"""

from __future__ import annotations

import collections
import os

LONG = os.environ.get("MOLPY_ADVERSARIAL", "") == "long"

# what was tried -> [how many times, how many times something was lost]
TALLY: dict[str, list[int]] = collections.defaultdict(lambda: [0, 0])


def count(short: int, long: int) -> int:
    """How many rounds a test runs: ``short`` normally, ``long`` in the long mode."""
    return long if LONG else short


def tally(what: str, tried: int, lost: int = 0) -> None:
    entry = TALLY[what]
    entry[0] += tried
    entry[1] += lost


def pytest_terminal_summary(terminalreporter) -> None:
    if not TALLY:
        return
    terminalreporter.section(f"adversarial suite ({'long' if LONG else 'short'} mode)")
    for what, (tried, lost) in sorted(TALLY.items()):
        terminalreporter.write_line(f"{what}: tried {tried:,}, lost {lost}")
    if LONG:                       # the rows of README's Reliability table
        terminalreporter.write_line("| what was tried | times | lost |")
        terminalreporter.write_line("|---|---|---|")
        for what, (tried, lost) in sorted(TALLY.items()):
            terminalreporter.write_line(f"| {what} | {tried:,} | {lost} |")
