"""MOL's device tree files (``oftrees/oftree.*``), read as MOL's promif.c reads them.

The format::

    {                                   a node; nested braces are its children
        (unit_string 0 )                the node's unit address ("*" matches any)
        (mol_phandle 0x1234 )           a fixed phandle (>= 0x1000), else counted from 1
        (property name   <str>  "pci", "x" )     strings, NUL-separated at the commas
        (property reg    <word> 0x1 0x2 )        32-bit big-endian words
        (property mac    <byte> 0x00 0x50 )      bytes
        (property empty  )                       no value
    }

MOL's parser has quirks that a MOL tree file may rely on, and molpy keeps them: a
``(`` counts only when nothing but blanks precede it on its line (anything else makes
the parenthesised group a comment); properties after a node's first child are not
read; braces are found by plain search (a brace inside a comment or a string still
counts). Phandles are numbered in file order, parents first. The nodes read go into a
DeviceTree (drivers/oftree.py), whose limits a file meets like a guest.
"""

from __future__ import annotations

import logging
import re

from .cparse import SPACE, scan_integer
from .oftree import DeviceTree, Node, TreeError, node_cost, prop_cost

log = logging.getLogger("molpy.oftree")

PHANDLE_BASE = 0x1000          # mol_phandle values below this are refused (MOL's rule)
MAX_FILE = 16 << 20            # a tree file larger than this is refused
MAX_DEPTH = 256                # nodes nested deeper than this are refused
BLANK = " \t"
_PAREN = re.compile(r"[()]")


def _balance(text: str, p: int) -> int | None:
    """Index of the ')' closing the '(' at p (MOL's balance), None if it never closes."""
    count = 1
    for m in _PAREN.finditer(text, p + 1):
        count += 1 if m.group() == "(" else -1
        if not count:
            return m.start()
    return None


def _find_key(text: str, pos: int, key: str) -> tuple[int, int] | None:
    """MOL's findkey: the first uncommented ``(key ...)`` from pos: (data start, ')' index)."""
    p = pos
    while True:
        p = text.find("(", p)
        if p < 0:
            return None
        q = p - 1
        comment = False
        while q >= pos:
            ch = text[q]
            if ch in BLANK:
                q -= 1
                continue
            comment = ch not in "\r\n"
            break
        if not comment:
            k = p + 1
            while k < len(text) and text[k] in SPACE:
                k += 1
            if text.startswith(key, k):
                end = _balance(text, p)
                return None if end is None else (k + len(key), end)
        nxt = _balance(text, p)
        if nxt is None:
            return None
        p = nxt


def _words(text: str, pos: int, widths: tuple[int, ...]) -> list[str]:
    """sscanf("%99s %39s") from pos: white-space separated words of at most ``width`` chars."""
    out = []
    for width in widths:
        while pos < len(text) and text[pos] in SPACE:
            pos += 1
        start = pos
        while pos < len(text) and text[pos] not in SPACE and pos - start < width:
            pos += 1
        if pos == start:
            break
        out.append(text[start:pos])
    return out


def _hex_format(text: str, width: int) -> bytes:
    """MOL's hex_format: numbers as " 0x%x" or " %d", each stored as a byte or a BE word."""
    paren = text.find("(")
    if paren >= 0:
        text = text[paren + 1:]
    out = bytearray()
    i = 0
    while True:
        j = i
        while j < len(text) and text[j] in SPACE:
            j += 1
        value = None
        if text.startswith("0x", j):
            got = scan_integer(text, j + 2, 16)
            if got is not None:
                mag, neg, end = got
                value = 0xFFFFFFFF if mag > 0xFFFFFFFF else mag
                value = (-value) & 0xFFFFFFFF if neg else value
        if value is None:
            got = scan_integer(text, i, 10)
            if got is None:
                break
            mag, neg, end = got
            v = -mag if neg else mag
            value = max(-0x80000000, min(0x7FFFFFFF, v)) & 0xFFFFFFFF
        i = end
        if width == 1:
            out.append(value & 0xFF)
        else:
            out += value.to_bytes(4, "big")
    return bytes(out)


def _string_format(text: str) -> bytes:
    """MOL's string_format: quoted parts, a NUL for each comma outside quotes, a final NUL."""
    out = bytearray()
    on = False
    for ch in text:
        if ch == '"':
            on = not on
        elif on:
            out.append(ord(ch))
        elif ch == ",":
            out.append(0)
    out.append(0)
    return bytes(out)


