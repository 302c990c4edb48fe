"""C library number parsing the way MOL's host code (a 32-bit C program) does it.

MOL reads numbers from its device tree, its molrc values and guest paths with
strtol/strtoul/sscanf; where molpy must give the same answer it uses these, which
follow glibc on a 32-bit host: leading white space, an optional sign, an optional
0x prefix for base 16, as many digits as fit, saturation on overflow.
"""

from __future__ import annotations

SPACE = " \t\n\v\f\r"          # C's isspace in the C locale
U32 = 0xFFFFFFFF
INT_MAX = 0x7FFFFFFF
INT_MIN = -0x80000000


def _digits(s: str, i: int, base: int) -> tuple[int, int]:
    """Value of the digits at s[i:] in ``base`` and the index after them (i itself if none)."""
    value = 0
    start = i
    while i < len(s):
        d = int(s[i], 36) if s[i].isascii() and s[i].isalnum() else 99
        if d >= base:
            break
        value = value * base + d
        i += 1
    return (value, i) if i > start else (0, start)


def scan_integer(s: str, i: int, base: int) -> tuple[int, bool, int] | None:
    """(magnitude, negative, end index) of strtol's number at s[i:], or None when there is none.

    ``base`` 16 accepts a 0x/0X prefix when a hex digit follows it; base 0 picks 16, 8 or 10
    from the prefix as C does.
    """
    n = len(s)
    while i < n and s[i] in SPACE:
        i += 1
    negative = False
    if i < n and s[i] in "+-":
        negative = s[i] == "-"
        i += 1
    prefixed = s[i:i + 2].lower() == "0x" and i + 2 < n and s[i + 2] in "0123456789abcdefABCDEF"
    if base == 0:
        base = 16 if prefixed else 8 if i < n and s[i] == "0" else 10
    if base == 16 and prefixed:
        i += 2
    value, end = _digits(s, i, base)
    if end == i:
        return None
    return value, negative, end


def strtoul32(s: str, base: int) -> int:
    """strtoul on a 32-bit host: 0 when there is no number, 0xFFFFFFFF on overflow, "-n" wraps."""
    got = scan_integer(s, 0, base)
    if got is None:
        return 0
    value, negative, _ = got
    if value > U32:
        return U32
    return (-value) & U32 if negative else value


def strtol32(s: str, base: int) -> int:
    """strtol on a 32-bit host: 0 when there is no number, saturated to the int range."""
    got = scan_integer(s, 0, base)
    if got is None:
        return 0
    value, negative, _ = got
    value = -value if negative else value
    return max(INT_MIN, min(INT_MAX, value))
