"""MOL's device tree as a model: its nodes, MOL's operations on them, and its limits.

The tree is MOL's pointer structure (parent, first child, next sibling, and the
"allnext" list every lookup walks) so that peer/child order, phandle lookup with
duplicates and node creation answer exactly as MOL's did. Its size is counted as it is
saved (drivers/oftree_state.py) and bounded, so what a file or a guest builds always
fits a session; MOL's tree file format is read by drivers/oftree_file.py.
"""

from __future__ import annotations

import logging
import struct

from molpy import guestwarn

from .cparse import strtoul32
from .device import DeviceError

log = logging.getLogger("molpy.oftree")

MAX_NODES = 65536              # the tree never holds more nodes (files, guests, sessions)
# The tree's size is counted as its saved form (oftree_state: every node and property
# record, header included), and bounded so that a save always fits the session's
# chunk for device state (emulation.session.MAX_SMALL_CHUNK, 16 MiB: such chunks are read
# into memory when a session opens). Limits that agree end to end: what a tree file or a
# guest may build, a save can store and a resume can load. Real trees are about 100 KiB;
# a guest needs about 4,000 set-property calls of 4 KiB to reach the limit.
MAX_BYTES = (16 << 20) - 64
MAX_UNIT = 4096                # a unit string (a guest's name@unit: within its 4096-byte string)
MAX_PATH = 255                 # MOL's package-to-path buffer holds 255 characters
# The records of the saved form (oftree_state writes and reads them); the tree counts
# its size by them.
HEAD = struct.Struct(">8sIII")            # magic, root index (or NONE), next phandle, nodes
NODE_RECORD = struct.Struct(">IHiiiI")    # phandle, unit length (or NO_UNIT), parent, child, sibling, props
PROP_RECORD = struct.Struct(">II")        # name length, value length


def node_cost(unit: str | None) -> int:
    """Bytes a node's record takes in the saved form (its properties not included)."""
    return NODE_RECORD.size + (len(unit) if unit is not None else 0)


def prop_cost(name: bytes, value: bytes) -> int:
    return PROP_RECORD.size + len(name) + len(value)


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

    def charge(self, nbytes: int, nodes: int = 0) -> None:
        """Count ``nbytes`` more of the saved form (and ``nodes`` more nodes), or refuse."""
        if self.size + nbytes > MAX_BYTES - HEAD.size or len(self.allnext) + nodes > MAX_NODES:
            raise TreeError(f"the device tree would grow past {MAX_NODES} nodes or "
                            f"{(MAX_BYTES + 64) >> 20} MiB in its saved form")
        self.size += nbytes

    def set_property(self, dn: Node, name: bytes, value: bytes) -> None:
        """MOL's prom_add_property: an existing property is replaced in place, a new one
        goes first."""
        for entry in dn.props:
            if entry[0] == name:
                self.charge(len(value) - len(entry[1]))
                entry[1] = bytes(value)
                return
        self.charge(prop_cost(name, value))
        dn.props.insert(0, [bytes(name), bytes(value)])

    def add_node(self, parent: Node, name: bytes) -> Node:
        """MOL's prom_add_node: ``name@unit`` splits; the node becomes the first child and
        follows its parent in allnext; it takes the next counted phandle."""
        base, at, unit = name.partition(b"@")
        if len(unit) > MAX_UNIT:
            raise TreeError(f"create-node: a unit string of {len(unit)} bytes (at most {MAX_UNIT})")
        self.charge(node_cost(unit.decode("latin-1") if at else None), 1)
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
