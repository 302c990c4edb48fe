"""MOL's device tree: its text format, read as MOL's promif.c reads it, and the tree ops.

The format (MOL's ``oftrees/oftree.*`` files)::

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
counts). Phandles are numbered in file order, parents first.

The tree is MOL's pointer structure (parent, first child, next sibling, and the
"allnext" list every lookup walks) so that peer/child order, phandle lookup with
duplicates and node creation answer exactly as MOL's did.
"""

from __future__ import annotations

import json
import logging
import re
import struct

from molpy import guestwarn

from .cparse import SPACE, scan_integer, strtoul32
from .device import DeviceError

log = logging.getLogger("molpy.oftree")

PHANDLE_BASE = 0x1000          # mol_phandle values below this are refused (MOL's rule)
MAX_FILE = 16 << 20            # a tree file larger than this is refused
MAX_DEPTH = 256                # nodes nested deeper than this are refused
MAX_NODES = 65536              # the tree never holds more nodes (files, guests, sessions)
# The tree's size is counted as its saved form (STATE_MAGIC format below: every node and
# property record, header included), and bounded so that a save always fits the session's
# chunk for device state (emulation.session.MAX_SMALL_CHUNK, 16 MiB: such chunks are read
# into memory when a session opens). Limits that agree end to end: what a tree file or a
# guest may build, a save can store and a resume can load. Real trees are about 100 KiB;
# a guest needs about 4,000 set-property calls of 4 KiB to reach the limit.
MAX_BYTES = (16 << 20) - 64
MAX_UNIT = 4096                # a unit string (a guest's name@unit: within its 4096-byte string)
STATE_MAGIC = b"MOLPYDT\x02"
_HEAD = struct.Struct(">8sIII")           # magic, root index (or NONE), next phandle, nodes
_NODE = struct.Struct(">IHiiiI")          # phandle, unit length (or NO_UNIT), parent, child, sibling, props
_PROP = struct.Struct(">II")              # name length, value length
NO_UNIT = 0xFFFF
NONE = 0xFFFFFFFF


def node_cost(unit: str | None) -> int:
    """Bytes a node's record takes in the saved form (its properties not included)."""
    return _NODE.size + (len(unit) if unit is not None else 0)


def prop_cost(name: bytes, value: bytes) -> int:
    return _PROP.size + len(name) + len(value)
MAX_PATH = 255                 # MOL's package-to-path buffer holds 255 characters
BLANK = " \t"
_PAREN = re.compile(r"[()]")


class TreeError(DeviceError):
    """A tree file or saved tree that cannot be used; the message says why."""


class Node:
    """One device node (MOL's mol_device_node_t)."""

    __slots__ = ("phandle", "unit", "props", "parent", "child", "sibling")

    def __init__(self, phandle: int = 0, unit: str | None = None) -> None:
        self.phandle = phandle
        self.unit = unit                        # None: no unit_string
        self.props: list[list] = []             # [name (bytes), value (bytes)], in order
        self.parent: Node | None = None
        self.child: Node | None = None          # first child
        self.sibling: Node | None = None        # next sibling

    def prop(self, name: bytes) -> bytes | None:
        for pname, value in self.props:
            if pname == name:
                return value
        return None

    @property
    def name(self) -> bytes:
        """MOL's node_name: the "name" property as a C string, "" when it is not one."""
        value = self.prop(b"name")
        if not value or value[-1] != 0:
            return b""
        return value.split(b"\0", 1)[0]

    def children(self):
        c = self.child
        while c is not None:
            yield c
            c = c.sibling


