"""Saved state is untrusted input: parse it with bounds and check every field's type and range.

A session file can be crafted (its checksums recomputed), so device and CPU state go
through these helpers before any of it is used: JSON without NaN or Infinity and with
bounded nesting, integers that are really integers (not bools, not floats) inside the
range the field allows, strings and lists of bounded length. Each failure is a
StateError whose message names the field.
"""

from __future__ import annotations

import json
from typing import Any

from molpy.errors import SessionError

MAX_DEPTH = 32
MAX_JSON = 1 << 20          # no device or CPU record of molpy's comes near this


class StateError(SessionError, ValueError):
    """Saved state that fails a check; the message names the field and the problem."""


def _no_constant(name: str) -> Any:
    raise StateError(f"{name} is not a number molpy saves")


def loads(data: bytes, what: str) -> Any:
    """JSON from a session chunk: no NaN/Infinity, nesting at most MAX_DEPTH, at most MAX_JSON bytes."""
    if len(data) > MAX_JSON:
        raise StateError(f"{what}: {len(data)} bytes of JSON (at most {MAX_JSON})")
    try:
        text = bytes(data).decode("utf-8")
    except UnicodeDecodeError:
        raise StateError(f"{what}: not UTF-8 text") from None
    if _depth_exceeds(text, MAX_DEPTH):
        raise StateError(f"{what}: nested more than {MAX_DEPTH} deep")
    try:
        return json.loads(text, parse_constant=_no_constant)
    except StateError as e:
        raise StateError(f"{what}: {e}") from None
    except (ValueError, RecursionError) as e:
        raise StateError(f"{what}: not valid JSON ({str(e)[:80]})") from None


def _depth_exceeds(text: str, limit: int) -> bool:
    """Whether brackets outside strings nest deeper than ``limit`` (linear, no recursion)."""
    opens = text.count("[") + text.count("{")
    if opens <= limit:
        return False
    depth = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth > limit:
                return True
        elif ch in "]}":
            depth -= 1
    return False


def record(doc: Any, what: str, keys: tuple[str, ...], optional: tuple[str, ...] = ()) -> dict:
    """A JSON object with every key of ``keys`` (and maybe ``optional``), nothing else."""
    if not isinstance(doc, dict):
        raise StateError(f"{what}: expected a record, found {type(doc).__name__}")
    missing = [k for k in keys if k not in doc]
    if missing:
        raise StateError(f"{what}: missing {', '.join(missing)}")
    extra = [k for k in doc if k not in keys and k not in optional]
    if extra:
        raise StateError(f"{what}: unknown field {', '.join(map(str, extra[:3]))}")
    return doc


def integer(value: Any, what: str, lo: int, hi: int) -> int:
    """An int in [lo, hi] (bools and floats are refused)."""
    if type(value) is not int:
        raise StateError(f"{what}: expected a whole number, found {type(value).__name__}")
    if not lo <= value <= hi:
        raise StateError(f"{what}: {value} is out of range ({lo} to {hi})")
    return value


def u32(value: Any, what: str) -> int:
    return integer(value, what, 0, 0xFFFFFFFF)


def u64(value: Any, what: str) -> int:
    return integer(value, what, 0, (1 << 64) - 1)


def boolean(value: Any, what: str) -> bool:
    if type(value) is not bool:
        raise StateError(f"{what}: expected true or false, found {type(value).__name__}")
    return value


def text(value: Any, what: str, max_len: int = 4096) -> str:
    if type(value) is not str:
        raise StateError(f"{what}: expected text, found {type(value).__name__}")
    if len(value) > max_len or "\0" in value:
        raise StateError(f"{what}: not a plausible value ({len(value)} characters)")
    return value


def int_list(value: Any, what: str, length: int, lo: int, hi: int) -> list[int]:
    if type(value) is not list or len(value) != length:
        raise StateError(f"{what}: expected a list of {length} numbers")
    return [integer(v, f"{what}[{i}]", lo, hi) for i, v in enumerate(value)]


def optional(value: Any, check, *args) -> Any:
    """None, or what ``check(value, *args)`` accepts."""
    return None if value is None else check(value, *args)
