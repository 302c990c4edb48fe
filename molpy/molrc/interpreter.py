"""Reading molrc statements into a Config: keywords, if-blocks, include, definitions.

MOL's rules (res_manager.c):
- A line's first word decides: ``include``, ``echo``, ``fail``, ``ifeq``, ``ifdef``,
  ``ifndef``, ``ifempty``, ``}`` are keywords (molpy adds ``ifneq``); otherwise the first
  word must end with ':' (``key:``; ``key:value`` with no separator is not a key) and the
  other words are the value. A key may be any word, ``@pseudofile`` included, and is
  itself ``${}``-expanded; a key with no words is legal.
- The first definition of a key wins (later ones are dropped before their words are
  expanded), except MOL's multi-instance keys (table.MULTI_KEYS).
- ``ifdef W`` is true when W, expanded, is not empty and does not start with '$' (so
  ``ifdef ${v}`` asks whether v is defined with a value; a plain word is always true);
  ``ifndef`` and ``ifempty`` are its negation. ``ifeq W A B ...`` is true when W,
  expanded, equals any of A, B ... expanded (every word after W counts, a trailing '{'
  too). ``ifneq`` (molpy only) is true when it equals none. The '{' is not required.
  ``}`` closes the innermost block; a ``}`` followed by a word that starts with ``else``
  switches to the other branch. Lines in a branch not taken are not read, except for the
  keywords that open and close blocks; a file must close every block it opens.
- ``include FILE`` reads FILE (its first word, expanded) where it stands; at most 7
  includes may be open at once. ``echo`` prints its words; ``fail`` prints them and stops.
Where molpy differs: a ``}`` or ``} else {`` with no open block is an error at that line
(MOL went on, skipping the rest of the file after such an ``else``); an include cycle is
named as such (MOL ran into its nesting limit); a parse error names the first line of a
continued line.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field

from .bounds import MAX_INCLUDES_OPEN
from .errors import ConfigError, show
from .expand import Expander
from .source import ReadBudget, logical_lines, read_file
from .table import CMDLINE, MOL_TREE, MULTI_KEYS, Config, Definition
from .words import SEPARATORS, split_words

_IF_KEYWORDS = frozenset({"ifeq", "ifneq", "ifdef", "ifndef", "ifempty"})


@dataclass
class _Blocks:
    """MOL's if-state of one file: ``open_active`` blocks whose condition was read, and
    ``open_dummy`` blocks opened inside a branch not taken (their conditions do not count)."""

    open_active: int = 0
    open_dummy: int = 0
    skipping: int = 0                # >0: the current lines are not taken
    starts: list[str] = field(default_factory=list)   # where each open block began


class Interpreter:
    """Reads files and lines into ``config``; one per configuration."""

    def __init__(self, config: Config, *, echo: Callable[[str], None], origin: str,
                 fixed_base: str | None = None) -> None:
        self.config = config
        self.echo = echo
        self.origin = origin
        # what relative paths (includes, values) are relative to: MOL's data directory for a
        # MOL installation (MOL ran there), else the folder of the file they are in
        self.fixed_base = fixed_base
        self.expander = Expander(self._lookup)
        self.budget = ReadBudget()
        self.includes_open = 0
        self.stack: list[str] = []         # real paths of the files being read (include cycles)

    def _lookup(self, name: str) -> list[str] | None:
        d = self.config.first(name)
        if d is None:
            return None
        self.config.referenced.add(name)
        return d.words

    def expand(self, word: str, where: str) -> str:
        return self.expander.expand(word, where)

    # -- files --

    def read_file(self, path: str, where: str | None) -> None:
        """Read one molrc file (``where``: the include line, None for a top-level file)."""
        real = os.path.realpath(path)
        if real in self.stack:
            chain = " -> ".join([*self.stack[self.stack.index(real):], real])
            raise ConfigError(f"{where}: include cycle: {chain}")
        text = read_file(path, self.budget, f"{where}: include {path}" if where else path)
        self.config.files.append(path)
        self.stack.append(real)
        try:
            self.read_text(text, path, self.fixed_base or os.path.dirname(os.path.abspath(path)))
        finally:
            self.stack.pop()

    def read_text(self, text: str, name: str, base_dir: str) -> None:
        blocks = _Blocks()
        for lineno, line in logical_lines(text, name):
            self.line(split_words(line), f"{name}:{lineno}", base_dir, blocks)
        if blocks.open_active or blocks.open_dummy:
            raise ConfigError(f"{blocks.starts[-1]}: this block is never closed with '}}' (in {name})")

    # -- lines --

    def line(self, words: list[str], where: str, base_dir: str, blocks: _Blocks) -> None:
        if not words:
            return
        first = words[0]
        if first in _IF_KEYWORDS:
            self.open_block(first, words[1:], where, blocks)
            return
        if first == "}":
            self.close_block(words[1:], where, blocks)
            return
        if blocks.skipping:
            return
        if first == "include":
            if len(words) > 1:
                self.include(self.expand(words[1], where), where, base_dir)
            return
        if first in ("echo", "fail"):
            text = " ".join(self.expand(w, where) for w in words[1:])
            if first == "fail":
                raise ConfigError(f"{where}: {text or 'fail'}")
            self.echo(text)
            return
        if len(first) < 2 or not first.endswith(":"):
            raise ConfigError(f"{where}: cannot parse {show(first)}: a line is 'key: value' (a space after "
                              f"the ':'), a keyword (include, echo, fail, ifeq, ifneq, ifdef, ifndef, "
                              f"ifempty, '}}') or a comment")
        self.define(first[:-1], words[1:], where, base_dir)

    def define(self, key_word: str, value_words: list[str], where: str, base_dir: str, *,
               head: bool = False, origin: str | None = None) -> None:
        key = self.expand(key_word, where)
        if not head and self.config.present(key) and key not in MULTI_KEYS:
            return                                      # the first definition wins (values unread)
        words = [self.expand(w, where) for w in value_words]
        self.config.add(Definition(key, words, where, base_dir, origin or self.origin), head=head)

    def define_setting(self, key: str, value: str, base_dir: str) -> None:
        """``-s KEY=VALUE``: a definition put in front of all others (MOL's command-line
        resources), its value split into words and expanded like a line's."""
        where = "command line"
        if not key or any(c in key for c in SEPARATORS + "\"'#"):
            raise ConfigError(f"-s {show(key)}={show(value)}: a key is one word (no spaces, commas, quotes or '#')")
        self.define(key, split_words(value), where, base_dir, head=True, origin=CMDLINE)

    def include(self, target: str, where: str, base_dir: str) -> None:
        if self.includes_open >= MAX_INCLUDES_OPEN:
            raise ConfigError(f"{where}: includes nested more than {MAX_INCLUDES_OPEN} deep")
        path = os.path.join(base_dir, target if self.origin == MOL_TREE else os.path.expanduser(target))
        self.includes_open += 1
        try:
            self.read_file(path, where)
        finally:
            self.includes_open -= 1

    # -- blocks --

    def open_block(self, keyword: str, args: list[str], where: str, blocks: _Blocks) -> None:
        blocks.starts.append(where)
        if blocks.skipping:                           # inside a branch not taken
            blocks.open_dummy += 1
            blocks.skipping += 1
            for w in args:                            # MOL expands them all the same
                self.expand(w, where)
            return
        blocks.open_active += 1
        blocks.skipping = 0 if self.condition(keyword, args, where) else 1

    def condition(self, keyword: str, args: list[str], where: str) -> bool:
        if keyword in ("ifdef", "ifndef", "ifempty"):
            value = self.expand(args[0], where) if args else ""
            defined = bool(value) and not value.startswith("$")
            return defined if keyword == "ifdef" else not defined
        if not args:
            return keyword == "ifneq"
        word = self.expand(args[0], where)
        equal = any(self.expand(w, where) == word for w in args[1:])
        return equal if keyword == "ifeq" else not equal

    def close_block(self, args: list[str], where: str, blocks: _Blocks) -> None:
        is_else = any(self.expand(w, where).startswith("else") for w in args)
        if not (blocks.open_active or blocks.open_dummy):
            what = "} else {" if is_else else "}"
            raise ConfigError(f"{where}: '{what}' without an open block")
        if is_else:
            if not blocks.open_dummy:
                blocks.skipping = 0 if blocks.skipping else 1
            return
        blocks.starts.pop()
        if blocks.open_dummy:
            blocks.open_dummy -= 1
            blocks.skipping -= 1
        else:
            blocks.open_active -= 1
            blocks.skipping = 0