class DeviceTree:
    """The tree and MOL's operations on it (promif.c)."""

    def __init__(self) -> None:
        self.root: Node | None = None
        self.allnext: list[Node] = []
        self.next_phandle = 1
        self.size = 0                    # property bytes held
        self._by_phandle: dict[int, Node] | None = None

    # -- lookups --

    def node(self, phandle: int) -> Node | None:
        """MOL's prom_phandle_to_dn: the first node in allnext order with this phandle."""
        if self._by_phandle is None:
            table: dict[int, Node] = {}
            for n in self.allnext:
                table.setdefault(n.phandle, n)
            self._by_phandle = table
        return self._by_phandle.get(phandle)

    def changed(self) -> None:
        self._by_phandle = None

    def find_path(self, path: bytes) -> Node | None:
        """MOL's prom_find_dev_by_path: names match case-insensitively, ``:args`` are
        dropped, ``name@unit`` matches the unit string as hex (``*`` matches any unit)."""
        dn = self.root
        for token in path.split(b"/"):
            if dn is None:
                break
            if not token:
                continue
            token = token.split(b":", 1)[0]
            parent = dn
            wanted = token.lower()
            dn = next((c for c in parent.children() if c.name.lower() == wanted), None)
            if dn is not None:
                continue
            name, at, unit = token.partition(b"@")
            for c in parent.children():
                if c.unit is None:
                    continue
                if name and c.name.lower() != name.lower():
                    continue
                if c.unit.startswith("*"):
                    dn = c
                    break
                if not at:
                    continue           # MOL would read a null unit here (it cannot happen
                    # for a named token, whose name match failed above)
                if strtoul32(unit.decode("latin-1"), 16) == strtoul32(c.unit, 16):
                    dn = c
                    break
        return dn

    def find_type(self, dtype: bytes) -> Node | None:
        """MOL's prom_find_type (first match): device_type equal, ignoring case."""
        for n in self.allnext:
            v = n.prop(b"device_type")
            if v is not None and len(v) == len(dtype) + 1 and v[:-1].lower() == dtype.lower():
                return n
        return None

    def full_name(self, dn: Node) -> bytes:
        """MOL's get_full_name, cut to the 255 characters of its buffer."""
        parts: list[bytes] = []
        chain = []
        n: Node | None = dn
        while n is not None:
            chain.append(n)
            n = n.parent
        for node in reversed(chain):
            if not (node.parent is not None and node.parent.parent is None):
                parts.append(b"/")
            if node.parent is not None:
                parts.append(node.name)
            if node.unit is not None:
                parts.append(b"@" + node.unit.encode("latin-1"))
        return b"".join(parts)[:MAX_PATH]

    def next_property(self, dn: Node, prev: bytes) -> bytes | None:
        """MOL's prom_next_property: the first name for "", the one after ``prev``, else None."""
        if not prev:
            return dn.props[0][0] if dn.props else None
        for i, (name, _) in enumerate(dn.props):
            if name == prev:
                return dn.props[i + 1][0] if i + 1 < len(dn.props) else None
        return None

    # -- changes --

    def _charge(self, nbytes: int, nodes: int = 0) -> None:
        """Count ``nbytes`` more of the saved form (and ``nodes`` more nodes), or refuse."""
        if self.size + nbytes > MAX_BYTES - _HEAD.size or len(self.allnext) + nodes > MAX_NODES:
            raise TreeError(f"the device tree would grow past {MAX_NODES} nodes or "
                            f"{(MAX_BYTES + 64) >> 20} MiB in its saved form")
        self.size += nbytes

    def set_property(self, dn: Node, name: bytes, value: bytes) -> None:
        """MOL's prom_add_property: an existing property is replaced in place, a new one
        goes first."""
        for entry in dn.props:
            if entry[0] == name:
                self._charge(len(value) - len(entry[1]))
                entry[1] = bytes(value)
                return
        self._charge(prop_cost(name, value))
        dn.props.insert(0, [bytes(name), bytes(value)])

    def add_node(self, parent: Node, name: bytes) -> Node:
        """MOL's prom_add_node: ``name@unit`` splits; the node becomes the first child and
        follows its parent in allnext; it takes the next counted phandle."""
        base, at, unit = name.partition(b"@")
        if len(unit) > MAX_UNIT:
            raise TreeError(f"create-node: a unit string of {len(unit)} bytes (at most {MAX_UNIT})")
        self._charge(node_cost(unit.decode("latin-1") if at else None), 1)
        dn = Node(self.next_phandle, unit.decode("latin-1") if at else None)
        self.next_phandle = (self.next_phandle + 1) & 0xFFFFFFFF
        dn.parent = parent
        dn.sibling = parent.child
        parent.child = dn
        self.allnext.insert(self.allnext.index(parent) + 1, dn)
        self.set_property(dn, b"name", base + b"\0")
        self.changed()
        return dn

    def create_node(self, path: bytes) -> Node | None:
        """MOL's prom_create_node: the node at ``path``, made with any missing parents."""
        names: list[bytes] = []
        par = self.find_path(path)
        while par is None:
            path = path.rstrip(b"/")
            cut = path.rfind(b"/")
            if cut < 0:
                guestwarn.warn(log, "create-node", "create-node: %r has no parent to create it under", path)
                return None
            names.append(path[cut + 1:])
            path = path[:cut]
            par = self.find_path(path)
        for name in reversed(names):
            par = self.add_node(par, name)
        return par

    def delete_node(self, dn: Node) -> None:
        """MOL's prom_delete_node: the node and its subtree leave the tree (no recursion and
        one pass over allnext, however deep or wide the subtree)."""
        if dn.parent is not None:
            link = dn.parent
            if link.child is dn:
                link.child = dn.sibling
            else:
                c = link.child
                while c is not None and c.sibling is not dn:
                    c = c.sibling
                if c is not None:
                    c.sibling = dn.sibling
        gone: set[int] = set()
        stack = [dn]
        while stack:
            n = stack.pop()
            if id(n) in gone:
                continue
            gone.add(id(n))
            self.size -= node_cost(n.unit) + sum(prop_cost(k, v) for k, v in n.props)
            c = n.child
            while c is not None:
                stack.append(c)
                c = c.sibling
            n.child = None
        self.allnext = [n for n in self.allnext if id(n) not in gone]
        self.changed()

    def import_nodes(self, parent: Node, text: bytes, where: str) -> Node | None:
        """MOL's prom_import_node: a tree file's nodes become the first children of
        ``parent`` (only the first of them learns its parent, as in MOL)."""
        first = _Parser(self, text, where).parse()
        if first is None:
            return None
        last = first
        while last.sibling is not None:
            last = last.sibling
        last.sibling = parent.child
        parent.child = first
        first.parent = parent
        self.changed()
        return first

    # -- session state --

    def to_json(self) -> bytes:
        index = {id(n): i for i, n in enumerate(self.allnext)}

        def ref(n: Node | None) -> int:
            return -1 if n is None else index[id(n)]

        nodes = [[n.phandle, n.unit, ref(n.parent), ref(n.child), ref(n.sibling),
                  [[k.hex(), v.hex()] for k, v in n.props]] for n in self.allnext]
        return json.dumps({"root": ref(self.root), "next": self.next_phandle, "nodes": nodes},
                          separators=(",", ":")).encode()

    def to_bytes(self) -> bytes:
        """The saved form (session state version 2): binary, its length what ``size`` counts."""
        index = {id(n): i for i, n in enumerate(self.allnext)}

        def ref(n: Node | None) -> int:
            return -1 if n is None else index[id(n)]

        out = [_HEAD.pack(STATE_MAGIC, NONE if self.root is None else index[id(self.root)],
                          self.next_phandle, len(self.allnext))]
        for n in self.allnext:
            unit = n.unit.encode("latin-1") if n.unit is not None else b""
            out.append(_NODE.pack(n.phandle, NO_UNIT if n.unit is None else len(unit), ref(n.parent),
                                  ref(n.child), ref(n.sibling), len(n.props)))
            out.append(unit)
            for k, v in n.props:
                out.append(_PROP.pack(len(k), len(v)))
                out.append(k)
                out.append(v)
        return b"".join(out)

    @classmethod
    def from_bytes(cls, data: bytes) -> "DeviceTree":
        """A saved tree in the binary form, every field checked, every length bounded by
        what is left (the file is untrusted); the links must form one tree under the root."""
        view = memoryview(data)
        if len(view) < _HEAD.size:
            raise TreeError("damaged device tree state (too short)")
        magic, root, nxt, count = _HEAD.unpack_from(view)
        if magic != STATE_MAGIC:
            raise TreeError("damaged device tree state (not molpy's tree format)")
        if count > MAX_NODES:
            raise TreeError("the node list is too long")
        tree = cls()
        tree.next_phandle = nxt
        tree.allnext = [Node() for _ in range(count)]
        pos = _HEAD.size

        def get(i: int) -> Node | None:
            if not -1 <= i < count:
                raise TreeError(f"bad node reference {i!r}")
            return None if i < 0 else tree.allnext[i]

        def take(n: int) -> bytes:
            nonlocal pos
            if pos + n > len(view):
                raise TreeError("damaged device tree state (it ends inside a record)")
            pos += n
            return bytes(view[pos - n:pos])

        for node in tree.allnext:
            ph, ulen, parent, child, sibling, nprops = _NODE.unpack(take(_NODE.size))
            node.phandle = ph
            if ulen != NO_UNIT:
                if ulen > MAX_UNIT:
                    raise TreeError("bad unit string")
                node.unit = take(ulen).decode("latin-1")
            tree._charge(node_cost(node.unit))
            node.parent, node.child, node.sibling = get(parent), get(child), get(sibling)
            if nprops * _PROP.size > len(view) - pos:
                raise TreeError("damaged device tree state (more properties than bytes)")
            for _ in range(nprops):
                klen, vlen = _PROP.unpack(take(_PROP.size))
                name, value = take(klen), take(vlen)
                tree._charge(prop_cost(name, value))
                node.props.append([name, value])
        if pos != len(view):
            raise TreeError("damaged device tree state (bytes after the last node)")
        tree.root = None if root == NONE else get(root)
        if root != NONE and tree.root is None:
            raise TreeError(f"bad node reference {root!r}")
        tree._check_links()
        return tree

    @classmethod
    def from_json(cls, data: bytes) -> "DeviceTree":
        """A saved tree, every field checked: the links must form one tree under the root."""
        try:
            doc = json.loads(data)
            raw = doc["nodes"]
            if not isinstance(raw, list) or len(raw) > MAX_NODES:
                raise TreeError("the node list is missing or too long")
            tree = cls()
            tree.next_phandle = _u32(doc["next"])
            tree.allnext = [Node() for _ in raw]
            n = len(raw)

            def get(i) -> Node | None:
                if type(i) is not int or not -1 <= i < n:
                    raise TreeError(f"bad node reference {i!r}")
                return None if i < 0 else tree.allnext[i]

            for node, entry in zip(tree.allnext, raw):
                phandle, unit, parent, child, sibling, props = entry
                node.phandle = _u32(phandle)
                if unit is not None and (not isinstance(unit, str) or len(unit) > MAX_UNIT
                                         or max(map(ord, unit), default=0) > 0xFF):
                    raise TreeError("bad unit string")
                node.unit = unit
                tree._charge(node_cost(unit))
                node.parent, node.child, node.sibling = get(parent), get(child), get(sibling)
                if not isinstance(props, list):
                    raise TreeError("bad property list")
                for k, v in props:
                    name, value = bytes.fromhex(k), bytes.fromhex(v)
                    tree._charge(prop_cost(name, value))
                    node.props.append([name, value])
            tree.root = get(doc["root"])
        except TreeError:
            raise
        except (ValueError, KeyError, TypeError) as e:
            raise TreeError(f"damaged device tree state ({e})") from None
        tree._check_links()
        return tree

    def _check_links(self) -> None:
        """Every node once under the root by child/sibling links; parent chains end."""
        if self.root is None:
            if self.allnext:
                raise TreeError("saved tree has nodes but no root")
            return
        seen: set[int] = set()
        stack = [self.root]
        while stack:
            c: Node | None = stack.pop()
            while c is not None:            # a sibling chain; children chains go on the stack
                if id(c) in seen:
                    raise TreeError("saved tree links a node twice")
                seen.add(id(c))
                if c.child is not None:
                    stack.append(c.child)
                c = c.sibling
        if len(seen) != len(self.allnext):
            raise TreeError("saved tree has nodes outside the tree")
        # every parent chain ends: each node is walked once (chains already known to end
        # stop the walk), so a 65,536-deep chain costs 65,536 steps, not their square
        ends: set[int] = {id(None)}
        for node in self.allnext:
            path: list[Node] = []
            on_path: set[int] = set()
            p: Node | None = node
            while id(p) not in ends:
                if id(p) in on_path:
                    raise TreeError("saved tree has a parent loop")
                on_path.add(id(p))
                path.append(p)
                p = p.parent
            ends.update(on_path)


def _u32(v) -> int:
    if type(v) is not int or not 0 <= v <= 0xFFFFFFFF:
        raise TreeError(f"bad 32-bit value {v!r}")
    return v


# -- the parser --

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
        tree._charge(0, 1 + len(self._made))          # (the nodes read so far join allnext at the end)
        dn = Node()
        found = _find_key(body, 0, "unit_string")
        if found:
            words = _words(body, found[0], (99,))
            dn.unit = words[0] if words else ""
        tree._charge(node_cost(dn.unit))
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
            tree._charge(prop_cost(name_b, value))
            dn.props.append([name_b, value])
        return dn


def parse_tree(data: bytes, where: str = "oftree") -> DeviceTree:
    """A tree file's text as MOL's import_oftree reads it."""
    tree = DeviceTree()
    tree.root = _Parser(tree, data, where).parse()
    if tree.root is None:
        raise TreeError(f"{where}: no node in the file (MOL: import of the device tree failed)")
    return tree
