"""The one exception a molrc problem raises (molpy.errors.ConfigError, the config branch
of molpy's error tree), and how its messages show words of the file."""

from ..errors import ConfigError

__all__ = ["ConfigError", "show", "printable"]


def show(text: str, limit: int = 60) -> str:
    """A word for a message: quoted, control characters escaped, at most ``limit`` characters."""
    shown = repr(text[:limit])
    return shown + f"... ({len(text)} characters)" if len(text) > limit else shown


def printable(text: str) -> str:
    """``text`` with control characters escaped: a crafted molrc can neither split a
    message into several lines nor send escape sequences to the terminal."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)
