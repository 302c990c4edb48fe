"""molpy's one progress bar (rich, on stderr, only when stderr is a terminal).

Long work (a disk's content check, a cow commit) shows it; stdout stays free of it, so
``molpy cow commit OVERLAY > out.txt`` gets only the result line. rich is imported only
when a bar is shown, never on the plain resume path.
"""

from __future__ import annotations

import contextlib
import sys
from typing import Callable, Iterator, Optional

Update = Callable[..., None]          # update(done_bytes, total_bytes=None)


def stderr_is_terminal() -> bool:
    """Whether a bar may be drawn: stderr exists and is a terminal."""
    try:
        return sys.stderr is not None and sys.stderr.isatty()
    except (OSError, ValueError):
        return False


@contextlib.contextmanager
def terminal_bar(label: str, total: Optional[int]) -> Iterator[Update]:
    """A transient bar on stderr for ``total`` bytes (None: not known yet); yields
    ``update(done, total=None)``. Callers check stderr_is_terminal() first."""
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

    bar = Progress(TextColumn("{task.description}", markup=False), BarColumn(), DownloadColumn(),
                   TimeRemainingColumn(), console=Console(file=sys.stderr), transient=True)
    task = bar.add_task(label, total=total)

    def update(done: int, total: Optional[int] = None) -> None:
        if total is None:
            bar.update(task, completed=done)
        else:
            bar.update(task, completed=done, total=total)

    bar.start()
    try:
        yield update
    finally:
        bar.stop()


@contextlib.contextmanager
def bar_if_terminal(label: str, total: Optional[int] = None) -> Iterator[Optional[Update]]:
    """terminal_bar when stderr is a terminal, else None (nothing is drawn anywhere)."""
    if not stderr_is_terminal():
        yield None
        return
    with terminal_bar(label, total) as update:
        yield update


def bars_on_terminal() -> None:
    """Long disk checks show a bar when stderr is a terminal (molpy's commands call this)."""
    from .drivers import digests

    digests.use_progress(terminal_bar if stderr_is_terminal() else None)