class _Parser:
    """MOL's read_node/build_node over one file's text."""

    def __init__(self, tree: DeviceTree, data: bytes, where: str) -> None:
        if len(data) > MAX_FILE:
            raise TreeError(f"{where}: larger than {MAX_FILE >> 20} MiB")
        self.tree = tree
        self.text = data.split(b"\0", 1)[0].decode("latin-1")   # MOL reads a C string
        self.where = where

    def parse(self) -> Node | None:
        self._made: list[Node] = []
        first, _ = self._level(0, None, 0)
        # MOL puts each node it reads first in allnext: the newest first, before the old
        # ones (one splice, not an insert at the front per node)
        self.tree.allnext[0:0] = self._made[::-1]
        return first

    def _level(self, pos: int, parent: Node | None, depth: int) -> tuple[Node | None, int]:
        if depth > MAX_DEPTH:
            raise TreeError(f"{self.where}: nodes nested deeper than {MAX_DEPTH}")
        text = self.text
        first: Node | None = None
        last: Node | None = None
        while True:
            start = text.find("{", pos)
            if start < 0:
                break
            end = text.find("}", pos)
            if end < 0:
                log.warning("%s: parse error: a '{' is never closed", self.where)
                break
            if start > end:
                pos = end + 1
                break
            child = text.find("{", start + 1, end)
            dn = self._build(text[start + 1:child if child >= 0 else end])
            dn.parent = parent
            pos = end + 1
            if child >= 0:
                dn.child, pos = self._level(child, dn, depth + 1)
            self._made.append(dn)
            if last is None:
                first = dn
            else:
                last.sibling = dn
            last = dn
        return first, pos

    def _build(self, body: str) -> Node:
        tree = self.tree
        tree.charge(0, 1 + len(self._made))           # (the nodes read so far join allnext at the end)
        dn = Node()
        found = _find_key(body, 0, "unit_string")
        if found:
            words = _words(body, found[0], (99,))
            dn.unit = words[0] if words else ""
        tree.charge(node_cost(dn.unit))
        found = _find_key(body, 0, "mol_phandle")
        if found:
            got = scan_integer(body, found[0], 16)
            if got is not None:
                mag, neg, _ = got
                value = 0xFFFFFFFF if mag > 0xFFFFFFFF else mag
                value = (-value) & 0xFFFFFFFF if neg else value
                if value < PHANDLE_BASE:
                    log.warning("%s: mol_phandle 0x%X is below 0x%X; a phandle is counted instead",
                                self.where, value, PHANDLE_BASE)
                    value = 0
                dn.phandle = value
        if not dn.phandle:
            dn.phandle = tree.next_phandle
            tree.next_phandle = (tree.next_phandle + 1) & 0xFFFFFFFF
        pos = 0
        while True:
            found = _find_key(body, pos, "property")
            if found is None:
                break
            start, end = found
            pos = end
            words = _words(body, start, (99, 39))
            name = words[0] if words else ""
            fmt = words[1] if len(words) > 1 else ""
            value = b""
            if fmt in ("<byte>", "<word>", "<str>", ")"):
                if fmt != ")":
                    vstart = body.find(">", start) + 1
                    stop = end if vstart <= end else len(body)
                    region = body[vstart:stop]
                    value = (_string_format(region) if fmt == "<str>"
                             else _hex_format(region, 1 if fmt == "<byte>" else 4))
            else:
                log.warning("%s: data format %r of property %r is not one MOL knows",
                            self.where, fmt, name)
            name_b = name.encode("latin-1")
            tree.charge(prop_cost(name_b, value))
            dn.props.append([name_b, value])
        return dn


def parse_tree(data: bytes, where: str = "oftree") -> DeviceTree:
    """A tree file's text as MOL's import_oftree reads it."""
    tree = DeviceTree()
    tree.root = _Parser(tree, data, where).parse()
    if tree.root is None:
        raise TreeError(f"{where}: no node in the file (MOL: import of the device tree failed)")
    return tree


def import_nodes(tree: DeviceTree, parent: Node, text: bytes, where: str) -> Node | None:
    """MOL's prom_import_node: a tree file's nodes become the first children of
    ``parent`` (only the first of them learns its parent, as in MOL)."""
    first = _Parser(tree, text, where).parse()
    if first is None:
        return None
    last = first
    while last.sibling is not None:
        last = last.sibling
    last.sibling = parent.child
    parent.child = first
    first.parent = parent
    tree.changed()
    return first
