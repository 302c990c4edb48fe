"""Splitting a molrc line into words, MOL's way, in one linear pass.

MOL's rules: spaces, tabs, commas, '\\r' and '\\n' separate words; a double- or
single-quoted part is taken as it is (the other quote and '#' included) and the quote
characters themselves separate words, so ``a"b c"d`` is three words and ``""`` none;
a quote left open runs to the end of the line; '#' outside quotes ends the line;
empty words do not exist.
"""

from __future__ import annotations

import re

SEPARATORS = "\t\n\r, "
# one alternative per kind of token; the first character decides which, so matching
# never backtracks and the whole line is scanned once
_TOKEN = re.compile(r'"([^"]*)"?|\'([^\']*)\'?|(#)|([^\t\n\r, "\'#]+)')


def split_words(line: str) -> list[str]:
    """The words of one (joined) line, unexpanded."""
    words = []
    for m in _TOKEN.finditer(line):
        double, single, comment, plain = m.groups()
        if comment:
            break
        word = plain if plain is not None else double if double is not None else single
        if word:
            words.append(word)
    return words
