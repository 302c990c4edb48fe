"""``${name}``: MOL's expansion, with bounds on what it may produce and cost.

MOL's rules: ``${name}`` becomes the words of the first definition of ``name``
joined with single spaces, each expanded again (up to 10 levels; deeper text is left
as it is); a name that is not defined, or is defined with no words, stays as the
literal ``${name}``; the name is everything up to the first '}', and a ``${`` with no
'}' after it stays as it is. Definitions store their words already expanded.

Bounds (``bounds``): one expanded word is at most ``MAX_WORD_CHARS`` characters, and
all expansion for one configuration scans and produces at most ``MAX_EXPANSION_WORK``
characters; each scan is linear (one ``find`` for ``${``, one for '}').
"""

from __future__ import annotations

from collections.abc import Callable

from .bounds import MAX_EXPANSION_NESTING, MAX_EXPANSION_WORK, MAX_WORD_CHARS
from .errors import ConfigError


class Expander:
    """Expands words against a lookup (name -> words or None), counting its work."""

    def __init__(self, lookup: Callable[[str], list[str] | None], *,
                 max_word: int = MAX_WORD_CHARS, max_work: int = MAX_EXPANSION_WORK) -> None:
        self.lookup = lookup
        self.max_word = max_word
        self.max_work = max_work
        self.work = 0                     # characters scanned and produced so far

    def expand(self, word: str, where: str) -> str:
        """One word, expanded; ConfigError (naming ``where``) beyond the bounds."""
        if "${" not in word:              # the common case: nothing to do, nothing to count
            if len(word) > self.max_word:
                raise ConfigError(f"{where}: a word of {len(word)} characters (the limit is {self.max_word})")
            return word
        out: list[str] = []
        self._into(word, 0, out, [0], where)
        return "".join(out)

    def _into(self, src: str, nesting: int, out: list[str], size: list[int], where: str) -> None:
        self._count(len(src), where)
        pos = 0
        while nesting < MAX_EXPANSION_NESTING:
            start = src.find("${", pos)
            if start < 0:
                break
            end = src.find("}", start + 2)
            if end < 0:
                break
            self._put(src[pos:start], out, size, where)
            name = src[start + 2:end]
            pos = end + 1
            words = self.lookup(name)
            if not words:
                self._put("${" + name + "}", out, size, where)
                continue
            for i, w in enumerate(words):
                if i:
                    self._put(" ", out, size, where)
                self._into(w, nesting + 1, out, size, where)
        self._put(src[pos:], out, size, where)

    def _put(self, text: str, out: list[str], size: list[int], where: str) -> None:
        if not text:
            return
        size[0] += len(text)
        if size[0] > self.max_word:
            raise ConfigError(f"{where}: a word expands to more than {self.max_word} characters")
        self._count(len(text), where)
        out.append(text)

    def _count(self, n: int, where: str) -> None:
        self.work += n
        if self.work > self.max_work:
            raise ConfigError(f"{where}: ${{}} expansion does more than {self.max_work >> 20} MiB "
                              f"of work for this configuration (the limit)")
