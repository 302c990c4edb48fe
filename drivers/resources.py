"""MOL's resource lookups (res_manager.c) over MachineConfig.resources.

``resources[key]`` holds one list of words per definition of ``key``, in order, so
MOL's ``get_str_res_ind(key, index, argnum)`` is ``resources[key][index][argnum]``.
"""

from __future__ import annotations

from .cparse import strtol32


def str_res(resources: dict, key: str, index: int = 0, argnum: int = 0) -> str | None:
    """The word MOL's get_str_res_ind returns, or None (no such key, definition or word)."""
    defs = resources.get(key)
    if not defs or not 0 <= index < len(defs):
        return None
    words = defs[index]
    if not 0 <= argnum < len(words):
        return None
    word = words[argnum]
    return word if isinstance(word, str) else None


def numeric_res(resources: dict, key: str) -> int | None:
    """MOL's get_numeric_res: the first word read by strtol (base 16 after "0x"), None if unset."""
    s = str_res(resources, key)
    if s is None:
        return None
    return strtol32(s, 16 if s.startswith("0x") else 10)
