"""The device tree device: MOL's PROM_IFACE (76) and PROM_PATH_IFACE (77).

Made only when MachineConfig.oftree names a tree file. The tree is read as MOL's
promif.c reads it, then changed as MOL's host changed it at start-up: /memory's
``reg`` becomes the RAM size (memory.c), and when the config has the CPU's node file
(resource ``ppc750_cpu`` etc., as MOL's molrc.post sets it) the tree's cpu nodes are
replaced by that file's (molcpu.c). MOL added no nodes for the disks ablk serves: the
tree file's ``mol-blk`` node carries a ``disk`` child with unit ``*`` for all of them.

Answers are MOL's (see docs/firmware.md for each op). The guest is untrusted: names,
paths and buffers must lie in RAM (MOL checked only the first byte), a string must end
within 4096 bytes, and the tree stops growing at oftree.MAX_NODES nodes and
oftree.MAX_BYTES in its saved form (the call then answers -1; see oftree.MAX_BYTES for
why: what a guest builds, a save can always store).

The whole tree, phandles included, is the device's session state, so a resumed guest
finds every node and property it created or changed.
"""

from __future__ import annotations

import logging
import os
from typing import NamedTuple

from ..cpu import CPU_ALIASES, DEFAULT_CPU
from ..emulation.memory import GuestAccessError
from ..files import HostFileError, read_limited
from ..timebase import TB_FREQ
from .device import Device, DeviceContext, StateError
from .oftree import DeviceTree, Node, TreeError
from .oftree_file import MAX_FILE, import_nodes, parse_tree
from .oftree_state import from_state, to_bytes
from .resources import str_res

log = logging.getLogger("molpy.devtree")

OSI_PROM_IFACE = 76
OSI_PROM_PATH_IFACE = 77

PROM_CLOSE = 0
PROM_PEER = 1
PROM_CHILD = 2
PROM_PARENT = 3
PROM_PACKAGE_TO_PATH = 4
PROM_GET_PROP_LEN = 5
PROM_GET_PROP = 6
PROM_NEXT_PROP = 7
PROM_SET_PROP = 8
PROM_CHANGE_PHANDLE = 9
PROM_CREATE_NODE = 16
PROM_FIND_DEVICE = 17

MAX_SET_PROP = 0x1000          # MOL refuses a longer set-prop ("limit exceeded")
MAX_STRING = 4096              # names and paths must end within this many bytes

# MOL's CPU node resources (molcpu.c's table), by the start of Unicorn's model name
CPU_NODE_RESOURCES = (("601", "ppc601_cpu"), ("603", "ppc603_cpu"), ("604", "ppc604_cpu"),
                      ("750", "ppc750_cpu"), ("7400", "ppc7400_cpu"), ("7410", "ppc7410_cpu"),
                      ("7441", "ppc7450_cpu"), ("7445", "ppc7450_cpu"), ("7447", "ppc7450_cpu"),
                      ("7448", "ppc7450_cpu"), ("745", "ppc7450_cpu"))


def _signed(v: int) -> int:
    return v - (1 << 32) if v & 0x80000000 else v


def cpu_resource(cpu: str | None) -> str:
    """The resource naming the CPU node file for a molrc ``cpu:`` value."""
    key = (cpu or DEFAULT_CPU).strip().lower()
    key = CPU_ALIASES.get(key, key)
    for prefix, res in CPU_NODE_RESOURCES:
        if key.startswith(prefix):
            return res
    return "ppc750_cpu"


def read_tree_file(path: str, what: str = "oftree") -> bytes:
    """A tree file's bytes; a FIFO, a folder or a file over 16 MiB is refused."""

    try:
        return read_limited(path, MAX_FILE, what=what)
    except HostFileError as e:
        raise TreeError(str(e)) from None


def build_tree(config, ram_size: int) -> DeviceTree:
    """The tree as MOL's host had it when the firmware started."""
    tree = parse_tree(read_tree_file(config.oftree), config.oftree)
    memory = tree.find_path(b"/memory")
    if memory is not None:
        reg = bytearray(32)
        reg[4:8] = ram_size.to_bytes(4, "big")
        tree.set_property(memory, b"reg", bytes(reg))
    cpu_file = str_res(config.resources, cpu_resource(config.cpu))
    if cpu_file:
        _import_cpu_node(tree, config, cpu_file)
    cpu = tree.find_type(b"cpu")
    if cpu is not None:
        # MOL's fix_cpu_node: the frequencies of this machine. molpy's time base counts at
        # TB_FREQ; the bus is guessed as 4 x the time base (MOL's guess when it had none);
        # the clock is the host's, as MOL read it.
        for name, hz in ((b"timebase-frequency", TB_FREQ), (b"bus-frequency", 4 * TB_FREQ),
                         (b"clock-frequency", host_cpu_hz())):
            tree.set_property(cpu, name, hz.to_bytes(4, "big"))
    return tree


