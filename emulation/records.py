"""Typed records of saved state, read from untrusted session files.

A record is a dataclass whose fields are made with :func:`saved`: each declares how its
value is checked, the state version it first appeared in, and the value a file older
than that gets (QEMU's VMState fields carry a ``version_id`` the same way). :func:`parse`
turns one JSON object of a given version into the record: the fields that version
must hold are required and checked, newer ones take their defaults, unknown ones are
refused; nothing is patched into a plain dict afterwards.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, TypeVar

from .state import record

Check = Callable[[Any, str], Any]     # (value, what) -> the value, or StateError naming ``what``
R = TypeVar("R")


def saved(check: Check, *, since: int = 1, default: Any = dataclasses.MISSING,
          may_lack: bool = False) -> Any:
    """A field of a saved record. Files of a version before ``since`` lack it and get
    ``default``; ``may_lack``: files of any version may leave it out (``default`` then)."""
    if (since > 1 or may_lack) and default is dataclasses.MISSING:
        raise TypeError("a field some files lack needs a default")
    meta = {"check": check, "since": since, "may_lack": may_lack}
    if default is dataclasses.MISSING:
        return dataclasses.field(metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def nullable(check: Check) -> Check:
    """``check``, or null (JSON's None)."""
    return lambda value, what: None if value is None else check(value, what)


def parse(cls: type[R], doc: Any, what: str, version: int, *, label: str | None = None,
          retired: tuple[str, ...] = (), checks: Mapping[str, Check] | None = None) -> R:
    """``doc`` as a ``cls`` of state ``version``, every field checked; StateError names the
    field as ``label`` (default ``what``) and its name. ``retired``: fields older molpys
    wrote and this one ignores; ``checks``: another check for a field in this version."""
    required, allowed = [], list(retired)
    present = []
    for f in dataclasses.fields(cls):
        meta = f.metadata
        if version < meta["since"]:
            continue
        present.append(f)
        (allowed if meta["may_lack"] else required).append(f.name)
    doc = record(doc, what, tuple(required), tuple(allowed))
    checks = checks or {}
    label = label or what
    values = {f.name: checks.get(f.name, f.metadata["check"])(doc[f.name], f"{label} {f.name}")
              for f in present if f.name in doc}
    return cls(**values)


def as_doc(rec: Any) -> dict:
    """A record as the JSON object ``parse`` reads back."""
    return {f.name: getattr(rec, f.name) for f in dataclasses.fields(rec)}

