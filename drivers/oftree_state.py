"""The device tree's saved form in a session: written, and read back from untrusted bytes.

Version 2 (``STATE_MAGIC``) is binary: a header, then each node of allnext in order with
its unit string and properties; its length is what ``DeviceTree.size`` counts, so a tree
the model accepted always fits a session's device-state chunk. Version 1, hex strings in
JSON, is what molpy saved before; it is still read. Whatever the form, every field is
checked, every length bounded by what is left, and the links must form one tree under
the root.
"""

from __future__ import annotations

import json

from .oftree import HEAD, MAX_NODES, MAX_UNIT, NODE_RECORD, PROP_RECORD, DeviceTree, Node, TreeError, \
    node_cost, prop_cost

STATE_MAGIC = b"MOLPYDT\x02"
NO_UNIT = 0xFFFF                # a node's unit length when it has no unit string
NONE = 0xFFFFFFFF               # the root index of an empty tree


def from_state(data: bytes, version: int) -> DeviceTree:
    """A saved tree of session state ``version`` (2: binary, 1: hex in JSON)."""
    return from_json(data) if version < 2 else from_bytes(data)


def to_bytes(tree: DeviceTree) -> bytes:
    """The saved form (session state version 2): binary, its length what ``size`` counts."""
    index = {id(n): i for i, n in enumerate(tree.allnext)}

    def ref(n: Node | None) -> int:
        return -1 if n is None else index[id(n)]

    out = [HEAD.pack(STATE_MAGIC, NONE if tree.root is None else index[id(tree.root)],
                     tree.next_phandle, len(tree.allnext))]
    for n in tree.allnext:
        unit = n.unit.encode("latin-1") if n.unit is not None else b""
        out.append(NODE_RECORD.pack(n.phandle, NO_UNIT if n.unit is None else len(unit), ref(n.parent),
                                    ref(n.child), ref(n.sibling), len(n.props)))
        out.append(unit)
        for k, v in n.props:
            out.append(PROP_RECORD.pack(len(k), len(v)))
            out.append(k)
            out.append(v)
    return b"".join(out)


def from_bytes(data: bytes) -> DeviceTree:
    """A saved tree in the binary form, every field checked, every length bounded by
    what is left (the file is untrusted); the links must form one tree under the root."""
    view = memoryview(data)
    if len(view) < HEAD.size:
        raise TreeError("damaged device tree state (too short)")
    magic, root, nxt, count = HEAD.unpack_from(view)
    if magic != STATE_MAGIC:
        raise TreeError("damaged device tree state (not molpy's tree format)")
    if count > MAX_NODES:
        raise TreeError("the node list is too long")
    tree = DeviceTree()
    tree.next_phandle = nxt
    tree.allnext = [Node() for _ in range(count)]
    pos = HEAD.size

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
        ph, ulen, parent, child, sibling, nprops = NODE_RECORD.unpack(take(NODE_RECORD.size))
        node.phandle = ph
        if ulen != NO_UNIT:
            if ulen > MAX_UNIT:
                raise TreeError("bad unit string")
            node.unit = take(ulen).decode("latin-1")
        tree.charge(node_cost(node.unit))
        node.parent, node.child, node.sibling = get(parent), get(child), get(sibling)
        if nprops * PROP_RECORD.size > len(view) - pos:
            raise TreeError("damaged device tree state (more properties than bytes)")
        for _ in range(nprops):
            klen, vlen = PROP_RECORD.unpack(take(PROP_RECORD.size))
            name, value = take(klen), take(vlen)
            tree.charge(prop_cost(name, value))
            node.props.append([name, value])
    if pos != len(view):
        raise TreeError("damaged device tree state (bytes after the last node)")
    tree.root = None if root == NONE else get(root)
    if root != NONE and tree.root is None:
        raise TreeError(f"bad node reference {root!r}")
    check_links(tree)
    return tree


def to_json(tree: DeviceTree) -> bytes:
    """The old saved form (session state version 1: hex strings in JSON), for old sessions'
    tests; molpy saves version 2."""
    index = {id(n): i for i, n in enumerate(tree.allnext)}

    def ref(n: Node | None) -> int:
        return -1 if n is None else index[id(n)]

    nodes = [[n.phandle, n.unit, ref(n.parent), ref(n.child), ref(n.sibling),
              [[k.hex(), v.hex()] for k, v in n.props]] for n in tree.allnext]
    return json.dumps({"root": ref(tree.root), "next": tree.next_phandle, "nodes": nodes},
                      separators=(",", ":")).encode()


def from_json(data: bytes) -> DeviceTree:
    """A saved tree of version 1, every field checked: the links must form one tree under the root."""
    try:
        doc = json.loads(data)
        raw = doc["nodes"]
        if not isinstance(raw, list) or len(raw) > MAX_NODES:
            raise TreeError("the node list is missing or too long")
        tree = DeviceTree()
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
            tree.charge(node_cost(unit))
            node.parent, node.child, node.sibling = get(parent), get(child), get(sibling)
            if not isinstance(props, list):
                raise TreeError("bad property list")
            for k, v in props:
                name, value = bytes.fromhex(k), bytes.fromhex(v)
                tree.charge(prop_cost(name, value))
                node.props.append([name, value])
        tree.root = get(doc["root"])
    except TreeError:
        raise
    except (ValueError, KeyError, TypeError) as e:
        raise TreeError(f"damaged device tree state ({e})") from None
    check_links(tree)
    return tree


def check_links(tree: DeviceTree) -> None:
    """Every node once under the root by child/sibling links; parent chains end."""
    if tree.root is None:
        if tree.allnext:
            raise TreeError("saved tree has nodes but no root")
        return
    seen: set[int] = set()
    stack = [tree.root]
    while stack:
        c: Node | None = stack.pop()
        while c is not None:            # a sibling chain; children chains go on the stack
            if id(c) in seen:
                raise TreeError("saved tree links a node twice")
            seen.add(id(c))
            if c.child is not None:
                stack.append(c.child)
            c = c.sibling
    if len(seen) != len(tree.allnext):
        raise TreeError("saved tree has nodes outside the tree")
    # every parent chain ends: each node is walked once (chains already known to end
    # stop the walk), so a 65,536-deep chain costs 65,536 steps, not their square
    ends: set[int] = {id(None)}
    for node in tree.allnext:
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