def host_cpu_hz(default: int = 400_000_000) -> int:
    """The host CPU's clock as /proc/cpuinfo gives it (``default`` where it does not)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("cpu mhz"):
                    return min(int(float(line.split(":", 1)[1]) * 1_000_000), 0xFFFFFFFF)
    except (OSError, ValueError):
        pass
    return default


def _import_cpu_node(tree: DeviceTree, config, cpu_file: str) -> None:
    """MOL's fix_cpu_node: the cpu nodes give way to the CPU's own node file."""
    if not os.path.isabs(cpu_file):
        lib = str_res(config.resources, "lib")
        base = lib if lib else os.path.dirname(os.path.abspath(config.oftree))
        cpu_file = os.path.join(base, cpu_file)
    cpu = tree.find_type(b"cpu")
    parent = cpu.parent if cpu is not None else tree.find_type(b"cpus")
    if parent is None:
        log.warning("device tree has no cpu or cpus node; %s is not imported", cpu_file)
        return
    for _ in range(len(tree.allnext)):
        cpu = tree.find_type(b"cpu")
        if cpu is None or cpu.parent is None:
            break
        tree.delete_node(cpu)
    import_nodes(tree, parent, read_tree_file(cpu_file, "cpu node file"), cpu_file)


class DevTree(Device):
    """The device tree and the two PROM selectors."""

    kind = "OFTR"
    version = 2          # 2: the binary saved form (oftree_state.STATE_MAGIC); 1: hex in JSON
    min_version = 1

    def __init__(self, ctx: DeviceContext, tree: DeviceTree | None, saved: "TreeState | None" = None) -> None:
        self.ctx = ctx
        self.memory = ctx.memory
        self.tree: DeviceTree | None = tree     # None: the guest closed it
        self._saved = saved                     # the tree a session gave, for reset
        self._dirty = False

    def attach(self, ctx: DeviceContext) -> None:
        self.osi = ctx.osi
        if self.tree is not None:
            self._register()

    def _register(self) -> None:
        if not self.osi.serves(OSI_PROM_IFACE):
            self.osi.register(OSI_PROM_IFACE, self.prom_iface, 5, "devtree")
            self.osi.register(OSI_PROM_PATH_IFACE, self.prom_path_iface, 2, "devtree")

    # -- guest memory --

    def _string(self, addr: int) -> bytes | None:
        try:
            return self.memory.read_cstring(addr, MAX_STRING)
        except GuestAccessError:
            return None

    def _fits(self, addr: int, length: int) -> bool:
        return addr < self.memory.size and addr + length <= self.memory.size

    # -- PROM_IFACE --

    def prom_iface(self, op: int, ph: int, a2: int, a3: int, a4: int) -> int:
        tree = self.tree
        if op == PROM_CLOSE:
            self.close_tree()
            return 0
        dn = tree.node(ph)
        if dn is None and (op != PROM_PEER or ph):
            return -1
        try:
            if op == PROM_PEER:
                if not ph:
                    return tree.root.phandle if tree.root else 0
                return dn.sibling.phandle if dn.sibling else 0
            if op == PROM_CHILD:
                return dn.child.phandle if dn.child else 0
            if op == PROM_PARENT:
                return dn.parent.phandle if dn.parent else 0
            if op == PROM_PACKAGE_TO_PATH:
                return self._package_to_path(dn, a2, a3)
            if op == PROM_GET_PROP_LEN:
                name = self._string(a2)
                if name is None:
                    return -1
                value = dn.prop(name)
                return -1 if value is None else len(value)
            if op == PROM_GET_PROP:
                return self._get_prop(dn, a2, a3, _signed(a4))
            if op == PROM_NEXT_PROP:
                return self._next_prop(dn, a2, a3)
            if op == PROM_SET_PROP:
                return self._set_prop(dn, a2, a3, _signed(a4))
            if op == PROM_CHANGE_PHANDLE:
                other = tree.node(a2)
                if other is None:
                    dn.phandle = a2
                    tree.changed()
                    self._dirty = True
                elif dn.phandle != a2:
                    log.info("change-phandle: phandle 0x%x is taken", a2)
                    return -1
                return 0
        except TreeError as e:
            log.warning("%s", e)
            return -1
        log.info("PROM_IFACE: bad op %d", op)
        return -1

    def _package_to_path(self, dn: Node, buf: int, size: int) -> int:
        """strncpy: exactly ``size`` bytes written (the path, then NULs); the path's length."""
        path = self.tree.full_name(dn)
        if buf >= self.memory.size or not self._fits(buf, size):
            return -1
        data = path[:size]
        self.memory.write(buf, data + bytes(size - len(data)))
        return len(path)

    def _get_prop(self, dn: Node, name_addr: int, buf: int, size: int) -> int:
        name = self._string(name_addr)
        if name is None or buf >= self.memory.size:
            return -1
        value = dn.prop(name)
        if value is None or size < 0:
            return -1
        n = min(len(value), size)
        if not self._fits(buf, n):
            return -1
        self.memory.write(buf, value[:n])
        return len(value)

    def _next_prop(self, dn: Node, prev_addr: int, buf: int) -> int:
        prev = self._string(prev_addr)
        if prev is None or buf >= self.memory.size:
            return -1
        name = self.tree.next_property(dn, prev)
        if name is None:
            return 0
        if not self._fits(buf, len(name) + 1):
            return -1
        self.memory.write(buf, name + b"\0")
        return 1

    def _set_prop(self, dn: Node, name_addr: int, buf: int, size: int) -> int:
        name = self._string(name_addr)
        if name is None or buf >= self.memory.size or size < 0:
            return -1
        if size > MAX_SET_PROP:
            log.info("set-prop: %d bytes is over MOL's limit of 0x1000", size)
            return -1
        if not self._fits(buf, size):
            return -1
        self.tree.set_property(dn, name, bytes(self.memory.view[buf:buf + size]))
        self._dirty = True
        return size

    # -- PROM_PATH_IFACE --

    def prom_path_iface(self, op: int, path_addr: int) -> int:
        if not path_addr:
            return -1
        path = self._string(path_addr)
        if path is None:
            return -1
        try:
            if op == PROM_CREATE_NODE:
                before = self.tree.next_phandle
                dn = self.tree.create_node(path)
                if self.tree.next_phandle != before:
                    self._dirty = True
            elif op == PROM_FIND_DEVICE:
                dn = self.tree.find_path(path)
            else:
                log.info("PROM_PATH_IFACE: bad op %d", op)
                return -1
        except TreeError as e:
            log.warning("%s", e)
            return -1
        ph = dn.phandle if dn is not None else 0
        return ph if ph else -1

    # -- close --

    def close_tree(self) -> None:
        """MOL's kPromClose without a debugger: the tree is freed, 76 and 77 unregistered."""
        self.tree = None
        self._dirty = True
        self.osi.unregister(OSI_PROM_IFACE)
        self.osi.unregister(OSI_PROM_PATH_IFACE)

    # -- session --

    def save_state(self) -> bytes:
        """The whole tree in its binary saved form (phandles included; its size is bounded
        to fit a session chunk), or nothing once the guest closed it."""
        return b"" if self.tree is None else to_bytes(self.tree)

    @classmethod
    def read_state(cls, data: bytes, version: int) -> "TreeState":
        return TreeState(_parse_tree(data, version), bytes(data), version)

    @classmethod
    def describe(cls, data: bytes, version: int) -> str:
        try:
            tree = _parse_tree(data, version)
        except ValueError as e:
            return f"(damaged: {e})"
        return "closed by the guest" if tree is None else f"{len(tree.allnext)} nodes"

    @classmethod
    def restore(cls, ctx: DeviceContext, record: "TreeState") -> "DevTree":
        """The saved tree itself (the config's tree is not built on a resume)."""
        return cls(ctx, record.tree, record)

    def _set_tree(self, tree: DeviceTree | None) -> None:
        self.tree = tree
        self._dirty = False
        if tree is None:
            self.osi.unregister(OSI_PROM_IFACE)
            self.osi.unregister(OSI_PROM_PATH_IFACE)
        else:
            self._register()

    def reset(self) -> None:
        """Back to the loaded tree; rebuilt only when the guest changed it."""
        if self._dirty and self._saved is not None:
            self._set_tree(_parse_tree(self._saved.data, self._saved.version))


class TreeState(NamedTuple):
    """An OFTR chunk as a record: the saved tree (None: the guest had closed it) and the
    chunk it came from (a reset parses it again only when the guest changed the tree)."""

    tree: DeviceTree | None
    data: bytes
    version: int


def _parse_tree(data: bytes, version: int) -> DeviceTree | None:
    if not data:
        return None
    try:
        return from_state(data, version)
    except TreeError as e:
        raise StateError(str(e)) from None


def create(ctx: DeviceContext) -> DevTree | None:
    config = ctx.config
    if not config.oftree:
        return None
    return DevTree(ctx, build_tree(config, ctx.memory.size))
