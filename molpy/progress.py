"""Progress bars for long work (a disk's content check), on a terminal only.

rich is imported only when a bar is shown, never on the plain resume path.
"""

from __future__ import annotations

import contextlib
import sys
from typing import Callable, Iterator


@contextlib.contextmanager
def terminal_bar(label: str, total: int) -> Iterator[Callable[[int], None]]:
    """A transient bar on stderr for ``total`` bytes; yields ``update(done)``."""
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

    bar = Progress(TextColumn("{task.description}", markup=False), BarColumn(), DownloadColumn(),
                   TimeRemainingColumn(), console=Console(file=sys.stderr), transient=True)
    task = bar.add_task(label, total=total)
    bar.start()
    try:
        yield lambda done: bar.update(task, completed=done)
    finally:
        bar.stop()


def bars_on_terminal() -> None:
    """Long disk checks show a bar when stderr is a terminal (molpy's commands call this)."""
    from .drivers import digests

    try:
        on_terminal = sys.stderr is not None and sys.stderr.isatty()
    except (OSError, ValueError):
        on_terminal = False
    digests.use_progress(terminal_bar if on_terminal else None)
